"""The interface every discrete learning rule implements, and the global losses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..config import Registry
from ..layers.discrete import is_stochastic, sample_average

if TYPE_CHECKING:  # a circuit holds the rules' specs: biotp.circuit imports this package
    from ..circuit import Circuit
    from ..network import Network

# learning-rule specs by `name` (= module name); each is defined beside its rule and registers here
ALGORITHM_SPECS = Registry("learning rule", "name")


class Loss:
    """The global loss L on the output population h_L, averaged over the batch.

    `readout(h_L)` is what the output population reports to feedback pathways (class
    probabilities for cross-entropy), and `optimum(y)` = argmin L, the ĥ_L of SDTP
    (seed 004 Algorithm 1).
    """

    def __init__(self, kind: str, n_classes: int):
        self.kind, self.n_classes = kind, n_classes

    def __call__(self, out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if self.kind == "cross_entropy":
            return F.cross_entropy(out, y, reduction=reduction)
        per_example = ((out - self.optimum(y, out.dtype)) ** 2).sum(1)  # seed 002 eq. 3.7 remark
        return per_example.mean() if reduction == "mean" else per_example.sum()

    def readout(self, out: torch.Tensor) -> torch.Tensor:
        return out.softmax(1) if self.kind == "cross_entropy" else out

    def from_readout(self, p: torch.Tensor) -> torch.Tensor:
        """An output whose readout is p: log-probabilities for cross-entropy (so the loss of an
        averaged distribution is its negative log-likelihood), p itself otherwise."""
        return p.clamp_min(torch.finfo(p.dtype).tiny).log() if self.kind == "cross_entropy" else p

    def optimum(self, y: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        if y.is_floating_point():  # already a target vector: an auto-encoder's clean input
            return y.to(dtype)
        return F.one_hot(y, self.n_classes).to(dtype)


@dataclass
class Step:
    """What one call of `Algorithm.grads` reports (tensors, not synchronised to the host)."""

    loss: torch.Tensor
    output: torch.Tensor
    feedback_loss: torch.Tensor | None = None


def layer_loss(h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||h - t||², summed over units (all non-batch axes) and averaged over the batch (seed 002 Algorithm 1)."""
    return F.mse_loss(h, target, reduction="sum") / h.shape[0]


class Algorithm(nn.Module):
    """One learning rule.  Subclasses set `name` (= module name) and `feedback_kind`, and
    implement `grads`, which fills `.grad` of the parameters they train for one batch.

    Fixed quantities a rule adds (random feedback matrices, auxiliary features) are buffers
    of the rule, so checkpoints carry them.
    """

    name: ClassVar[str]
    feedback_kind: ClassVar[str] = "none"  # none | random | learned | analytical
    uses_feedback_modules: ClassVar[bool] = False  # does it need Network.feedback (g_l)?
    # does it compute only through the layers' own forward passes (so a discrete or stochastic
    # `transmit` is respected), rather than with their weights directly?
    supports_transmission: ClassVar[bool] = False
    # is it defined for fully connected layers only (its equations use W_l as a matrix)?
    dense_only: ClassVar[bool] = False

    def __init__(self, circuit: Circuit, net: Network, loss: Loss):
        super().__init__()
        self.circuit, self.spec, self.net, self.loss = circuit, circuit.algorithm, net, loss
        self.noise = circuit.feedback.noise

    def fixed_random(self, name: str, shape: tuple[int, ...], fan_in: int, generator: torch.Generator) -> None:
        """Register a fixed random feedback matrix N(0, scale²/fan_in) as buffer `name`."""
        scale = self.circuit.feedback.random_scale
        self.register_buffer(name, torch.randn(shape, generator=generator) * scale / fan_in**0.5)

    @property
    def trains_feedback(self) -> bool:
        return self.feedback_kind == "learned"

    def feedback_map(self, l: int):
        """Layer l's feedback as a map h_l -> h_{l-1}: a module g_l or an analytical G*_l (what the
        Jacobian matching losses of seed 003 measure); None where the rule has no such pathway."""
        return self.net.feedback[str(l)] if str(l) in self.net.feedback else None

    def grads(self, x: torch.Tensor, y: torch.Tensor, *, forward: bool = True, feedback: bool = True) -> Step:
        raise NotImplementedError

    def forward_params(self) -> list[nn.Parameter]:
        return self.net.forward_params()

    def feedback_params(self) -> list[nn.Parameter]:
        return self.net.feedback_params() if self.trains_feedback else []

    def set_epoch(self, epoch: int) -> None:
        """Epoch-dependent settings: the noise decay σ0 / (1 + e / e0) of seed 002 §3.3."""
        fb = self.circuit.feedback
        self.noise = fb.noise / (1 + epoch / fb.noise_decay) if fb.noise_decay else fb.noise

    # ------------------------------------------------ helpers shared by the target rules
    @torch.no_grad()
    def output_target(self, hs: list[torch.Tensor], y: torch.Tensor, beta: float) -> torch.Tensor:
        """t_L = h_L - β ∂L(h_L, y)/∂h_L, L the per-example loss (seed 003 eq. 7, Algorithm 2
        line 9; seed 001 eq. target-prop)."""
        h = hs[-1].detach().requires_grad_()
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.loss(h, y, reduction="sum"), h)
        return hs[-1].detach() - beta * grad

    @staticmethod
    def target_losses(hs: list[torch.Tensor], targets: dict[int, torch.Tensor], beta: float) -> torch.Tensor:
        """Σ_l ||t_l - h_l||² / (2β), the forward losses of seed 003 eq. 5, batch mean."""
        return sum(layer_loss(hs[l], t) for l, t in targets.items()) / (2 * beta)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The output for x.  A stochastic network gives the output whose readout is the mean
        readout (class probabilities) of `network.test_samples` passes (seed 002 §3.3.3)."""
        samples = self.circuit.network.test_samples
        if samples == 1 or not is_stochastic(self.net):
            return self.net(x)[-1]
        return self.loss.from_readout(sample_average(self.net, x, samples, self.loss.readout))
