"""A `Circuit` is the validated, frozen description of a network, its learning rule and its
training run, parsed from YAML.  It holds no tensors and runs nothing: engines and the fast
path compile it.

Every block forbids unknown keys, so a typo is an error, never a silently ignored setting.
Errors name the file, the key path, the offending value and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from . import data as datasets
from .algorithms import ALGORITHM_SPECS
from .algorithms.bp import BPSpec
from .config import (Bool, ConfigError, Document, Float, Name, NonNegativeFloat, NonNegativeInt, PositiveFloat,
                     PositiveInt, Seed, Spec, apply_assignment, load_yaml, validate)
from .dynamics.spec import DynamicsSpec
from .layers.init import InitSpec
from .layers.registry import LAYER_SPECS, ActivationName, LayerSpec
from .optim import OPTIMIZER_SPECS, AdamSpec

# the blocks a circuit chooses by tag, each defined beside its code and registered there
LayerUnion = LAYER_SPECS.union()
OptimizerUnion = OPTIMIZER_SPECS.union()
AlgorithmUnion = ALGORITHM_SPECS.union()
LAYER_TYPES = tuple(LAYER_SPECS.names())


# --------------------------------------------------------------------------- network


class NetworkSpec(Spec):
    input: PositiveInt | list[PositiveInt] | None = Field(
        None, description="input size, or shape such as [1, 28, 28]; taken from the dataset if omitted")
    layers: list[LayerUnion] = Field(min_length=1)
    test_samples: PositiveInt = Field(
        1, description="evaluate a stochastic network on the mean output distribution of this many "
                       "passes (seed 002 §3.3.3: M = 100); deterministic networks run once")

    def expanded(self) -> list[LayerSpec]:
        """The layer list with every `repeat` unrolled (repeat=1 on each)."""
        out = []
        for layer in self.layers:
            out += [layer.model_copy(update={"repeat": 1})] * layer.repeat
        return out


# ------------------------------------------------------------------------- feedback

FEEDBACK_KINDS = ("learned", "random", "analytical")


class FeedbackSpec(Spec):
    """The feedback pathway g_l: h_l -> h_{l-1} (or the B_l matrices of FA/DFA).

    `kind` defaults to what the algorithm prescribes.  `activation` defaults to the
    activation of the population g_l projects to.  `noise` is σ of the corruption used by
    the inverse losses; `noise_decay` e0 gives σ(e) = σ0 / (1 + e / e0) (seed 002 §3.3).
    """

    kind: Literal[FEEDBACK_KINDS] | None = None  # type: ignore[valid-type]
    activation: ActivationName | None = None
    noise: NonNegativeFloat = 0.1
    noise_decay: PositiveFloat | None = None
    init: InitSpec = InitSpec()
    optimizer: OptimizerUnion = AdamSpec(name="adam", lr=1e-4)
    random_scale: PositiveFloat = Field(1.0, description="gain of fixed random feedback")


# --------------------------------------------------------------------- data, schedule

DATASETS = tuple(datasets.DATASETS)


class SyntheticSpec(Spec):
    n_inputs: PositiveInt = 20
    n_classes: PositiveInt = 4
    n_train: PositiveInt = 1000
    n_test: PositiveInt = 200
    hidden: PositiveInt = 32

    @model_validator(mode="after")
    def _drawable(self):
        values = (self.n_train + self.n_test + self.hidden + self.n_classes) * self.n_inputs
        if values > MAX_SYNTHETIC:
            raise ValueError(f"(n_train + n_test + hidden + n_classes) x n_inputs = {values:,} numbers to draw; "
                             f"expected at most {MAX_SYNTHETIC:,}")
        return self


MAX_SYNTHETIC = 10**9  # numbers a synthetic task draws (4 GB in float32)


IMAGE_DATASETS = tuple(name for name, info in datasets.DATASETS.items() if len(info.input_shape) == 3)


class AugmentSpec(Spec):
    """Training-batch augmentation (seed 004 §3.2: random crops and flips of images; Lee et
    al.'s code for seed 002 §3.3.3: Gaussian input noise), drawn from the epoch's seeded
    generator; validation and test inputs are never augmented.  `crop_padding` p: zero-pad by
    p pixels on each side, then crop the original size at a uniform offset in {0..2p}²;
    `flip`: mirror half of the images, left-right (`horizontal`) or upside-down (`vertical`);
    `noise` σ: add N(0, σ²) to every input value, after crops and flips.  See biotp/augment.py."""

    crop_padding: NonNegativeInt = 0
    flip: Literal["none", "horizontal", "vertical"] = "none"
    noise: NonNegativeFloat = 0.0


class DataSpec(Spec):
    dataset: Literal[DATASETS] = "digits"  # type: ignore[valid-type]
    batch_size: PositiveInt = 32
    val_split: NonNegativeInt | Annotated[Float, Field(ge=0, lt=1)] = Field(
        0.1, description="held-out validation examples: a fraction of the training set, or a count")
    limit: PositiveInt | None = Field(None, description="use only this many train/test examples")
    synthetic: SyntheticSpec = SyntheticSpec()
    augment: AugmentSpec | None = None

    @field_validator("augment")
    @classmethod
    def _augment_images_only(cls, value, info):
        dataset = info.data.get("dataset")
        crops_or_flips = value is not None and (value.crop_padding > 0 or value.flip != "none")
        if crops_or_flips and dataset is not None and dataset not in IMAGE_DATASETS:
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
    tied: Bool = False
    top_target: Literal["rule", "encoder"] = "rule"


class ScheduleSpec(Spec):
    """`parallel`: forward and feedback weights change on every batch.
    `alternating`: each epoch is one pass training the feedback weights, then one pass
    training the forward weights (seed 004 §2.1, as in Lee et al.'s code)."""

    epochs: PositiveInt = 5
    feedback_training: Literal["parallel", "alternating"] = "parallel"
    feedback_warmup_epochs: NonNegativeInt = 0
    eval_every: PositiveInt = Field(
        1, description="evaluate (and record a metrics row) every this many epochs and at the last; the "
                       "checkpoint is still written every epoch (for nets whose evaluation costs more than "
                       "training, e.g. M = 100 samples per example)")
    eval_train: Bool = Field(
        True, description="evaluate the whole training set too (train_loss, train_error); false records them "
                          "as NaN and evaluates validation and test only (a stochastic net's M = 100 samples "
                          "per example over 50 000 training examples cost more than its training epochs)")


class Circuit(Spec):
    """The whole description: network, feedback, learning rule, optimisers, data, schedule."""

    name: Name = "circuit"
    description: str = ""
    seed: Seed = 0
    network: NetworkSpec
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    algorithm: AlgorithmUnion = BPSpec(name="bp")
    optimizer: OptimizerUnion = AdamSpec(name="adam", lr=1e-3)
    init: InitSpec = InitSpec()
    feedback: FeedbackSpec = FeedbackSpec()
    data: DataSpec = DataSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    dynamics: DynamicsSpec | None = None
    autoencoder: AutoencoderSpec | None = Field(None, description="the network reconstructs its input")
    source: str | None = Field(None, exclude=True, description="file this circuit was read from")

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


def _algorithm_model(name: str, source: str | None) -> type[Spec]:
    if name not in ALGORITHM_SPECS:
        raise ConfigError(
            f"{source or '<command line>'}: algorithm: unknown name {name!r}; expected one of "
            + ", ".join(sorted(ALGORITHM_SPECS.names()))
        )
    return ALGORITHM_SPECS[name]


def algorithm_names() -> list[str]:
    return ALGORITHM_SPECS.names()


# ----------------------------------------------------------------- parsing


def parse_circuit(data: Any, source: str = "<circuit>", document: Document | None = None) -> Circuit:
    """Validate a mapping (e.g. parsed YAML) into a `Circuit`; errors name `source` (and the
    line of the key, given the `document` the mapping was read from)."""
    return validate(Circuit, data, source, "circuit", document=document)


def load_circuit(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> Circuit:
    """Read a circuit YAML file and apply `key.path=value` overrides."""
    path = Path(path)
    document = load_yaml(path, "circuit")
    data = document.data
    if isinstance(data, dict):
        data.pop("source", None)
        for item in overrides:
            document.forget(apply_assignment(data, item, str(path)))
    return parse_circuit(data, str(path), document)
