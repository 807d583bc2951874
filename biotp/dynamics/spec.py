"""The `dynamics:` block of a circuit: time constants (with units), phases, the target
relaxation, plasticity, solver and recordings of the continuous-time model.

Example (circuits/mlp.yaml)::

    dynamics:
      form: rate               # rate: τ_f dh/dt = -h + f(W h_prev + b) | potential: -h + W f(h_prev) + b
      tau_f: 2 ms              # forward settling time constant
      tau_t: 2 ms              # target relaxation time constant
      dt: 0.1 ms
      forward_phase: 20 ms     # per example: forward phase, then target phase
      target_phase: 20 ms
      relaxation: difference   # gradient | difference | inverse_output | inverse_input
      schedule: parallel       # parallel | layerwise
      target: {mode: nudged, beta: 0.1}     # nudged | clamped | gradient_step
      plasticity: {rule: dtp1, eta: 0.1, gamma: 0 Hz, influence: false}
      feedback_plasticity: {rule: fixed}    # decoder | inverse_loss | fixed
      solver: euler            # euler | exponential_euler (exact leak) | rk4 | adaptive (Bogacki-Shampine 3(2), a step per example)
      stop: steady             # steady (‖dy/dt‖ < atol + rtol‖y‖) | fixed
      record: {layer1: [h, t], layer3: [h, t]}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictFloat, StrictInt, StrictStr, field_validator, model_validator

from ..config import Bool, NonNegativeFloat, PositiveFloat, Spec
from ..config.units import Duration, Frequency, PositiveTime
from .equations import RELAXATIONS

# record names: any variable of a population (checked when the model is built); `t` is the
# target `tgt`, `r` the norm ‖dy/dt‖ of the population's moving variable
ALIASES = {"t": "tgt"}
VARIABLES = ("h", "t", "u", "r")  # the built-in ones
MAX_STEPS = 1e7  # per phase: beyond, a typo (a phase in seconds meant in ms), not an experiment


class TargetSpec(Spec):
    """The top target, set as a step at the onset of the target phase.

    `nudged`: t_L = h_L - β ∂L/∂h_L (seed 001 eq. target-prop).  `clamped`: t_L = argmin L
    (the one-hot label).  `gradient_step`: the penultimate target t_{L-1} = h_{L-1} -
    β ∂L/∂h_{L-1} (seed 002 eq. 3.7 with η̂ = β, DTP's top target); t_L stays at h_L.
    """

    mode: Literal["nudged", "clamped", "gradient_step"] = "nudged"
    beta: PositiveFloat = 0.1


class PlasticitySpec(Spec):
    """Online plasticity of the forward weights and biases during the target phase, a
    three-factor rule dW_l/dt = η(err_l ⊗ h_{l-1} - γ W_l), db_l/dt = η err_l
    (`biotp.dynamics.equations`):

    `dtp`   err = (dt_l/dt) ⊙ f'_l: the gradient of ½‖t_l - h_l‖² (Lee's DTP update, seed 002);
    `dtp1`  err = (dt_l/dt) ⊙ (1/f'_l) / (‖h_{l-1}‖² + 1): seed 001's Gauss-Newton DTP1 change
            (eq. delta-dtp), which moves h_l onto t_l to first order.
    `influence` (dtp1) rescales each example's phase change by ‖t_L-h_L‖²/‖t_l-h_l‖² when
    the phase ends (seed 001 §8, the DTP layer factor; torch engine)."""

    rule: Literal["dtp", "dtp1", "none"] = "none"
    eta: NonNegativeFloat = 0.1
    gamma: Frequency = Field(0.0, description="weight decay rate γ, e.g. '0 Hz'")
    influence: Bool = False


class FeedbackPlasticitySpec(Spec):
    """Feedback weights V_l (and biases c_l) of g_l, updated once per example after the
    forward phase.

    `decoder`: V_l += β e n_lᵀ, c_l += β e/(‖h_l‖² + 1), e = h_{l-1} - g_l(h_l), n_l =
    h_l/(‖h_l‖² + 1) (seed 001 §10 algorithm box, with the squared norm of its derivation
    and the bias input of `dtp_gn`'s identical rule; the decoder bias learns).
    `inverse_loss` (torch engine): one gradient step of size β on ‖g_l(f_l(h_{l-1}+ε)) - (h_{l-1}+ε)‖²,
    ε ~ N(0, noise²) (seed 002 Algorithm 1).  `fixed`: no change.
    """

    rule: Literal["decoder", "inverse_loss", "fixed"] = "fixed"
    beta: PositiveFloat = 0.01
    noise: NonNegativeFloat = 0.1


class PopulationSpec(Spec):
    """A user's additions to one population's equations, in brian2's syntax with units:
    new variables, and the hooks `I_h` (a drive added inside the activation: h relaxes to
    f(a + b + I_h)) and `I_t` (a drive added to the target's relaxation).  `parameters` are
    constants of those equations, a number (dimensionless) or a quantity such as '50 ms'."""

    equations: str = ""
    parameters: dict[str, StrictFloat | StrictInt | StrictStr] = Field(default_factory=dict)


class DynamicsSpec(Spec):
    """The continuous-time model of a circuit (DESIGN.md "The continuous-time model")."""

    tau_f: PositiveTime = Field(2e-3, description="forward time constant τ_f")
    tau_t: PositiveTime = Field(2e-3, description="target time constant τ_t")
    dt: PositiveTime = Field(1e-4, description="integration step")
    forward_phase: Duration = Field(20e-3, description="duration of the forward phase")
    target_phase: Duration = Field(20e-3, description="duration of the target phase")
    form: Literal["rate", "potential"] = Field(
        "rate", description="what a population's h is: its rate, τ dh/dt = -h + f(W h_prev + b), or its potential "
                            "(pre-activation), τ dh/dt = -h + W f(h_prev) + b, seed 001's populations")
    relaxation: str = Field("difference", description="an entry of biotp.dynamics.equations.RELAXATIONS")
    schedule: Literal["parallel", "layerwise"] = "parallel"
    target: TargetSpec = TargetSpec()
    plasticity: PlasticitySpec = PlasticitySpec()
    feedback_plasticity: FeedbackPlasticitySpec = FeedbackPlasticitySpec()
    solver: Literal["euler", "exponential_euler", "rk4", "adaptive"] = "euler"
    solver_atol: PositiveFloat = Field(1e-6, description="adaptive solver: local error tolerance, absolute")
    solver_rtol: PositiveFloat = Field(1e-4, description="adaptive solver: local error tolerance, relative")
    stop: Literal["steady", "fixed"] = "fixed"
    atol: PositiveFloat = 1e-6
    rtol: PositiveFloat = 1e-5
    dtype: Literal["float32", "float64"] = "float32"
    populations: dict[str, PopulationSpec] = Field(
        default_factory=dict, description="population -> added equations and parameters")
    record: dict[str, list[str]] = Field(
        default_factory=dict, description="population -> variables, e.g. {layer1: [h, t]}"
    )
    record_dt: PositiveTime | None = Field(None, description="sampling interval of traces (default dt)")


    @field_validator("relaxation")
    @classmethod
    def _registered(cls, value):
        if value not in RELAXATIONS:
            raise ValueError(f"expected one of {', '.join(RELAXATIONS)}")
        return value

    @model_validator(mode="after")
    def _grid(self):
        for key in ("forward_phase", "target_phase"):
            if getattr(self, key) / self.dt > MAX_STEPS:
                raise ValueError(f"{key} = {getattr(self, key)!r} s is {getattr(self, key) / self.dt:.3g} steps of dt = "
                                 f"{self.dt!r} s; expected at most {MAX_STEPS:.0e} steps per phase")
        for key in ("forward_phase", "target_phase", "record_dt"):
            value = getattr(self, key)
            if value is not None and abs(value / self.dt - round(value / self.dt)) > 1e-6:
                raise ValueError(f"{key} = {value!r} s must be a whole number of steps dt = {self.dt!r} s")
        every = self.record_every
        for key in ("forward_phase", "target_phase"):
            if self.steps(getattr(self, key)) % every:
                raise ValueError(f"{key} must be a whole number of record_dt = {every} steps")
        return self

    def steps(self, duration: float) -> int:
        return int(round(duration / self.dt))

    @property
    def record_every(self) -> int:
        return 1 if self.record_dt is None else self.steps(self.record_dt)
