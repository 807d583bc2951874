"""A `Circuit` is the validated, frozen description of a network, its learning rule and its
training run, parsed from YAML.  It holds no tensors and runs nothing: engines and the fast
path compile it.

Every block forbids unknown keys, so a typo is an error, never a silently ignored setting.
Errors name the file, the key path, the offending value and what was expected.
"""

from __future__ import annotations

import copy
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from pydantic import Discriminator, Tag, ValidationError, field_validator, model_validator

from .errors import ConfigError

ACTIVATIONS = ("tanh", "sigmoid", "relu", "linear", "sign", "step", "leaky_relu")
TRANSMISSIONS = ("identity", "sign", "step", "bernoulli")


class Spec(BaseModel):
    """Base of every block: frozen, unknown keys are errors, numbers are finite, and a
    boolean is not a number (`size: true` is an error, not a layer of 1 unit)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, data):
        if isinstance(data, dict):
            bad = {k: _Boolean(v) for k, v in data.items() if isinstance(v, bool) and k in cls.model_fields
                   and not _takes_bool(cls.model_fields[k].annotation)}
            if bad:
                data = {**data, **bad}
        return data

    @model_validator(mode="after")
    def _float32_range(self):
        for key, value in self:  # a network computes in float32: beyond its range every number is inf
            if isinstance(value, float) and abs(value) > FLOAT32_MAX:
                raise ValueError(f"{key}: {value!r} is beyond the float32 range ±{FLOAT32_MAX:.3g}; expected a "
                                 f"finite float32 number")
        return self


FLOAT32_MAX = 3.4028234663852886e38
MAX_REPEAT = 1000  # layers stacked by one spec, and iterations per batch: beyond, a typo


class _Boolean:
    """A YAML true/false where no boolean is expected: passed on as itself, so validation
    fails naming the key and the value, instead of reading it as 1 or 0."""

    def __init__(self, value: bool):
        self.value = value

    def __repr__(self) -> str:
        return "true" if self.value else "false"


def _takes_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    return any(_takes_bool(a) for a in get_args(annotation) if not isinstance(a, (str, int, float)))


# --------------------------------------------------------------------------- layers


class DenseLayer(Spec):
    """f(h) = activation(W transmit(h) + b): a fully connected population.

    `transmit` is what crosses the connection from the population below (seed 002
    §3.3.2-3.3.3): `sign` ±1, `step` 0/1, or a `bernoulli` sample that is 1 with probability h.
    Backprop differentiates it exactly (zero) unless `straight_through`, which passes the
    gradient as if it were the identity (seed 002 eq. 3.29)."""

    type: Literal["dense"] = "dense"
    size: PositiveInt
    activation: Literal[ACTIVATIONS] = "tanh"  # type: ignore[valid-type]
    bias: bool = True
    transmit: Literal[TRANSMISSIONS] = "identity"  # type: ignore[valid-type]
    straight_through: bool = False
    repeat: PositiveInt = Field(1, le=MAX_REPEAT, description="stack this many identical layers")

    @model_validator(mode="after")
    def _straight_through_needs_transmit(self):
        if self.straight_through and self.transmit == "identity":
            raise ValueError("straight_through applies to a discrete transmit (sign, step or bernoulli); "
                             "transmit is identity")
        return self


def _layer_type(value: Any) -> str | None:
    """Layers are tagged by `type`, which defaults to dense."""
    if isinstance(value, dict):
        return value.get("type", "dense")
    return getattr(value, "type", None)


class _Layer(Spec):
    repeat: PositiveInt = Field(1, le=MAX_REPEAT, description="stack this many identical layers")


Padding = Union[Literal["same"], Annotated[int, Field(ge=0)]]


class ConvLayer(_Layer):
    """f(h) = [maxpool_p] activation(W * h + b): a convolution, optionally followed by max-pooling
    with window = stride = `pool` (the conv+pool block of seed 003 eq. 42, one population).
    `padding: same` is kernel // 2 (shape kept at stride 1)."""

    type: Literal["conv"] = "conv"
    channels: PositiveInt
    kernel: PositiveInt = 3
    stride: PositiveInt = 1
    padding: Padding = "same"
    activation: Literal[ACTIVATIONS] = "tanh"  # type: ignore[valid-type]
    bias: bool = True
    pool: PositiveInt | None = None


