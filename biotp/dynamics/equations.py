"""The equation catalogue of the continuous-time model: strings in brian2's syntax, with units.

Every population l (layer1..layerL) carries its activity `h` (dimensionless rate) and its
target `tgt` (`t` is time in brian2's syntax).  Time constants are in seconds; every
derivative is in 1/second, so brian2's unit check rejects, e.g., a missing `/tau_f`.

  forward        dh/dt = fwd (1 - hold_h) (-h + F(a + b + I_h)) / tau_f + I_noise_h
                 a = Σ_j W_lj h_{l-1,j} (a summed coupling), b the bias
  targets        dtgt/dt = tdot,  tdot = on (1 - hold_t) (RHS + I_t) / tau_t + I_noise_t
                 with RHS one of the RELAXATIONS below (built-in), I_h and I_t user hooks
                 (0 unless a circuit's `dynamics.populations` defines them)

The relaxations (seed numbers: DESIGN.md "The continuous-time model"):

  gradient        RHS = back = Σ_k W_{l+1,kj} ec_k,  ec = (t_{l+1} - F(at + b)) F'  in layer l+1,
                  at = W_{l+1} t_l   (seed 000 eq. 3 with C = ½‖t_{l+1} - f_{l+1}(t_l)‖², eq. 4;
                  Euler with dt = τ τ_t is App. B eq. 32)
  difference      RHS = -t + h + G(vt + c) - G(vh + c),  vt = V_{l+1} t_{l+1}, vh = V_{l+1} h_{l+1}
                  (fixed point: the DTP target, seed 002 eq. 3.15)
  inverse_output  RHS = G(vt + c) - G(vft + c),  vft = V_{l+1} F(at + b)
                  (unit Euler step = seed 001 eq. iterative-tau-out-update)
  inverse_input   population l+1 carries the decoder input u:  du/dt = on_u (t_{l+1} - F(agu + b)) / tau_t,
                  agu = W_{l+1} gu,  gu = G(vu + c) in layer l;  the target is read out:
                  t_l = g_{l+1}(u) = G(vu + c)  (seed 001 eq. u-recurrence; t = g(u*))

Plasticity: a three-factor rule, presynaptic rate × a postsynaptic factor `err`:

  dW_l/dt = plastic (η err ⊗ h_{l-1} - η γ W_l),   db_l/dt = plastic η err   (PLASTICITY)
  dtp   err = tdot F'(h)              -- the gradient of ½‖t_l - h_l‖² (seed 002 eq. 3.15's layer
                                         loss; Lee's DTP update)
  dtp1  err = tdot / F'(h) / (nin + 1) -- the Gauss-Newton change of seed 001 eq. delta-dtp for
                                         h_l = F(W h_{l-1} + b): J = F' ⊗ [h_{l-1}; 1], so
                                         Jᵀ(JJᵀ)⁻¹ = diag(1/F') [h_{l-1}; 1]/(‖h_{l-1}‖² + 1);
                                         nin = ‖h_{l-1}‖² (a coupling).  1/F' is the
                                         pseudo-inverse: 0 where F' = 0 (relu)

F' is written through the rate h (SLOPE), so it stays at the forward phase's value while
the weights move in the target phase.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..layers.activations import ACTIVATIONS

# F(x) as brian2 expression text, F'(x) and 1/F'(x) written through y = F(x): views of the
# one activation table (biotp.layers.activations), for the activations that have them
ACTIVATION = {name: a.equation for name, a in ACTIVATIONS.items() if a.equation}
SLOPE = {name: a.slope_equation for name, a in ACTIVATIONS.items() if a.equation}
INVERSE_SLOPE = {name: a.inverse_slope_equation for name, a in ACTIVATIONS.items() if a.equation}
# ∂L/∂h_L per output unit (L per example): cross-entropy (softmax - one-hot) and the squared error
LOSS_GRADIENT = {"cross_entropy": "exp(h) / zsum - label", "mse": "2 * (h - label)"}



def act(name: str, x: str) -> str:
    return ACTIVATION[name].format(x=x)


def slope(name: str, y: str) -> str:
    return SLOPE[name].format(y=y)


@dataclass(frozen=True)
class Coupling:
    """A summed variable: `target` of the receiving population is Σ over the projection's
    synapses of `source` (an expression of the sending population), weighted by w (or
    unweighted with `weighted=False`: a population-wide sum).  `direction` "post" sums the
    presynaptic side into the postsynaptic population (W h), "pre" the reverse (Wᵀ e).
    `stage` orders the sums within a step: a stage reads only sums of earlier stages."""

    target: str
    projection: str
    source: str
    direction: str = "post"
    stage: int = 0
    weighted: bool = True


@dataclass(frozen=True)
class Statement:
    """An event: `var op expr` executed once, at `event` ("feedback": after the forward phase;
    "onset": the target phase's onset), in `scope` (a population or a projection), in
    increasing `order`.  A projection's statement changes w by `expr`_post ⊗ h_pre (the
    batch mean in a batched engine), as does a statement on a bias (`b`, `c`)."""

    event: str
    order: int
    scope: str
    var: str
    op: str  # "=" | "+="
    expr: str
    gate: str | None = None  # the projection whose plasticity switch gates it


@dataclass(frozen=True)
class Relaxation:
    """One entry of the relaxation registry: what layer l's target relaxation adds to layer
    l (`lines`) and to the layer above (`up_lines`), the couplings through the projections
    above (`couplings`: (receiver "self" | "up", Coupling whose projection is "forward" for
    W_{l+1} or "feedback" for V_{l+1})), t_l at the onset (`onset`; the onset statements
    follow from it) and what the layer above sets at the onset (`up_onset`)."""

    lines: tuple
    up_lines: tuple = ()
    couplings: tuple = ()
    onset: str = "h"
    up_onset: tuple = ()  # (var, expr)

    @property
    def relaxes_tgt(self) -> bool:
        """Whether t_l is a state variable (else it is read out of another)."""
        return "dtgt/dt = tdot : 1" in self.lines


def relaxing_target(rhs: str) -> tuple:
    """A target that relaxes: τ_t dtgt/dt = on (1 - hold_t)(rhs + I_t) + the noise term."""
    return ("dtgt/dt = tdot : 1",
            f"tdot = on * (1 - hold_t) * ({rhs} + I_t) / tau_t + sigma_t * sqrt(2 / (tau_t * dt)) * noise_t : 1/second",
            "I_t = 0 : 1", "on : 1 (shared)", "hold_t : 1 (shared)", "clamp_t : 1", "sigma_t : 1 (shared)",
            "noise_t : 1")


def gradient(F_up: str, G: str) -> Relaxation:
    """Seed 000 eq. 3: dt_l/dt = -∂C_{l+1}/∂t_l, C_{l+1} = ½‖t_{l+1} - f_{l+1}(t_l)‖²."""
    f_t = act(F_up, "at + b")
    return Relaxation(relaxing_target("back"), (f"ec = (tgt - {f_t}) * {slope(F_up, f_t)} : 1",),
                      (("up", Coupling("at", "forward", "tgt")),
                       ("self", Coupling("back", "forward", "ec", direction="pre", stage=1))))


def difference(F_up: str, G: str) -> Relaxation:
    """Seed 002 eq. 3.15 as a relaxation: its fixed point is DTP's target."""
    return Relaxation(relaxing_target(f"-tgt + h + {act(G, 'vt + c')} - {act(G, 'vh + c')}") + ("c : 1",), (),
                      (("self", Coupling("vt", "feedback", "tgt")), ("self", Coupling("vh", "feedback", "h"))))


