"""The equations of the continuous-time model, described once, compiled by both engines.

Each population l (layer1..layerL; `input` holds h_0 = x) carries a forward activity h_l
and a target t_l.  Its elementwise ODEs are `Equation`s: strings over its own variables,
its inputs and the time constants, evaluated by the torch engine with torch functions
and handed verbatim (with unit annotations) to brian2.  What couples populations
(weight products, decoders g_l) is computed by `inputs`, one torch function shared by
both engines, from explicit arguments.

  forward      τ_f dh_l/dt = -h_l + f_l(a_l),  a_l = W_l h_{l-1} + b_l
  gradient     τ_t dt_l/dt = -∂C_{l+1}/∂t_l = W_{l+1}ᵀ[(t_{l+1} - f_{l+1}(t_l)) ⊙ f'_{l+1}]
               (seed 000 eq. 3 with C_{l+1} = ½‖t_{l+1} - f_{l+1}(t_l)‖², eq. 4; Euler with
               dt = τ τ_t is App. B eq. 32)
  difference   τ_t dt_l/dt = -t_l + h_l + g_{l+1}(t_{l+1}) - g_{l+1}(h_{l+1})
               (fixed point: the DTP target, seed 002 eq. 3.15)
  inverse_output  τ_t dt_l/dt = g_{l+1}(t_{l+1}) - g_{l+1}(f_{l+1}(t_l))
               (unit Euler step = seed 001 eq. iterative-tau-out-update)
  inverse_input   τ_t du_l/dt = t_{l+1} - f_{l+1}(g_{l+1}(u_l)),  u_l(0) = h_{l+1},
               t_l = h_l + g_{l+1}(u_l) - g_{l+1}(h_{l+1})
               (unit Euler step = seed 001 eq. u-recurrence; the difference correction
               makes t_l start at h_l)

Every target starts at t_l = h_l when the target phase begins; the top target is then
set as a step (`top_target`).  `on` gates a population's relaxation (layer-by-layer
schedule), `fwd` the forward settling (brian2 keeps both in one group).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from ..errors import ConfigError
from ..layers.activations import activation, derivative

# activation of a drive `x`, as expression text valid in torch (below) and brian2
ACT_EXPR = {"tanh": "tanh({x})", "sigmoid": "1 / (1 + exp(-{x}))", "relu": "clip({x}, 0, inf)", "linear": "{x}"}
TORCH_NS = {"tanh": torch.tanh, "exp": torch.exp, "clip": torch.clamp, "inf": math.inf}

RHS = {
    "gradient": ("t", "back"),
    "difference": ("t", "-t + h + gt - gh"),
    "inverse_output": ("t", "gt - gft"),
    "inverse_input": ("u", "tup - fgu"),
}
# inputs each rule needs from `inputs` (computed nonlocally) -- the rest are local
INPUTS = {
    "gradient": ("back",),
    "difference": ("gt", "gh"),
    "inverse_output": ("gt", "gft"),
    "inverse_input": ("tup", "fgu", "gu", "gh"),
}
T_OF_U = "h + gu - gh"  # inverse_input: the target read out from the decoder input
# online plasticity of one synapse (seed 001 §9); the torch engine applies it as the
# batch-mean outer product in `plasticity_rates`
PLASTICITY = "eta * (-gamma * w + tdot_post * n_pre)"


@dataclass(frozen=True)
class Equation:
    """d var/dt = `gate` * (rhs) / `tau`: one elementwise ODE of a population."""

    var: str
    rhs: str
    tau: str
    gate: str

    @property
    def text(self) -> str:
        return f"{self.gate} * ({self.rhs}) / {self.tau}"

    def evaluate(self, namespace: dict) -> torch.Tensor:
        return eval(_compiled(self.text), TORCH_NS, namespace)  # noqa: S307 (our own strings)


_CODE: dict[str, object] = {}


def _compiled(text: str):
    if text not in _CODE:
        _CODE[text] = compile(text, f"<equation {text}>", "eval")
    return _CODE[text]


def evaluate(text: str, namespace: dict) -> torch.Tensor:
    return eval(_compiled(text), TORCH_NS, namespace)  # noqa: S307


@dataclass
class Model:
    """A network's populations and equations under one `DynamicsSpec`.

    Layers are numbered 1..L; `top` is the layer whose target is set as a step (L, or L-1
    with `target.mode: gradient_step`); `relaxing` are the layers below it, whose targets
    follow the relaxation ODE.
    """

    spec: object
    acts: list[str]  # acts[l] for l = 1..L (acts[0] unused)
    g_acts: list[str]  # g_acts[l]: activation of g_l (l = 2..L)
    sizes: list[int]
    forward: list[Equation] = field(init=False)
    target: dict[int, Equation] = field(init=False)

    def __post_init__(self):
        self.L = len(self.sizes) - 1
        for a in self.acts[1:]:
            if a not in ACT_EXPR:
                raise ConfigError(f"dynamics: activation {a!r} has no continuous-time form; expected one of {sorted(ACT_EXPR)}")
        self.top = self.L - 1 if self.spec.target.mode == "gradient_step" else self.L
        self.relaxing = list(range(self.top - 1, 0, -1))  # top-down order
        self.var, rhs = RHS[self.spec.relaxation]
        self.forward = [None] + [
            Equation("h", "-h + " + ACT_EXPR[self.acts[l]].format(x="a"), "tau_f", "fwd") for l in range(1, self.L + 1)
        ]
        self.target = {l: Equation(self.var, rhs, "tau_t", "on") for l in self.relaxing}

    @property
    def plastic(self) -> bool:
        return self.spec.plasticity.rule != "none"

    def layer_blocks(self) -> list[list[int]]:
        """Groups of layers relaxing together: all at once, or one at a time from the top."""
        if self.spec.schedule == "parallel":
            return [self.relaxing] if self.relaxing else []
        return [[l] for l in self.relaxing]


# ------------------------------------------------------------------ nonlocal inputs


@dataclass
class Weights:
    """Forward W_l [n_l, n_{l-1}], b_l and feedback V_l [n_{l-1}, n_l], c_l, index l (0 unused)."""

    W: list
    b: list
    V: list
    c: list

    @classmethod
    def of(cls, net, dtype=None, device=None) -> "Weights":
        conv = lambda p: None if p is None else p.detach().to(dtype=dtype, device=device).clone()  # noqa: E731
        L = net.depth
        fb = lambda l, a: conv(getattr(net.feedback[str(l)], a)) if str(l) in net.feedback else None  # noqa: E731
        return cls(
            [None] + [conv(m.weight) for m in net.layers],
            [None] + [conv(m.bias) for m in net.layers],
            [None, None] + [fb(l, "weight") for l in range(2, L + 1)],
            [None, None] + [fb(l, "bias") for l in range(2, L + 1)],
        )

    def f(self, model: Model, l: int, x: torch.Tensor) -> torch.Tensor:
        return activation(model.acts[l])(F.linear(x, self.W[l], self.b[l]))

    def g(self, model: Model, l: int, x: torch.Tensor) -> torch.Tensor:
        if self.V[l] is None:
            raise ConfigError(f"dynamics: relaxation {model.spec.relaxation!r} needs a feedback pathway g_{l}")
        return activation(model.g_acts[l])(F.linear(x, self.V[l], self.c[l]))


def drive(w: Weights, l: int, h_prev: torch.Tensor) -> torch.Tensor:
    """a_l = W_l h_{l-1} + b_l: the input of the forward equation."""
    return F.linear(h_prev, w.W[l], w.b[l])


def targets_now(model: Model, state: dict, t0: list, h: list, gh: dict, w: Weights) -> list:
    """t_0..t_L at this instant: the relaxing states in `state`, else the onset values `t0`
    (the top target's step, t = h above the top); for inverse_input the targets are read
    out of u through the decoder."""
    t = [state["t"].get(l, v) for l, v in enumerate(t0)]
    if model.var == "u":
        for l in model.relaxing:
            t[l] = evaluate(T_OF_U, {"h": h[l], "gu": w.g(model, l + 1, state["u"][l]), "gh": gh[l]})
    return t


def inputs(model: Model, l: int, t: list, u: list, h: list, gh: dict, w: Weights) -> dict:
    """The nonlocal inputs of layer l's target equation (names as in `INPUTS`)."""
    rule = model.spec.relaxation
    if rule == "gradient":
        up = w.f(model, l + 1, t[l])
        return {"back": F.linear((t[l + 1] - up) * derivative(model.acts[l + 1], up), w.W[l + 1].T)}
    if rule == "difference":
        return {"gt": w.g(model, l + 1, t[l + 1]), "gh": gh[l]}
    if rule == "inverse_output":
        return {"gt": w.g(model, l + 1, t[l + 1]), "gft": w.g(model, l + 1, w.f(model, l + 1, t[l]))}
    gu = w.g(model, l + 1, u[l])
    return {"tup": t[l + 1], "fgu": w.f(model, l + 1, gu), "gu": gu, "gh": gh[l]}


def target_rates(model: Model, state: dict, t0: list, h: list, gh: dict, w: Weights, on: dict, tau_t: float):
    """(d var_l/dt for the relaxing layers, dt_l/dt for the same layers, the targets t)."""
    t = targets_now(model, state, t0, h, gh, w)
    rates, tdot = {}, {}
    for l in model.relaxing:
        ns = {"h": h[l], "t": t[l], "tau_t": tau_t, "on": on[l], **inputs(model, l, t, state.get("u", {}), h, gh, w)}
        if model.var == "u":
            ns["u"] = state["u"][l]
        rates[l] = model.target[l].evaluate(ns)
        if model.var == "u":  # dt_l/dt = g'(u) (V du/dt), the chain rule through the decoder
            tdot[l] = derivative(model.g_acts[l + 1], ns["gu"]) * F.linear(rates[l], w.V[l + 1])
        else:
            tdot[l] = rates[l]
    return rates, tdot, t


def plasticity_rates(model: Model, tdot: dict, n: list, W: list) -> dict:
    """dW_l/dt = η(-γ W_l + mean_b (dt_l/dt) n_{l-1}ᵀ) (seed 001 §9, DTP1 normalisation)."""
    p = model.spec.plasticity
    return {l: p.eta * (-p.gamma * W[l] + tdot[l].T @ n[l - 1] / n[l - 1].shape[0]) for l in tdot}


# ------------------------------------------------------------ onset, end of phase


def normalised_input(h: torch.Tensor) -> torch.Tensor:
    """n = σ(h)/‖σ(h)‖² per example (seed 001 eq. delta-dtp-regular); σ(h_{l-1}) is what
    population l-1 transmits, here its activity h_{l-1} itself."""
    return h / (h * h).sum(1, keepdim=True).clamp_min(1e-30)


def top_target(model: Model, h: list, y: torch.Tensor, w: Weights, loss) -> torch.Tensor:
    """The step target of population `top` (see `TargetSpec`): nudged h_L - β∂L/∂h_L
    (seed 001 eq. target-prop), clamped argmin L, or the gradient step on h_{L-1} (seed 002
    eq. 3.7) -- L the per-example loss."""
    mode, beta = model.spec.target.mode, model.spec.target.beta
    if mode == "clamped":
        return loss.optimum(y, h[-1].dtype)
    x = h[model.top].detach().clone().requires_grad_()
    with torch.enable_grad():
        out = x if mode == "nudged" else F.linear(x, w.W[model.L], w.b[model.L])
        (grad,) = torch.autograd.grad(loss(out, y, reduction="sum"), x)
    return h[model.top] - beta * grad


def onset(model: Model, h: list, y: torch.Tensor, w: Weights, loss) -> dict:
    """The target phase's initial values: t_l = h_l with the top target's step, the
    constant decoder outputs gh_l = g_{l+1}(h_{l+1}) and the normalised inputs n_l."""
    t = [v.clone() for v in h]
    t[model.top] = top_target(model, h, y, w, loss)
    needs_g = model.spec.relaxation in ("difference", "inverse_input")
    gh = {l: w.g(model, l + 1, h[l + 1]) if needs_g else None for l in model.relaxing}
    return {"t": t, "gh": gh, "n": [normalised_input(v) for v in h]}


def top_step_update(model: Model, t_top: torch.Tensor, h: list, n: list) -> torch.Tensor:
    """The weight change the step of t_top causes: η (t_top - h_top) n_{top-1}ᵀ, the
    integral of the online rule over a step (batch mean)."""
    return model.spec.plasticity.eta * (t_top - h[model.top]).T @ n[model.top - 1] / n[0].shape[0]


def influence_correction(model: Model, t: list, h: list, n: list) -> dict:
    """With `influence`, each example's phase change (t_l - h_l) n_{l-1}ᵀ is rescaled by
    ρ_l = ‖t_L - h_L‖²/‖t_l - h_l‖² (seed 001 §8, ΔW_DTP); returned: the extra η(ρ_l - 1)
    (t_l - h_l) n_{l-1}ᵀ (batch mean) to add when the phase ends."""
    top = model.top
    s = ((t[top] - h[top]) ** 2).sum(1, keepdim=True)
    out = {}
    for l in model.relaxing:
        e = t[l] - h[l]
        rho = s / (e * e).sum(1, keepdim=True).clamp_min(1e-30)
        out[l] = model.spec.plasticity.eta * ((rho - 1) * e).T @ n[l - 1] / n[0].shape[0]
    return out


def update_feedback(model: Model, h: list, w: Weights, generator: torch.Generator | None = None) -> None:
    """Feedback plasticity after the forward phase (see `FeedbackPlasticitySpec`), in place."""
    spec = model.spec.feedback_plasticity
    if spec.rule == "fixed":
        return
    for l in range(2, model.L + 1):
        if w.V[l] is None:
            continue
        if spec.rule == "decoder":  # Ω_l += β (h_{l-1} - g_l(h_l)) σ(h_l)ᵀ/‖σ(h_l)‖ (seed 001 §10)
            s = h[l] / (h[l] * h[l]).sum(1, keepdim=True).sqrt().clamp_min(1e-30)
            w.V[l] += spec.beta * (h[l - 1] - w.g(model, l, h[l])).T @ s / s.shape[0]
            continue
        noise = torch.randn(h[l - 1].shape, generator=generator, dtype=h[l - 1].dtype).to(h[l - 1].device)
        noisy = h[l - 1] + spec.noise * noise
        V, c = w.V[l].clone().requires_grad_(), None if w.c[l] is None else w.c[l].clone().requires_grad_()
        with torch.enable_grad():
            rec = activation(model.g_acts[l])(F.linear(w.f(model, l, noisy), V, c))
            lossv = ((rec - noisy) ** 2).sum(1).mean()  # seed 002 Algorithm 1, noise-preserving
            grads = torch.autograd.grad(lossv, [V] if c is None else [V, c])
        w.V[l] -= spec.beta * grads[0]
        if c is not None:
            w.c[l] -= spec.beta * grads[1]


def build_model(spec, net) -> Model:
    """The model of `net` (a `biotp.network.Network`) under `spec` (a DynamicsSpec)."""
    acts = [None] + [m.act_name for m in net.layers]
    g_acts = [None, None] + [net.feedback[str(l)].act_name if str(l) in net.feedback else None for l in range(2, net.depth + 1)]
    sizes = [net.layers[0].weight.shape[1]] + [m.weight.shape[0] for m in net.layers]
    return Model(spec, acts, g_acts, sizes)


# --------------------------------------------------- the discrete rule it settles to


def settled_forward(model: Model, w: Weights, x: torch.Tensor) -> list:
    """h_0..h_L at the forward phase's fixed point: the discrete pass h_l = f_l(h_{l-1})."""
    h = [x]
    for l in range(1, model.L + 1):
        h.append(w.f(model, l, h[-1]))
    return h


def discrete_update(model: Model, w: Weights, x: torch.Tensor, y: torch.Tensor, loss) -> dict:
    """The weight change ΔW_l a presentation makes once its targets have settled: the
    fixed point of the `difference` relaxation is the DTP recursion t_l = h_l +
    g_{l+1}(t_{l+1}) - g_{l+1}(h_{l+1}) (seed 002 eq. 3.15) from the top target's step, and
    the integrated online rule is the DTP1 update η (t_l - h_l) n_{l-1}ᵀ (seed 001 eq.
    delta-dtp-regular), rescaled by ‖t_L-h_L‖²/‖t_l-h_l‖² with `influence` (seed 001 §8).
    Feedback plasticity is not included (the protocol applies it to both)."""
    if model.spec.relaxation != "difference":
        raise ConfigError(f"the discrete rule of relaxation {model.spec.relaxation!r} is not defined here; "
                          "expected relaxation: difference (DTP targets)")
    h = settled_forward(model, w, x)
    o = onset(model, h, y, w, loss)
    t, n, eta = o["t"], o["n"], model.spec.plasticity.eta
    for l in model.relaxing:  # top-down
        t[l] = h[l] + w.g(model, l + 1, t[l + 1]) - o["gh"][l]
    dW = {model.top: top_step_update(model, t[model.top], h, n)}
    for l in model.relaxing:
        dW[l] = eta * (t[l] - h[l]).T @ n[l - 1] / n[0].shape[0]
    if model.spec.plasticity.influence:
        for l, extra in influence_correction(model, t, h, n).items():
            dW[l] = dW[l] + extra
    return dW