class LocalLayer(_Layer):
    """A locally connected layer: a convolution with untied weights (seed 004 §5.2, §5.4, Table 3)."""

    type: Literal["local"] = "local"
    channels: PositiveInt
    kernel: PositiveInt = 3
    stride: PositiveInt = 1
    padding: Padding = "same"
    activation: Literal[ACTIVATIONS] = "tanh"  # type: ignore[valid-type]
    bias: bool = True


class MaxPoolLayer(_Layer):
    """Max-pooling over `kernel` x `kernel` windows, step `stride` (default: kernel); seed 003 eq. 21."""

    type: Literal["maxpool"] = "maxpool"
    kernel: PositiveInt = 2
    stride: PositiveInt | None = None


class LayerNormLayer(_Layer):
    """Normalisation over the last axis (seed 003 eqs. 30-33), optionally with a learned gain and shift."""

    type: Literal["layernorm"] = "layernorm"
    affine: bool = False
    eps: PositiveFloat = 1e-5


class GAPLayer(_Layer):
    """Global average pooling (seed 003 eq. 36): [C, H, W] -> [C], or tokens [S, C] -> [C]."""

    type: Literal["gap"] = "gap"


class FlattenLayer(_Layer):
    """Reshape to a vector (a dense layer after a spatial one flattens by itself)."""

    type: Literal["flatten"] = "flatten"


class PatchEmbedLayer(_Layer):
    """MLP-Mixer stem: non-overlapping `patch` x `patch` patches linearly embedded into `channels`,
    giving tokens [S, C] (a convolution with kernel = stride = patch)."""

    type: Literal["patch_embed"] = "patch_embed"
    patch: PositiveInt
    channels: PositiveInt
    activation: Literal[ACTIVATIONS] = "linear"  # type: ignore[valid-type]
    bias: bool = True


class MixerLayer(_Layer):
    """An MLP-Mixer block on tokens [S, C] (seed 003 eqs. 44-47): token mixing
    x + Act(FC(Norm(x))ᵀ)ᵀ (with `token_hidden`: FC∘Act∘FC), then channel mixing
    x + FC(Act(FC(Norm(x)))).  `split`: each of the two skip blocks is its own population
    carrying a target (seed 003 "fundamental units"); otherwise the block is one population."""

    type: Literal["mixer"] = "mixer"
    token_hidden: PositiveInt | None = None
    channel_hidden: PositiveInt
    activation: Literal[ACTIVATIONS] = "leaky_relu"  # type: ignore[valid-type]
    affine: bool = True
    split: bool = True


LAYER_TYPES = ("dense", "conv", "local", "maxpool", "layernorm", "gap", "flatten", "patch_embed", "mixer")

LayerSpec = Annotated[
    Union[
        Annotated[DenseLayer, Tag("dense")],
        Annotated[ConvLayer, Tag("conv")],
        Annotated[LocalLayer, Tag("local")],
        Annotated[MaxPoolLayer, Tag("maxpool")],
        Annotated[LayerNormLayer, Tag("layernorm")],
        Annotated[GAPLayer, Tag("gap")],
        Annotated[FlattenLayer, Tag("flatten")],
        Annotated[PatchEmbedLayer, Tag("patch_embed")],
        Annotated[MixerLayer, Tag("mixer")],
    ],
    Discriminator(_layer_type),
]


class NetworkSpec(Spec):
    input: PositiveInt | list[PositiveInt] | None = Field(
        None, description="input size, or shape such as [1, 28, 28]; taken from the dataset if omitted")
    layers: list[LayerSpec] = Field(min_length=1)
    test_samples: PositiveInt = Field(
        1, description="evaluate a stochastic network on the mean output distribution of this many "
                       "passes (seed 002 §3.3.3: M = 100); deterministic networks run once")

    def expanded(self) -> list[DenseLayer]:
        """The layer list with every `repeat` unrolled (repeat=1 on each)."""
        out = []
        for layer in self.layers:
            out += [layer.model_copy(update={"repeat": 1})] * layer.repeat
        return out