def inverse_output(F_up: str, G: str) -> Relaxation:
    """Seed 001 eq. iterative-tau-out-update, in continuous time."""
    return Relaxation(relaxing_target(f"{act(G, 'vt + c')} - {act(G, 'vft + c')}") + ("c : 1",),
                      (f"ft = {act(F_up, 'at + b')} : 1",),
                      (("up", Coupling("at", "forward", "tgt")), ("self", Coupling("vt", "feedback", "tgt")),
                       ("self", Coupling("vft", "feedback", "ft", stage=1))))


def inverse_input(F_up: str, G: str) -> Relaxation:
    """Seed 001 eq. u-recurrence, in continuous time: the decoder input u of g_{l+1} lives
    in layer l+1 and starts at h_{l+1}; the target is read out, t_l = g_{l+1}(u)."""
    return Relaxation((f"tgt = {act(G, 'vu + c')} : 1", f"tdot = {slope(G, 'tgt')} * vudot : 1/second", "c : 1"),
                      ("du/dt = udot : 1", f"udot = on_u * (tgt - {act(F_up, 'agu + b')}) / tau_t : 1/second",
                       "on_u : 1 (shared)"),
                      (("self", Coupling("vu", "feedback", "u")), ("up", Coupling("agu", "forward", "tgt", stage=1)),
                       ("self", Coupling("vudot", "feedback", "udot", stage=2)),
                       ("self", Coupling("vh", "feedback", "h"))),
                      onset=act(G, "vh + c"), up_onset=(("u", "h"),))


RELAXATIONS = {f.__name__: f for f in (gradient, difference, inverse_output, inverse_input)}
