"""TrainConfig: the training recipe, and the one home of every training parameter's default, bounds and help.

Each field carries its help text and, where it has them, its bounds or choices in the dataclass
``metadata``. The ``train`` command line (``training.__main__``), the app's job form (``geodemo.jobform``) and
``TrainConfig.validate`` are generated from these fields, so a new parameter is one field here. The
defaults are the recipe that 5-fold cross-validation chose on the LUMEN sample (BENCHMARKS.md; the bundled
checkpoint is this recipe on all 100 sample locations). Torch-free and cheap to import: the command line
checks its arguments before torch loads.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

POINT_MODES = ("min_expected_km", "weighted_mean", "argmax")  # = geodemo.model.POINT_MODES (a test checks)
TEMPERATURE_RANGE = (0.05, 20.0)  # = geodemo.model.TEMPERATURE_RANGE (a test checks)


def param(
    default=None,
    help: str = "",
    *,
    low=None,
    high=None,
    choices=None,
    flag: str | None = None,
    cli: bool = True,
    factory=None,
):
    """A TrainConfig field with its help, bounds (inclusive; None = open) and choices in the metadata.

    ``flag`` overrides the generated option name (``--max-epochs`` from ``max_epochs``; booleans get
    ``--name`` when off by default and ``--no-name`` when on); ``cli=False`` keeps a field off the
    generated command line (the CLI sets it another way, e.g. ``--task``).
    """
    meta = {"help": help, "low": low, "high": high, "choices": choices, "flag": flag, "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything that defines one training run (not where it runs: devices live in ``fit.train``)."""

    # --- what to learn
    tasks: list = param(
        help="heads (subset of geodemo.model.TASKS) or ['classify']; the CLI's --task",
        cli=False,
        factory=lambda: ["geocell"],
    )
    task_weights: dict = param(help="head name -> loss weight (default 1.0 each)", cli=False, factory=dict)
    # --- model (copied into ModelConfig)
    backbone: str = param("tf_efficientnet_lite0", "backbone registry name (geodemo.backbones)")
    weights: str = param(
        "offline",
        "backbone init: offline | hub | none | a .safetensors/.pt path; the CLI's --pretrained / --weights",
        cli=False,
    )
    image_size: int = param(
        0, "input side in pixels; 0 = the backbone's native size, else at least 32", low=0, high=1024
    )
    fusion: str = param("mean", "how the views' features combine", choices=("concat", "mean", "attention"))
    hidden_dim: int = param(0, "hidden layer width in each head; 0 = linear heads", low=0, high=8192)
    dropout: float = param(0.2, "dropout probability before the heads", low=0.0, high=0.99)
    cbam: bool = param(False, "classify: CBAM attention on the backbone feature map")
    point_mode: str = param(
        "min_expected_km",
        "geocell -> point: min_expected_km = the land point with the "
        "least expected distance to the truth; weighted_mean = probability-weighted mean "
        "of centroids; argmax = the most probable cell",
        choices=POINT_MODES,
    )
    weighted_centroids: bool = param(
        True,
        "use clipped geometric cell centres instead of weighted ones (the mean of the training points)",
        flag="--plain-centroids",
    )
    tta_flip: bool = param(False, "inference: also predict the mirrored panorama and average")
    temperature: float = param(
        0.57,
        "geocell read-out temperature T: probabilities p ** (1 / T), "
        "renormalised; T < 1 sharpens (chosen by cross-validation)",
        low=TEMPERATURE_RANGE[0],
        high=TEMPERATURE_RANGE[1],
    )
    # --- cells (geocell head)
    cells: str = param(
        "grid",
        "geocell kind: a square EPSG:3765 grid, or county cells split where dense",
        choices=("grid", "semantic"),
    )
    grid_spacing_km: float = param(50.0, "grid cell side, km", low=1.0, high=1000.0)
    # --- optimisation
    max_epochs: int = param(50, "passes over the training locations", low=1, high=10_000)
    batch_size: int = param(16, "locations per batch (each holds up to 4 views)", low=1, high=65_536)
    lr: float = param(1e-3, "AdamW learning rate of the heads", low=1e-7, high=1.0)
    backbone_lr_mult: float = param(
        0.1, "backbone learning rate = lr x this, once it trains", low=0.0, high=100.0
    )
    weight_decay: float = param(1e-4, "AdamW decoupled weight decay", low=0.0, high=10.0)
    schedule: str = param(
        "cosine",
        "learning-rate schedule: one cosine decay to 0 over the run, or cosine warm restarts",
        choices=("cosine", "warm_restarts"),
    )
    restart_epochs: int = param(5, "warm_restarts: epochs in the first cycle", low=1, high=10_000)
    unfreeze_epoch: int | None = param(
        None,
        "epochs the backbone stays frozen before it trains; unset = "
        "frozen all run (uses the embedding cache)",
        low=0,
        high=10_000,
    )
    label_smoothing: float = param(
        0.0, "cross-entropy label smoothing (share of the mass spread)", low=0.0, high=0.99
    )
    haversine_tau_km: float = param(
        75.0,
        "geocell haversine label smoothing: soft targets exp(-(d_i - d_true) / tau), tau in km; 0 = off",
        low=0.0,
        high=5000.0,
    )
    focal: bool = param(False, "classify: focal loss (gamma 2) instead of cross-entropy")
    heading_alpha: float = param(
        0.2, "weight of the 8-way cardinal cross-entropy added to the heading loss", low=0.0, high=100.0
    )
    # --- data
    val_fraction: float = param(
        0.0,
        "share of locations held out for validation (split by location); "
        "0 = train on every location (the recipe: the sample is too small to "
        "spare a split)",
        low=0.0,
        high=0.9,
    )
    seed: int = param(0, "seeds the split, the initialisation and the shuffling", low=0, high=2**32 - 1)
    hflip: bool = param(
        True, "mirror the panorama (flip the views, swap 90/270) with p 0.5; never with the heading head"
    )
    cache: bool = param(True, "cache frozen-backbone embeddings on disk (used while the backbone is frozen)")
    num_workers: int | None = param(
        None, "DataLoader processes decoding images; unset = one per core, at most 8", low=0, high=256
    )
    precision: str = param("32-true", "Lightning precision; bf16-mixed / 16-mixed apply on GPU only")
    patience: int = param(
        10, "early stopping: epochs without a validation improvement (with a split)", low=0, high=10_000
    )
    select_best: bool = param(
        False,
        "with a validation split: stop early and keep the best epoch (default: "
        "run every epoch and keep the last weights)",
        flag="--select-best",
    )
    init_from: str = param("", "checkpoint directory whose matching weights start this run", cli=False)
    max_size_mb: float = param(0.0, "refuse a model larger than this, MB; 0 = no limit", low=0.0, high=1e6)

    @property
    def frozen_throughout(self) -> bool:
        """True when the backbone never trains in this run (the embedding cache is then valid)."""
        return self.unfreeze_epoch is None or self.unfreeze_epoch >= self.max_epochs

    def to_dict(self) -> dict:
        """Plain JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Inverse of ``to_dict``; unknown keys raise ValueError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"Unknown training config keys {unknown}; valid keys are {sorted(names)}.")
        return cls(**d)

    def validate(self) -> "TrainConfig":
        """Raise ValueError with one sentence on a bad value (bounds and choices from the fields)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                problem = check_value(f, value)
                if problem:
                    raise ValueError(f"{f.name} {problem}.")
        if 0 < self.image_size < 32:
            raise ValueError(
                f"image_size {self.image_size} is too small; use 0 (the backbone's own) or 32 to 1024."
            )
        if "classify" in self.tasks and len(self.tasks) > 1:
            raise ValueError("The classify task cannot be combined with other heads.")
        return self