# ----------------------------------------------------------------------- optimisers


class SGD(Spec):
    name: Literal["sgd"]
    lr: PositiveFloat
    momentum: NonNegativeFloat = 0.0
    dampening: NonNegativeFloat = 0.0
    nesterov: bool = False
    weight_decay: NonNegativeFloat = 0.0


class RMSprop(Spec):
    name: Literal["rmsprop"]
    lr: PositiveFloat
    alpha: float = Field(0.99, gt=0, lt=1)
    eps: PositiveFloat = 1e-8
    momentum: NonNegativeFloat = 0.0
    centered: bool = False
    weight_decay: NonNegativeFloat = 0.0


class Adam(Spec):
    name: Literal["adam"]
    lr: PositiveFloat
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = 0.0
    amsgrad: bool = False


OptimizerSpec = Annotated[Union[SGD, RMSprop, Adam], Field(discriminator="name")]

INITS = ("orthogonal", "glorot", "farias", "normal")


class InitSpec(Spec):
    """Weight initialisation; biases start at zero.

    `farias` is seed 000 eqs. 9-10: N(0, 48/(35 N)) for the first layer, N(0, 16/(11 N))
    for the others, N the fan-in.  `normal` uses `std`.  `orthogonal` (seed 002 §3.3) and
    `glorot` scale by `gain`.
    """

    scheme: Literal[INITS] = "orthogonal"  # type: ignore[valid-type]
    gain: PositiveFloat = 1.0
    std: PositiveFloat = 0.01


# ------------------------------------------------------------------------- feedback

FEEDBACK_KINDS = ("learned", "random", "analytical")


class FeedbackSpec(Spec):
    """The feedback pathway g_l: h_l -> h_{l-1} (or the B_l matrices of FA/DFA).

    `kind` defaults to what the algorithm prescribes.  `activation` defaults to the
    activation of the population g_l projects to.  `noise` is σ of the corruption used by
    the inverse losses; `noise_decay` e0 gives σ(e) = σ0 / (1 + e / e0) (seed 002 §3.3).
    """

    kind: Literal[FEEDBACK_KINDS] | None = None  # type: ignore[valid-type]
    activation: Literal[ACTIVATIONS] | None = None  # type: ignore[valid-type]
    noise: NonNegativeFloat = 0.1
    noise_decay: PositiveFloat | None = None
    init: InitSpec = InitSpec()
    optimizer: OptimizerSpec = Adam(name="adam", lr=1e-4)
    random_scale: PositiveFloat = Field(1.0, description="gain of fixed random feedback")


# ----------------------------------------------------------------------- algorithms


class BP(Spec):
    name: Literal["bp"]


class FA(Spec):
    name: Literal["fa"]


class DFA(Spec):
    name: Literal["dfa"]


class TP(Spec):
    """Vanilla target propagation; the penultimate target is a gradient step (seed 002 eq. 3.7)."""

    name: Literal["tp"]
    eta_hat: PositiveFloat = 0.1


class DTP(Spec):
    name: Literal["dtp"]
    eta_hat: PositiveFloat = Field(0.1, description="step of the penultimate target, seed 002 eq. 3.7")


class SDTP(Spec):
    name: Literal["sdtp"]


class AOSDTP(Spec):
    name: Literal["ao_sdtp"]
    aux_units: PositiveInt = 512
    aux_activation: Literal[ACTIVATIONS] = "tanh"  # type: ignore[valid-type]


class FWDTP(Spec):
    name: Literal["fwdtp"]
    eta_hat: PositiveFloat = 0.1


