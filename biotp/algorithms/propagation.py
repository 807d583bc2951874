"""The machinery every rule that propagates targets through feedback g_l shares (Bengio 2014;
seed 002 §3.1, seed 004 §2.1): `TargetPropagation`, the abstract base of the final rules tp,
dtp, sdtp, ao_sdtp, fwdtp, ldrl and the auto-encoder's dtp.

One batch (seed 002 Algorithm 1, seed 004 Algorithm 1):
  1. forward pass h_l = f_l(h_{l-1});
  2. targets: ĥ_{L-1} from the loss, then ĥ_{l-1} = propagate(ĥ_l) down to ĥ_1;
  3. feedback: each trained g_l minimises an inverse loss on noise-corrupted activity;
  4. forward: f_l (l < L) minimises ||f_l(h_{l-1}) - ĥ_l||², f_L the global loss L.
All losses are layer-local, so their gradients are computed in one backward pass over
graphs cut between layers; the result equals one backward pass per loss.  On a stack of plain
dense populations (`fused_grads`) the hidden layers' losses skip the graph: their gradients are
taken in closed form, batched across layers of equal shape (`algorithms.fused`), and only the
output layer goes through autograd; the targets, the noise and the updates are the same.
"""

import torch

from ..config import ConfigError
from ..layers import DenseFeedback
from ..layers.activations import apply
from ..layers.discrete import same_samples
from .base import Algorithm, Step, layer_loss
from .fused import PARALLEL_ELEMENTS, forward_chunks, fusable, inverse_loss_grads, layer_loss_grads, local_grads


