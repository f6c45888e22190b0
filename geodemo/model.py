"""Models: the multi-view GeoModel (shared backbone, view fusion, any subset of heads) and ClassifierModel.

Shapes: B locations, V views per location, D backbone features per view, F fused features, C cells.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from geodemo.backbones import create_backbone, get_backbone_spec
from geodemo.geo import COUNTY_CODES
from geodemo.heads import HEADS, POINT_TASKS, TASKS, get_head, register_head

__all__ = ["HEADS", "POINT_TASKS", "TASKS", "ClassifierModel", "GeoModel", "ModelConfig", "build_model",
           "get_head", "register_head"]  # the head registry lives in geodemo.heads; re-exported here
FUSIONS = ("concat", "mean", "attention")
POINT_MODES = ("min_expected_km", "weighted_mean", "argmax")  # see geodemo.readout
TEMPERATURE_RANGE = (0.05, 20.0)  # allowed read-out temperatures of the geocell probabilities


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model and read its outputs; JSON-able, saved whole in config.json.

    Attributes:
        tasks: subset of TASKS (the registered heads, geodemo.heads), or ["classify"].
        image_size: square input side, pixels; mean/std normalise [0, 1] RGB.
        fusion: how per-view features become one vector: concat | mean | attention.
        hidden_dim: width of a shared hidden layer before the heads; 0 = linear heads.
        cells: CellSet.to_dict() (geocell); counties: county codes in region-logit order.
        xy_stats: XYStats.to_dict() (coords); class_names / cbam: classify only.
        tabular: names of extra per-location features fed to the region head.
        point_mode: geocell -> point: "min_expected_km" (least expected km, on land), "weighted_mean"
            (probability-weighted centroid mean, EPSG:3765) or "argmax" cell (see geodemo.readout).
        weighted_centroids: use the cells' weighted centroids (mean of training points) vs plain centres.
        tta_flip: at inference also predict the mirrored panorama and average.
        temperature: read-out temperature T of the geocell probabilities, p ∝ p ** (1 / T) (= softmax of
            logits / T); T < 1 sharpens (geodemo.readout applies it). 1.0 = as trained (old checkpoints).
        train_locations: {"uuid": [...], "latitude": [...], "longitude": [...]} (degrees, 6 decimals) of the
            training locations: `evaluate` counts how many evaluated locations the model was trained on.
    """

    tasks: list[str]
    backbone: str = "tf_efficientnet_lite0"
    weights_source: str = "offline"
    image_size: int = 224
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    fusion: str = "mean"
    num_views: int = 4
    hidden_dim: int = 0
    dropout: float = 0.2
    cells: dict | None = None
    counties: list[str] = field(default_factory=lambda: list(COUNTY_CODES))
    xy_stats: dict | None = None
    class_names: list[str] | None = None
    cbam: bool = False
    tabular: list[str] = field(default_factory=list)
    point_mode: str = "min_expected_km"
    weighted_centroids: bool = True
    tta_flip: bool = False
    temperature: float = 1.0
    train_locations: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    data_fingerprint: str = ""
    data_sources: list = field(default_factory=list)  # [{path, fingerprint, locations}] per --data folder
    metrics: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    format_version: int = 1

    def __post_init__(self):
        self.tasks = [self.tasks] if isinstance(self.tasks, str) else list(self.tasks)
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        if self.tasks == ["classify"]:
            if not self.class_names:
                raise ValueError("a classify model needs class_names; set them from the ImageFolder classes")
        else:
            unknown = [t for t in self.tasks if t not in TASKS]
            if unknown or not self.tasks:
                raise ValueError(
                    f"unknown task(s) {unknown or self.tasks}; valid tasks are: {', '.join(TASKS)} "
                    f"(any subset) or classify (alone)"
                )
        if self.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self.fusion!r}; valid fusions are: {', '.join(FUSIONS)}")
        if self.point_mode not in POINT_MODES:
            raise ValueError(
                f"unknown point_mode {self.point_mode!r}; valid modes are: {', '.join(POINT_MODES)}"
            )
        if not (isinstance(self.temperature, (int, float)) and not isinstance(self.temperature, bool)
                and TEMPERATURE_RANGE[0] <= self.temperature <= TEMPERATURE_RANGE[1]):  # NaN fails too
            raise ValueError(
                f"temperature {self.temperature!r} is not a finite number from {TEMPERATURE_RANGE[0]} to "
                f"{TEMPERATURE_RANGE[1]}; set 1.0 (as trained) or e.g. 0.6 with `train --temperature`"
            )
        for name, head in HEADS.items():  # what each head needs (cells, xy_stats), in registry order
            if name in self.tasks:
                head.check_config(self)
        get_backbone_spec(self.backbone)  # unknown backbone -> error listing the valid ones

    @classmethod
    def for_backbone(cls, backbone: str, tasks: list[str], **kwargs) -> ModelConfig:
        """A config whose image size and normalisation come from the backbone registry."""
        spec = get_backbone_spec(backbone)
        defaults = dict(image_size=spec.image_size, mean=spec.mean, std=spec.std)
        return cls(tasks=tasks, backbone=backbone, **{**defaults, **kwargs})

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of to_dict; unknown keys raise naming them (a config from a newer or other program)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"unknown config key(s) {', '.join(unknown)}; this config was not written by geodemo "
                f"format_version {cls.format_version}"
            )
        if "tasks" not in d:
            raise ValueError("the config has no 'tasks' key; it is not a geodemo model config")
        return cls(**d)

    @property
    def num_cells(self) -> int:
        """Number of geocells C (0 without cells)."""
        if not self.cells:
            return 0
        from geodemo.cells import CellSet  # only needed for geocell models

        return len(CellSet.from_dict(self.cells))