class TJML(Spec):
    """DTP through the analytical feedback G* of seed 003 Algorithm 2 (no feedback training).

    `beta` is β of the output target t_L = h_L - β ∂L/∂h_L.  `condition`: transpose (TJMC,
    the paper's method), pseudo_inverse (PJMC) or inverse (IJMC, square invertible layers).
    `activation_feedback`: varsigma (eqs. 26-27) or hadamard (σ'(x) ⊙ t, eq. 29).
    `layernorm_feedback`: frozen_s (eqs. 30-35) or exact (the transpose including ∂s/∂x)."""

    name: Literal["tjml"]
    beta: PositiveFloat = Field(0.01, description="output target step β (seed 003 Algorithm 2, line 9)")
    condition: Literal["transpose", "pseudo_inverse", "inverse"] = "transpose"
    activation_feedback: Literal["varsigma", "hadamard"] = "varsigma"
    layernorm_feedback: Literal["frozen_s", "exact"] = "frozen_s"


class GTP(Spec):
    """Gradient target propagation (Farias & Maziero, seed 000).

    Targets: T Euler steps of size τ of eq. 3, dy_l/dt = -∂C_{l+1}/∂y_l with
    C_{l+1} = ½||ŷ_{l+1} - f_{l+1}(y_l)||² (eq. 4, App. B eq. 32), layer by layer from the
    top (Algorithm 1), ŷ_L = one-hot label (§4).  Weights: eq. 5, Δw_l = -η ∂C_l/∂w_l.
    `start: zero` makes ŷ_l the change accumulated by the Euler steps (y(T) - y(0)), the
    paper's target (eqs. 13-14, App. D eq. 39: ŷ_l = -τ ∂C_{l+1}/∂y_l for one step, which
    yields the Hebbian term -η y_l ∂y_l/∂w_l); `start: activity` makes ŷ_l = y(T), the
    Euler solution started at y_l(0) = h_l (the continuous-time `gradient` relaxation).
    """

    name: Literal["gtp"]
    tau: PositiveFloat = Field(50.0, description="Euler step τ (seed 000 App. B, Tables 1-3)")
    steps: PositiveInt = Field(1, le=MAX_REPEAT, description="Euler iterations T (seed 000 App. B)")
    start: Literal["zero", "activity"] = "zero"


class DTPGN(Spec):
    """Differential target propagation with Gauss-Newton-normalised updates (Bengio 2020,
    seed 001).  In the paper's parametrisation f_l(h_{l-1}) = W_l σ(h_{l-1}) the
    populations are pre-activations: τ_L = a_L - β ∂L/∂a_L; targets refined by iterating
    approximate inverses (`refine: output`, eq. iterative-tau-out-update:
    τ_{l-1} <- τ_{l-1} + g_l(τ_l) - g_l(f_l(τ_{l-1})); `refine: input`, eq. u-recurrence:
    u <- u + τ_l - f_l(g_l(u)), τ_{l-1} = g_l(u)), `iterations` = K per layer
    (`layerwise`) or K sweeps over all layers at once (`parallel`, seed 001 §7);
    ΔW_l = s_l (τ_l - a_l) σ(h_{l-1})ᵀ / ||σ(h_{l-1})||² (DTP1, eq. delta-dtp-regular),
    s_l = ||τ_L - a_L||² / ||τ_l - a_l||² with `layer_scaling` (DTP, §8), else s_l = 1.
    `start: activity` begins the output iteration at a_{l-1}, so its first step is DTP's
    difference correction; `start: decoder` at g_l(τ_l) (the algorithm box).
    """

    name: Literal["dtp_gn"]
    beta: PositiveFloat = Field(0.1, description="output target step β (seed 001 eq. target-prop)")
    refine: Literal["output", "input"] = "output"
    iterations: PositiveInt = Field(5, le=MAX_REPEAT, description="K: refinement iterations (sweeps when parallel)")
    schedule: Literal["parallel", "layerwise"] = "parallel"
    start: Literal["activity", "decoder"] = "activity"
    layer_scaling: bool = True


class LDRL(Spec):
    """DTP targets with feedback trained by the local difference reconstruction loss
    L^IP + L^RR (Ernoult et al. 2022; seed 003 Algorithm 1, eqs. 7-11), `feedback_iterations`
    feedback updates per batch; forward losses (1/2β)||t_l - h_l||² (seed 003 eq. 5)."""

    name: Literal["ldrl"]
    beta: PositiveFloat = Field(0.1, description="output target step β (seed 003 eq. 7)")
    feedback_iterations: PositiveInt = Field(1, le=MAX_REPEAT,
                                             description="feedback updates per batch (Algorithm 1, inner loop)")