class TargetPropagation(Algorithm):
    """(Abstract) targets from the top down through feedback g_l: h_l = f_l(h_{l-1}), ĥ_{L-1} from the
    loss (`top_target`), ĥ_{l-1} = `propagate`(ĥ_l), layer-local losses ||f_l(h_{l-1}) - ĥ_l||²,
    and each trained g_l an inverse loss on noise-corrupted activity.  A final rule chooses
    with the class attributes below and overrides what its paper defines differently."""

    feedback_kind = "learned"
    uses_feedback_modules = True
    supports_transmission = True
    # ĥ_{l-1} = h_{l-1} + g_l(ĥ_l) - g_l(h_l) (DTP, seed 002 eq. 3.15), else g_l(ĥ_l) (eq. 3.9)
    difference = True
    # ĥ_{L-1}: "gradient", h_{L-1} - η̂ ∂L/∂h_{L-1} (seed 002 eq. 3.7); "label", the label
    # through g_L, which is then trained too (SDTP, seed 004 Algorithm 1)
    top = "gradient"
    denoise = False  # inverse loss target: h + ε (noise-preserving) or h (de-noising)
    fuse = True  # take `fused_grads` where the network allows it (False: always the graph)

    # ------------------------------------------------------------------ the interface
    def grads(self, x, y, *, forward=True, feedback=True):
        if self.fusable():
            return self.fused_grads(x, y, forward=forward, feedback=feedback)
        hs, trained = self.activities(x, y)
        out = hs[-1]
        loss = self.loss(out, y)
        total = None
        if forward:
            targets = self.targets(hs, y)
            total = loss + sum(layer_loss(trained[l], t) for l, t in targets.items())
        fb_loss = None
        if feedback and self.trains_feedback:
            fb_loss = self.inverse_loss(hs)
            total = fb_loss if total is None else total + fb_loss
        if total is not None:
            total.backward()
        return Step(loss.detach(), out.detach(), None if fb_loss is None else fb_loss.detach())

    def fusable(self) -> bool:
        """Every hidden population a plain dense layer (`fused.fusable`), and the rule's activities
        and inverse loss TP's own (a rule that changes them takes the graph)."""
        cls = type(self)
        return (self.fuse and cls.activities is TargetPropagation.activities
                and cls.inverse_loss is TargetPropagation.inverse_loss
                and all(fusable(m) for m in self.net.layers[:-1]))

    def fused_grads(self, x, y, *, forward=True, feedback=True):
        """`grads` on a stack of dense populations: the same targets, noise and updates, with the
        dense layers' local losses in closed form (`algorithms.fused`), those of equal-shaped
        layers batched; only f_L (and a g_l that is not dense) goes through autograd."""
        net = self.net
        with torch.no_grad():
            hs = [x.reshape(x.shape[0], *net.shapes[0])]
            for layer in net.layers[:-1]:
                hs.append(layer(hs[-1]))
        out = net.layers[-1](hs[-1])
        hs.append(out)
        loss = self.loss(out, y)
        total, fb_loss = (loss if forward else None), None
        if feedback and self.trains_feedback:  # first: the forward gradients are not yet held meanwhile
            fb_loss, graph = self.fused_inverse_losses(hs)
            fb_loss = fb_loss + graph.detach()
            total = graph if total is None else total + graph
        if forward:
            self.fused_forward_losses(hs, y)
        if total is not None and total.requires_grad:
            total.backward()
        return Step(loss.detach(), out.detach(), None if fb_loss is None else fb_loss.detach())

    def fused_inverse_losses(self, hs):
        """The inverse losses of the trained g_l: (the closed-form part's value, the rest as a
        graph).  The dense g_l below the top come first, batched, so their noise is drawn in
        the order `inverse_loss` draws it; then g_L where it is trained (SDTP)."""
        net, L = self.net, self.net.depth
        ls = list(self.inverse_layers(L))
        n_fast = next((i for i, l in enumerate(ls) if l == L or not fusable(self.g(l), DenseFeedback)), len(ls))
        with torch.no_grad():
            value = inverse_loss_grads({l: net.layers[l - 1] for l in ls[:n_fast]},
                                       {l: self.g(l) for l in ls[:n_fast]},
                                       {l: hs[l - 1] for l in ls[:n_fast]}, self.noise, self.denoise)
        graph = hs[-1].new_zeros(())
        for l in ls[n_fast:]:
            eps = torch.randn_like(hs[l - 1])
            if fusable(self.g(l), DenseFeedback):
                with torch.no_grad():
                    value = value + self.fused_inverse_term(l, hs[l - 1], eps)
            else:
                graph = graph + self.inverse_term(l, hs[l - 1], eps)
        return value, graph

    def fused_forward_losses(self, hs, y) -> None:
        """The forward losses of f_1..f_{L-1} into `.grad`, each chunk as soon as its targets are
        known, so the targets are never all held.  A lone layer (but L-1, whose activity f_L's
        graph keeps) waits for the target below it: its target and activity are then free, and
        are overwritten instead of copied."""
        net, L = self.net, self.net.depth

        def reduce(ls, scratch):
            with torch.no_grad():
                layer_loss_grads([net.layers[k - 1] for k in ls], [hs[k - 1] for k in ls], [hs[k] for k in ls],
                                 [pending.pop(k) for k in ls], scratch=scratch)

        plan, pending, due = forward_chunks({l: net.layers[l - 1] for l in range(1, L)}, hs), {}, []
        for l, t in self.descend(hs, y):
            if due:
                reduce(due, True)
                due = []
            pending[l] = t
            if l == plan[0][-1]:
                ls = plan.pop(0)
                if len(ls) == 1 and ls[0] != L - 1:
                    due = ls
                else:
                    reduce(ls, False)
        if due:
            reduce(due, True)

    def activities(self, x, y):
        """(the activities targets are computed from, those the layer losses train): one
        forward pass, graphs cut between layers."""
        hs = self.net(x, local=True)
        return hs, hs

    def targets(self, hs: list[torch.Tensor], y: torch.Tensor) -> dict[int, torch.Tensor]:
        """{l: ĥ_l} for l = 1..L-1, from the top down."""
        return dict(self.descend(hs, y))

    @torch.no_grad()
    def descend(self, hs: list[torch.Tensor], y: torch.Tensor):
        """(l, ĥ_l) for l = L-1 down to 1, each computed when asked for."""
        L = len(hs) - 1
        t = self.top_target(hs, y)
        yield L - 1, t
        for l in range(L - 1, 1, -1):
            t = self.propagate(l, hs, t)
            yield l - 1, t

    # --------------------------------------------------------------- the rule's parts
    def g(self, l: int):
        return self.net.feedback[str(l)]

    def top_target(self, hs, y):
        """ĥ_{L-1}: a gradient step or the label through g_L (see `top`)."""
        return self.gradient_step(hs, y) if self.top == "gradient" else self.label_through_inverse(hs, y)

    def gradient_step(self, hs, y):
        """ĥ_{L-1} = h_{L-1} - η̂ ∂L(h_L, y)/∂h_{L-1}, with L the per-example loss, at the
        forward pass's own samples where f_L reads a stochastic transmission (seed 002 eqs. 3.7, 3.30)."""
        h = hs[-2].detach().requires_grad_()
        with torch.enable_grad(), same_samples(self.net):
            (grad,) = torch.autograd.grad(self.loss(self.net.layers[-1](h), y, reduction="sum"), h, allow_unused=True)
        if grad is None:  # a sampled transmission cuts the graph: no gradient reaches h_{L-1}
            last = self.circuit.network.expanded()[-1]
            raise ConfigError(
                f"{self.circuit.source or '<circuit>'}: network.layers (expanded) {len(self.circuit.network.expanded()) - 1}: "
                f"transmit {getattr(last, 'transmit', '?')} without straight_through passes no gradient to the layer "
                f"below, which {self.name}'s top target h - eta_hat dL/dh needs; expected straight_through: true "
                f"(seed 002 eq. 3.29)")
        return hs[-2] - self.spec.eta_hat * grad

    def label_through_inverse(self, hs, y):
        """ĥ_{L-1} = h_{L-1} - g_L(c) + g_L(ĉ), c = `top_code` of the output, ĉ the same with the
        loss's optimum for the label in place of the output (seed 004 Algorithm 1, eq. 3): no
        gradient anywhere."""
        g, h_prev, k = self.g(self.net.depth), hs[-2], self.loss.n_classes
        code = self.top_code(h_prev, hs[-1])
        best = self.loss.optimum(y, code.dtype)
        if fusable(g, DenseFeedback):  # ĉ differs from c in its first k entries: V ĉ = V c + V_{:k} (ô - o)
            a = torch.addmm(g.bias, code, g.weight.T)
            a_best = torch.addmm(a, best - code[:, :k], g.weight[:, :k].T)
            return apply(g.act_name, a_best).sub_(apply(g.act_name, a)).add_(h_prev)
        best = torch.cat([best, code[:, k:]], 1)
        return h_prev - g(code) + g(best)

    def top_code(self, h_prev, out):
        """What g_L reads from the output population: the class probabilities."""
        return self.loss.readout(out)

    def propagate(self, l, hs, t_l):
        """ĥ_{l-1} from ĥ_l through g_l (see `difference`)."""
        if not self.difference:
            return self.g(l)(t_l)
        g = self.g(l)
        if t_l.numel() < PARALLEL_ELEMENTS:  # small: one call on both, so its elementwise work is split over threads
            g_t, g_h = g(torch.cat([t_l, hs[l]])).chunk(2)
            return g_t.add_(hs[l - 1]).sub_(g_h)
        return g(t_l).add_(hs[l - 1]).sub_(g(hs[l]))  # = h_{l-1} + g_l(ĥ_l) - g_l(h_l), no concatenated copy

    @property
    def trains_feedback(self) -> bool:
        """Only with an inverse to learn: a net with one hidden population has none (DTP)."""
        return super().trains_feedback and len(self.inverse_layers(self.net.depth)) > 0

    def inverse_layers(self, L: int) -> range:
        """The l whose g_l is trained: all that carry targets, 2..L-1, and g_L when the top
        target goes through it."""
        return range(2, L + 1) if self.top == "label" else range(2, L)

    def encode(self, l: int, h_prev: torch.Tensor) -> torch.Tensor:
        """What g_l sees when population l-1 holds `h_prev`: f_l(h_prev) (g_L: its `top_code`)."""
        out = self.net.layers[l - 1](h_prev)
        return self.top_code(h_prev, out) if self.top == "label" and l == self.net.depth else out

    def inverse_loss(self, hs):
        """Σ_l ||g_l(f_l(h_{l-1} + ε)) - r||², ε ~ N(0, σ²), r = h_{l-1} + ε (seed 002
        Algorithm 1) or r = h_{l-1} with `denoise` (seed 004 Algorithm 1)."""
        return sum(self.inverse_term(l, hs[l - 1], torch.randn_like(hs[l - 1]))
                   for l in self.inverse_layers(len(hs) - 1))

    def fused_inverse_term(self, l: int, h: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """`inverse_term` of a dense g_l in closed form: its gradient into `.grad`, its value
        returned (`eps` is overwritten)."""
        noisy = eps.mul_(self.noise).add_(h)
        code = self.encode(l, noisy)
        rec = self.g(l)(code)
        r = noisy.copy_(h) if self.denoise else noisy  # (the buffer is free once the code is made)
        return local_grads([self.g(l)], code.flatten(1)[None], rec.flatten(1)[None], r.flatten(1)[None], scratch=True)

    def inverse_term(self, l: int, h: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """g_l's inverse loss at h = h_{l-1} with standard normal noise eps."""
        h = h.detach()
        noisy = h + self.noise * eps
        with torch.no_grad():
            code = self.encode(l, noisy)
        return layer_loss(self.g(l)(code), h if self.denoise else noisy)