# ---------------------------------------------------------------- models


def model_size_mb(model: nn.Module) -> float:
    """Bytes of parameters and buffers (what model.safetensors holds), in MB (10^6 bytes)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6


def _masked_mean(feats: Tensor, weights: Tensor) -> Tensor:
    """(B, V, D), (B, V) non-negative weights -> (B, D); rows with no weight give zeros."""
    weights = weights.to(feats.dtype)
    return (feats * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True).clamp_min(1e-12)


class GeoModel(nn.Module):
    """Shared backbone over V views -> masked fusion -> optional hidden layer -> heads (a dict of outputs)."""

    def __init__(self, config: ModelConfig, backbone_weights: str = "none"):
        super().__init__()
        if config.tasks == ["classify"]:
            raise ValueError("a classify config builds a ClassifierModel; use build_model(config)")
        self.config = config
        self.backbone = create_backbone(config.backbone, backbone_weights)
        view_dim = self.backbone.num_features
        fused_dim = view_dim * config.num_views if config.fusion == "concat" else view_dim
        # Attention fusion: one learned relevance score per view, softmax over present views.
        self.attention = nn.Linear(view_dim, 1) if config.fusion == "attention" else None
        self.hidden = None
        if config.hidden_dim > 0:
            self.hidden = nn.Sequential(nn.Linear(fused_dim, config.hidden_dim), nn.GELU())
            fused_dim = config.hidden_dim
        self.dropout = nn.Dropout(config.dropout)
        self.heads = nn.ModuleDict({t: get_head(t)(config, fused_dim, view_dim) for t in config.tasks})

    def embed(self, views: Tensor, view_mask: Tensor | None = None) -> Tensor:
        """(B, V, 3, H, W) -> (B, V, D) in ONE backbone pass; with a mask only present views are computed."""
        b, v = views.shape[:2]
        if view_mask is None:
            return self.backbone(views.flatten(0, 1)).view(b, v, -1)
        return self.embed_present(views[view_mask], view_mask)

    def embed_present(self, images: Tensor, view_mask: Tensor) -> Tensor:
        """Present views only: images (P, 3, H, W), P = view_mask.sum() -> (B, V, D), zeros where missing."""
        feats = self.backbone(images)
        out = feats.new_zeros(*view_mask.shape, feats.shape[-1])
        out[view_mask] = feats
        return out

    def fuse(self, feats: Tensor, view_mask: Tensor) -> Tensor:
        """(B, V, D), (B, V) bool -> (B, F). Missing views never influence mean/attention."""
        mask = view_mask.to(torch.bool)
        if self.config.fusion == "concat":
            if feats.shape[1] != self.config.num_views:
                raise ValueError(
                    f"concat fusion needs all {self.config.num_views} view slots (zero-padded), "
                    f"got {feats.shape[1]}"
                )
            return (feats * mask.unsqueeze(-1).to(feats.dtype)).flatten(1)
        if self.config.fusion == "mean":
            return _masked_mean(feats, mask)
        scores = self.attention(feats).squeeze(-1).masked_fill(~mask, float("-inf"))
        # A location with no view at all would give NaN; zero weights give a zero vector instead.
        weights = torch.softmax(scores, dim=1).nan_to_num(0.0)
        return _masked_mean(feats, weights)

    def forward_features(
        self, feats: Tensor, view_mask: Tensor, tabular: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Heads on per-view features (B, V, D); used directly with the embedding cache."""
        fused = self.fuse(feats, view_mask)
        if self.hidden is not None:
            fused = self.hidden(fused)
        fused, per_view = self.dropout(fused), self.dropout(feats)
        out = {}
        for head in self.heads.values():
            out.update(head(fused, per_view, view_mask, tabular))
        return out

    def forward(self, views: Tensor, view_mask: Tensor, tabular: Tensor | None = None) -> dict[str, Tensor]:
        """views (B, V, 3, H, W), view_mask (B, V) bool -> dict of head outputs (see the heads)."""
        return self.forward_features(self.embed(views, view_mask), view_mask, tabular)

    def size_mb(self) -> float:
        """Parameter and buffer size in MB."""
        return model_size_mb(self)