AlgorithmSpec = Annotated[
    Union[BP, FA, DFA, TP, DTP, SDTP, AOSDTP, FWDTP, TJML, GTP, DTPGN, LDRL],
    Field(discriminator="name"),
]

# --------------------------------------------------------------------- data, schedule

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "imagenet32", "synthetic")


class SyntheticSpec(Spec):
    n_inputs: PositiveInt = 20
    n_classes: PositiveInt = 4
    n_train: PositiveInt = 1000
    n_test: PositiveInt = 200
    hidden: PositiveInt = 32

    @model_validator(mode="after")
    def _allocatable(self):
        values = (self.n_train + self.n_test + self.hidden + self.n_classes) * self.n_inputs
        if values > MAX_SYNTHETIC:
            raise ValueError(f"(n_train + n_test + hidden + n_classes) x n_inputs = {values:,} numbers to draw; "
                             f"expected at most {MAX_SYNTHETIC:,}")
        return self


MAX_SYNTHETIC = 10**9  # numbers a synthetic task draws (4 GB in float32)


IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "imagenet32")


class AugmentSpec(Spec):
    """Training-batch augmentation of images (seed 004 §3.2: random crops and flips), drawn
    from the epoch's seeded generator; validation and test images are never augmented.
    `crop_padding` p: zero-pad by p pixels on each side, then crop the original size at a
    uniform offset in {0..2p}²; `flip`: mirror half of the images, left-right (`horizontal`)
    or upside-down (`vertical`).  See biotp/augment.py."""

    crop_padding: NonNegativeInt = 0
    flip: Literal["none", "horizontal", "vertical"] = "none"


class DataSpec(Spec):
    dataset: Literal[DATASETS] = "digits"  # type: ignore[valid-type]
    batch_size: PositiveInt = 32
    val_split: NonNegativeInt | Annotated[float, Field(ge=0, lt=1)] = Field(
        0.1, description="held-out validation examples: a fraction of the training set, or a count")
    limit: PositiveInt | None = Field(None, description="use only this many train/test examples")
    synthetic: SyntheticSpec = SyntheticSpec()
    augment: AugmentSpec | None = None

    @field_validator("augment")
    @classmethod
    def _augment_images_only(cls, value, info):
        dataset = info.data.get("dataset")
        if value is not None and dataset is not None and dataset not in IMAGE_DATASETS:
            raise ValueError(f"crops and flips need an image dataset ({', '.join(IMAGE_DATASETS)}); "
                             f"data.dataset is {dataset!r}")
        return value


class AutoencoderSpec(Spec):
    """The output population reconstructs the clean input x, L = ||z - x||² (`loss: mse`);
    reconstruction MSE replaces classification error in the metrics (biotp/autoencoder.py).

    While training: `corruption` σ feeds x̃ = x + ε to the network (a denoising auto-encoder,
    seed 002 eq. 3.22), `hidden_noise` σ adds ε to the input of the output population,
    z = g(h + ε) (eq. 3.21).  `tied`: each decoder layer's weight is the transpose of its
    mirror encoder layer's, z = sig(Wᵀh + c) (eq. 3.21).  `top_target: encoder` gives DTP the
    target ĥ_{L-1} = h_{L-1} + f_1(x) - f_1(z) (eq. 3.23: the encoder is the decoder's
    approximate inverse); `rule` keeps the rule's own (DTP: the gradient step of eq. 3.7)."""

    corruption: NonNegativeFloat = 0.0
    hidden_noise: NonNegativeFloat = 0.0
    tied: bool = False
    top_target: Literal["rule", "encoder"] = "rule"


class ScheduleSpec(Spec):
    """`parallel`: forward and feedback weights change on every batch.
    `alternating`: each epoch is one pass training the feedback weights, then one pass
    training the forward weights (seed 004 §2.1, as in Lee et al.'s code)."""

    epochs: PositiveInt = 5
    feedback_training: Literal["parallel", "alternating"] = "parallel"
    feedback_warmup_epochs: Annotated[int, Field(ge=0)] = 0