# ------------------------------------------------------------------------ reading the fields' metadata
def base_type(f: dataclasses.Field) -> str:
    """'int', 'float', 'str', 'bool', 'list' or 'dict': the field's type without ``| None``."""
    kind = f.type.__name__ if isinstance(f.type, type) else str(f.type)  # a class, or its name as text
    return kind.split("|")[0].strip()


def option(f: dataclasses.Field) -> str:
    """The field's command-line option: ``--max-epochs``; ``--no-hflip`` for a boolean on by default."""
    if f.metadata.get("flag"):
        return f.metadata["flag"]
    name = f.name.replace("_", "-")
    return f"--no-{name}" if base_type(f) == "bool" and f.default is True else f"--{name}"


def cli_fields(cls=None) -> list[dataclasses.Field]:
    """The fields the ``train`` command line (and the job form) expose as options."""
    return [f for f in dataclasses.fields(cls or TrainConfig) if f.metadata.get("cli", True)]


def bounds_text(f: dataclasses.Field) -> str:
    """'between 1 and 10000', 'at least 0', or '' for an unbounded field."""
    low, high = f.metadata.get("low"), f.metadata.get("high")
    if low is not None and high is not None:
        return f"between {low:g} and {high:g}"
    if low is not None:
        return f"at least {low:g}"
    return f"at most {high:g}" if high is not None else ""


def check_value(f: dataclasses.Field, value) -> str:
    """'' when ``value`` suits field ``f``, else what is wrong ('0 is out of range; it must be ...')."""
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        return f"{value!r} is not one of {', '.join(map(str, choices))}"
    low, high = f.metadata.get("low"), f.metadata.get("high")
    if low is None and high is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value!r} is not a number"
    if base_type(f) == "int" and value != int(value):
        return f"{value!r} is not a whole number"
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        return f"{value:g} is out of range; it must be {bounds_text(f)}"
    return ""


def describe(f: dataclasses.Field) -> str:
    """What a value of field ``f`` must be: 'a whole number between 1 and 10000', 'one of grid, semantic'."""
    if f.metadata.get("choices"):
        return "one of " + ", ".join(map(str, f.metadata["choices"]))
    kind = {"int": "a whole number", "float": "a number"}.get(base_type(f), "text")
    return f"{kind} {bounds_text(f)}".strip()


def parse_value(f: dataclasses.Field, text):
    """Text (a CLI argument or a form value) -> the field's value; ValueError (one sentence) if unusable."""
    kind = base_type(f)
    try:
        if kind == "int":
            number = float(text)
            if not number.is_integer():
                raise ValueError
            value = int(number)
        elif kind == "float":
            value = float(text)
        else:
            value = str(text)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"invalid {kind} value: {text!r}; it must be {describe(f)}") from None
    problem = check_value(f, value)
    if problem:
        raise ValueError(problem)
    return value


def get_field(name: str, cls=None) -> dataclasses.Field:
    """The TrainConfig field called ``name`` (KeyError if there is none)."""
    for f in dataclasses.fields(cls or TrainConfig):
        if f.name == name:
            return f
    raise KeyError(name)