class CBAM(nn.Module):
    """CBAM (Woo et al. 2018): channel attention, then spatial attention, on (N, C, H, W)."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        channel = self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True))
        x = x * torch.sigmoid(channel)
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class ClassifierModel(nn.Module):
    """Single-image classifier: backbone feature map -> optional CBAM -> global pool -> dropout -> linear."""

    def __init__(self, config: ModelConfig, backbone_weights: str = "none"):
        super().__init__()
        self.config = config
        self.backbone = create_backbone(config.backbone, backbone_weights)
        self.cbam = CBAM(self.backbone.num_features) if config.cbam else None
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(self.backbone.num_features, len(config.class_names))

    def feature_map(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) -> last feature map (N, D, h, w), after CBAM when enabled."""
        fmap = self.backbone.forward_features(images)
        return self.cbam(fmap) if self.cbam is not None else fmap

    def forward_map(self, fmap: Tensor) -> dict[str, Tensor]:
        """Feature map -> {'classify': (N, K) logits}."""
        pooled = self.backbone.forward_head(fmap, pre_logits=True)
        return {"classify": self.fc(self.dropout(pooled))}

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """(N, 3, H, W) -> {'classify': (N, K) logits}."""
        return self.forward_map(self.feature_map(images))

    def size_mb(self) -> float:
        """Parameter and buffer size in MB (for --max-size-mb)."""
        return model_size_mb(self)


def build_model(config: ModelConfig, backbone_weights: str = "none") -> nn.Module:
    """GeoModel for geo tasks, ClassifierModel for ["classify"]; backbone_weights as in create_backbone."""
    if config.tasks == ["classify"]:
        return ClassifierModel(config, backbone_weights)
    return GeoModel(config, backbone_weights)