from .dynamics.spec import DynamicsSpec  # noqa: E402  (after Spec: no import cycle)


class Circuit(Spec):
    """The whole description: network, feedback, learning rule, optimisers, data, schedule."""

    name: str = Field("circuit", description="names the run files, runs/<name>-<algorithm>.h5")
    description: str = ""
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    network: NetworkSpec
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    algorithm: AlgorithmSpec = BP(name="bp")
    optimizer: OptimizerSpec = Adam(name="adam", lr=1e-3)
    init: InitSpec = InitSpec()
    feedback: FeedbackSpec = FeedbackSpec()
    data: DataSpec = DataSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    dynamics: DynamicsSpec | None = None
    autoencoder: AutoencoderSpec | None = Field(None, description="the network reconstructs its input")
    source: str | None = Field(None, exclude=True, description="file this circuit was read from")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value):
        return plain_name(value)

    @field_validator("autoencoder")
    @classmethod
    def _autoencoder_loss(cls, value, info):
        loss = info.data.get("loss")
        if value is not None and loss not in (None, "mse"):
            raise ValueError(f"an auto-encoder is trained on the squared reconstruction error; set loss: mse "
                             f"(loss is {loss!r})")
        return value

    def to_yaml(self) -> str:
        """The resolved configuration, every default filled in, as YAML text."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def with_updates(self, *assignments: str) -> "Circuit":
        """A copy with `key.path=value` assignments applied (values parsed as YAML)."""
        data = self.model_dump(mode="json", exclude_unset=True)  # keep defaults free to follow a changed `name`
        for item in assignments:
            apply_assignment(data, item, self.source or "<circuit>")
        return parse_circuit(data, self.source or "<circuit>")

    def with_algorithm(self, name: str) -> "Circuit":
        """A copy running algorithm `name`; hyperparameters it shares with the current one
        are kept, the others take their defaults."""
        data = self.model_dump(mode="json", exclude_unset=True)
        model = _algorithm_model(name, self.source)
        kept = {k: v for k, v in data.get("algorithm", {}).items() if k in model.model_fields and k != "name"}
        data["algorithm"] = {"name": name, **kept}
        return parse_circuit(data, self.source or "<circuit>")


def plain_name(value: str) -> str:
    """A circuit's or protocol's name, which names its run files: a plain file name, never a path."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*", value) or ".." in value:
        raise ValueError("expected a plain name (letters, digits, '_', '-', '+', '=', '.'; no '/', space or '..'): "
                         "it names the run files, runs/<name>-...h5")
    return value


def _algorithm_model(name: str, source: str | None) -> type[Spec]:
    models = {m.model_fields["name"].annotation.__args__[0]: m for m in AlgorithmSpec.__origin__.__args__}
    if name not in models:
        raise ConfigError(
            f"{source or '<command line>'}: algorithm: unknown name {name!r}; expected one of "
            + ", ".join(sorted(models))
        )
    return models[name]


def algorithm_names() -> list[str]:
    return [m.model_fields["name"].annotation.__args__[0] for m in AlgorithmSpec.__origin__.__args__]


# ----------------------------------------------------------------- parsing, errors


