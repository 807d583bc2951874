"""Direct feedback alignment (Nøkland 2016; seed 004 §2): the output error e = ∂L/∂a_L is
sent straight to every hidden layer through a fixed random B_l."""

import torch

from .base import Algorithm, Step, require_dense


class DFA(Algorithm):
    """δ_l = (e B_l) ⊙ f_l'(a_l) for l < L;  the output layer follows the true gradient."""

    name = "dfa"
    feedback_kind = "random"

    def __init__(self, circuit, net, loss):
        super().__init__(circuit, net, loss)
        require_dense(self)
        g = torch.Generator().manual_seed(circuit.seed + 1)
        n_out = net.layers[-1].n_out
        for l, layer in enumerate(net.layers[:-1], start=1):
            self.fixed_random(f"B{l}", (n_out, layer.n_out), n_out, g)

    def grads(self, x, y, *, forward=True, feedback=True):
        hs = self.net(x, local=True)
        out = hs[-1]
        loss = self.loss(out, y)
        if forward:
            top = self.net.layers[-1]
            (e,) = torch.autograd.grad(loss, out, retain_graph=True)
            e = e * top.derivative(out.detach())
            # Σ_l <h_l, e B_l>: its gradient through the local graph of layer l is
            # (e B_l) ⊙ f_l'(a_l) at a_l, i.e. exactly the DFA delta.
            surrogate = loss
            for l, h in enumerate(hs[1:-1], start=1):
                surrogate = surrogate + (h * (e @ getattr(self, f"B{l}"))).sum()
            surrogate.backward()
        return Step(loss.detach(), out.detach())