def format_errors(err: ValidationError, source: str, root: type[BaseModel] | None = None, tags=()) -> str:
    """One line per error: file, key path, message, value.  `root` is the top model (for
    the keys an unknown key could have been); `tags` are union tags pydantic puts in paths."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not (_is_union_tag(p) or p in tags))
        msg = e["msg"].removeprefix("Value error, ")  # a validator's own message says what was expected
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(tuple(p for p in e["loc"][:-1] if p not in tags), root or Circuit)
            msg = "unknown key" + (f"; expected one of: {', '.join(allowed)}" if allowed else "")
        value = e.get("input")
        if isinstance(value, _Boolean):  # (see Spec._no_boolean_numbers)
            if e["type"].startswith(("int", "float", "greater", "less")):
                msg = "expected a number, not a boolean"
            value = value.value
        shown = "" if isinstance(value, dict) or e["type"] == "missing" else f"; got {_REPR.repr(value)}"
        lines.append(_bounded(f"{source}: {loc or '<top>'}: {msg}{shown}", 300))
    kept = [line for i, line in enumerate(lines) if sum(map(len, lines[: i + 1])) <= MAX_MESSAGE] or lines[:1]
    if len(kept) < len(lines):  # (an alias bomb can fail a billion times)
        kept.append(f"{source}: ... and {len(lines) - len(kept)} more errors")
    return "\n".join(kept)


MAX_MESSAGE = 1200  # characters of error lines shown
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 6, 6, 120, 120


def _bounded(text: str, limit: int) -> str:
    """`text` cut to `limit` characters (error messages stay readable whatever the input)."""
    return text if len(text) <= limit else text[: limit - 5] + " ..."


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The Spec classes an annotation can hold (through Optional, Union, Annotated, list)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _allowed_keys(loc: tuple, root: type[BaseModel]) -> list[str]:
    """The keys the block at `loc` accepts, for the unknown-key message."""
    candidates: list[type[BaseModel]] = [root]
    for part in loc:
        if isinstance(part, int):
            continue
        tagged = [m for m in candidates if _tag_of(m) == part]
        if tagged:
            candidates = tagged
            continue
        fields = [m.model_fields[part] for m in candidates if part in m.model_fields]
        if not fields:
            return []
        candidates = _models_in(fields[0].annotation)
    if len(candidates) != 1:
        return []
    return [k for k in candidates[0].model_fields if k != "source"]


def _tag_of(model: type[BaseModel]) -> str | None:
    for key in ("name", "type", "kind"):
        field = model.model_fields.get(key)
        if field is not None and getattr(field.annotation, "__args__", None):
            return field.annotation.__args__[0]
    return None


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the union member tried (e.g. 'adam', 'dense', 'constrained-int') in the path
    if not isinstance(part, str):
        return False
    return part.startswith(("constrained-", "function-")) or part in {"int", "float", "str", "bool", "none"} \
        or part in {"sgd", "rmsprop", "adam", *LAYER_TYPES} | set(algorithm_names())


def parse_circuit(data: Any, source: str = "<circuit>") -> Circuit:
    """Validate a mapping (e.g. parsed YAML) into a `Circuit`; errors name `source`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of circuit keys at the top level, got {type(data).__name__}")
    try:
        return Circuit.model_validate({**data, "source": source})
    except ValidationError as err:
        raise ConfigError(format_errors(err, source)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML says keys are
    unique; PyYAML would silently keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class says so
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {first}); a key may appear once "
                                f"in a block", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, what: str) -> Any:
    """The parsed content of a YAML file ({} if empty); errors name the file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read {what} file ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: byte {raw[err.start]:#04x} is not UTF-8 text; expected a {what} "
                          f"file saved as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_bounded(str(err), 600)}") from None
    return copy.deepcopy(data) if data is not None else {}


def load_circuit(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> Circuit:
    """Read a circuit YAML file and apply `key.path=value` overrides."""
    path = Path(path)
    data = read_yaml(path, "circuit")
    if isinstance(data, dict):
        data.pop("source", None)
        for item in overrides:
            apply_assignment(data, item, str(path))
    return parse_circuit(data, str(path))


def apply_assignment(data: dict, item: str, source: str) -> None:
    """Apply one `a.b.0.c=value` assignment to nested dicts/lists in place."""
    if "=" not in item:
        raise ConfigError(f"{source}: --set {item!r}: expected key.path=value")
    path, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    keys = path.strip().split(".")
    node: Any = data
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        where = ".".join(keys[: i + 1])
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(f"{source}: --set {path}: {where}: expected an index below {len(node)}, got {key!r}")
            key = int(key)
        elif not isinstance(node, dict):
            raise ConfigError(f"{source}: --set {path}: {where}: cannot index into {node!r}")
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and key not in node:
                node[key] = {}
            node = node[key]
