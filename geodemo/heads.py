"""Heads: the registry and the built-in heads. A head owns its task end to end (timm's registry habit).

A head is one class registered with ``@register_head(name)``; the registry is the list of tasks (``TASKS``).
Besides its layers, a head class carries everything about its task:

- ``help``: one line for the CLI, the job form and the Train tab; ``multi``: part of ``--task multi``;
- ``targets(dataset, i, view_mask)``: the batch keys its loss reads, for location i of a LocationDataset;
- ``loss(out, batch, cfg)``: its scalar training loss (the math lives in geodemo.losses: torch only);
- ``collect(out, batch)`` and ``metrics(gathered)``: what validation keeps per batch and logs per epoch;
- ``outputs``, ``probabilities``, ``per_view``, ``point``, ``columns``: what serving (geodemo.predict) and
  evaluation read off its output.

Adding a head is one class in this file (or in any module imported before the model is built): subclass
``Head`` and decorate it; ``--task NAME``, the job form and the Train tab then offer it and GeoTask trains it
(tests/test_heads.py does this with a toy head). Shapes: B locations, V views, D features per view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geodemo import geo, losses
from geodemo.data import VIEW_HEADINGS

NUM_CARDINALS = 8  # heading classes N, NE, E, ... every 45 degrees


class Head(nn.Module):
    """Base of every head: built as ``Head(config, fused_dim=F, view_dim=D)``, called as
    ``head(fused (B, F), per_view (B, V, D), view_mask (B, V), tabular (B, T) | None) -> dict[str, Tensor]``.

    ``config`` is the geodemo.model.ModelConfig; ``cfg`` in ``loss`` is a training.config.TrainConfig.
    """

    name: ClassVar[str] = ""  # set by register_head
    help: ClassVar[str] = ""  # one line: what the head predicts
    multi: ClassVar[bool] = False  # part of `--task multi` (the default recipe's heads)
    outputs: ClassVar[tuple[str, ...]] = ()  # keys its forward adds to the model's output dict
    probabilities: ClassVar[tuple[str, ...]] = ()  # outputs that are logits read as probabilities (softmax)
    per_view: ClassVar[bool] = False  # outputs are per view (B, V, ...): never averaged with a mirror
    point: ClassVar[bool] = False  # geodemo.readout makes the point (and county) from this output
    point_modes: ClassVar[bool] = False  # the readout has several point rules for it: validation logs each
    monitor: ClassVar[str | None] = None  # metric (lower is better) to watch when no head gives a point
    columns: ClassVar[tuple[str, ...]] = ()  # extra columns of Predictor.predict_dataset

    @classmethod
    def check_config(cls, config) -> None:
        """Raise ValueError with one sentence when a ModelConfig lacks what this head needs."""

    @classmethod
    def targets(cls, dataset, i: int, view_mask: Tensor) -> dict[str, Tensor]:
        """Batch keys this head's loss reads, for location i of a geodemo.dataset.LocationDataset."""
        return {}

    def loss(self, out: dict[str, Tensor], batch: dict, cfg) -> Tensor:
        """Scalar training loss of this head's outputs against ``targets``."""
        raise NotImplementedError(f"head {self.name!r} defines no loss")

    def collect(self, out: dict[str, Tensor], batch: dict) -> dict[str, Tensor]:
        """Per-batch tensors kept for the epoch metrics (first dim B): probabilities by default."""
        return {k: torch.softmax(out[k].double(), dim=1) for k in self.probabilities}

    def metrics(self, gathered: dict[str, np.ndarray]) -> dict[str, float]:
        """Epoch metrics (logged as ``{split}/{name}``) from every rank's collected arrays."""
        return {}


HEADS: dict[str, type[Head]] = {}


class _HeadNames(Sequence):
    """A live, read-only tuple of registered head names (those with ``flag`` set when given)."""

    def __init__(self, flag: str | None = None):
        self._flag = flag

    def _names(self) -> tuple[str, ...]:
        return tuple(n for n, cls in HEADS.items() if self._flag is None or getattr(cls, self._flag))

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


TASKS = _HeadNames()  # every registered head, in registration order
POINT_TASKS = _HeadNames("point")  # heads a predicted point can come from
MULTI_TASKS = _HeadNames("multi")  # the heads of `--task multi`


def register_head(name: str):
    """Class decorator adding a head to HEADS (and so to TASKS); a duplicate name raises."""

    def add(cls):
        if name in HEADS:
            raise ValueError(f"head {name!r} is already registered; pick another name")
        cls.name = name
        HEADS[name] = cls
        return cls

    return add


def get_head(name: str) -> type[Head]:
    """Look a head class up; an unknown name raises listing the valid ones."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; valid heads are: {', '.join(sorted(HEADS))}")
    return HEADS[name]


def in_registry_order(names) -> list[str]:
    """``names`` in registry order (losses are summed in this order, whatever the config's order)."""
    wanted = set(names)
    return [n for n in HEADS if n in wanted]


def all_targets(dataset, i: int, view_mask: Tensor) -> dict[str, Tensor]:
    """Every registered head's targets of location i (a dataset does not know which heads will train)."""
    item = {}
    for cls in HEADS.values():
        item.update(cls.targets(dataset, i, view_mask))
    return item


# ---------------------------------------------------------------- the built-in heads


@register_head("geocell")
class GeocellHead(Head):
    """Logits over the C geocells: {'geocell': (B, C)}."""

    help = "classify a grid cell"
    multi, point, point_modes = True, True, True
    outputs = probabilities = ("geocell",)
    columns = ("argmax_latitude", "argmax_longitude")

    def __init__(self, config, fused_dim: int, view_dim: int):
        super().__init__()
        self.fc = nn.Linear(fused_dim, config.num_cells)
        self._cells, self._weighted = config.cells, config.weighted_centroids
        self._centroids = None  # (lat, lon) (C,) float64 on the loss's device, built on first use

    @classmethod
    def check_config(cls, config) -> None:
        if not config.cells:
            raise ValueError("the geocell task needs cells; build them with geodemo.cells.build_cells")

    @classmethod
    def targets(cls, dataset, i, view_mask):
        return {"cell": torch.tensor(dataset.cell[i], dtype=torch.int64)}

    def forward(self, fused, per_view, view_mask, tabular=None):
        return {"geocell": self.fc(fused)}

    def centroids(self, device) -> tuple[Tensor, Tensor]:
        """The cells' (lat, lon) (C,) degrees as geodemo.readout reads them: the haversine soft targets'."""
        if self._centroids is None or self._centroids[0].device != torch.device(device):
            from geodemo.cells import CellSet  # only when training a geocell head

            lat, lon = CellSet.from_dict(self._cells).centroids(self._weighted)
            self._centroids = tuple(torch.as_tensor(v, dtype=torch.float64, device=device)
                                    for v in (lat, lon))
        return self._centroids

    def loss(self, out, batch, cfg):
        dist = None
        if cfg.haversine_tau_km > 0:
            cell_lat, cell_lon = self.centroids(batch["lat"].device)
            dist = geo.haversine_km_torch(
                batch["lat"][:, None], batch["lon"][:, None], cell_lat[None], cell_lon[None]
            )
        return losses.geocell_loss(
            out["geocell"], batch["cell"], dist, cfg.haversine_tau_km, cfg.label_smoothing
        )


@register_head("coords")
class CoordsHead(Head):
    """Standardised EPSG:3765 x/y (see XYStats): {'coords': (B, 2)}."""

    help = "regress x/y"
    point = True
    outputs = ("coords",)

    def __init__(self, config, fused_dim: int, view_dim: int):
        super().__init__()
        self.fc = nn.Linear(fused_dim, 2)

    @classmethod
    def check_config(cls, config) -> None:
        if not config.xy_stats:
            raise ValueError("the coords task needs xy_stats; fit them with geodemo.geo.XYStats.fit")

    @classmethod
    def targets(cls, dataset, i, view_mask):
        return {"xy": torch.from_numpy(dataset.xy[i])}

    def forward(self, fused, per_view, view_mask, tabular=None):
        return {"coords": self.fc(fused)}

    def loss(self, out, batch, cfg):
        return F.mse_loss(out["coords"].float(), batch["xy"])

    def collect(self, out, batch):
        return {"coords": out["coords"].double()}  # (B, 2) standardised EPSG:3765


@register_head("region")
class RegionHead(Head):
    """County logits, optionally fused with T tabular features: {'region': (B, 21)}.

    Its target ``county`` is also the truth of every point's county accuracy (present whatever trains).
    """

    help = "county"
    multi, point = True, True
    outputs = probabilities = ("region",)

    def __init__(self, config, fused_dim: int, view_dim: int):
        super().__init__()
        self.num_tabular = len(config.tabular)
        self.fc = nn.Linear(fused_dim + self.num_tabular, len(config.counties))

    @classmethod
    def targets(cls, dataset, i, view_mask):
        return {"county": torch.tensor(dataset.county[i], dtype=torch.int64)}

    def forward(self, fused, per_view, view_mask, tabular=None):
        if self.num_tabular:
            if tabular is None:  # unknown at inference: zeros = the training mean if standardised
                tabular = fused.new_zeros(fused.shape[0], self.num_tabular)
            fused = torch.cat([fused, tabular.to(fused.dtype)], dim=1)
        return {"region": self.fc(fused)}

    def loss(self, out, batch, cfg):
        keep = batch["county"] >= 0
        if not keep.any():
            return out["region"].sum() * 0.0
        return F.cross_entropy(
            out["region"][keep].float(), batch["county"][keep], label_smoothing=cfg.label_smoothing
        )


@register_head("heading")
class HeadingHead(Head):
    """Per-view camera heading from that view's own features (not the fused vector).

    Returns {'heading': (B, V, 2) raw (sin, cos), 'heading_cardinal': (B, V, 8) logits}.
    """

    help = "camera direction"
    multi, per_view = True, True
    outputs = ("heading", "heading_cardinal")
    monitor = "heading_maae"
    columns = tuple(f"heading_{h}" for h in VIEW_HEADINGS)

    def __init__(self, config, fused_dim: int, view_dim: int):
        super().__init__()
        self.sincos = nn.Linear(view_dim, 2)
        self.cardinal = nn.Linear(view_dim, NUM_CARDINALS)

    @classmethod
    def targets(cls, dataset, i, view_mask):
        heading = torch.from_numpy(dataset.heading[i].astype(np.float32))  # (V,) degrees
        heading[~view_mask] = float("nan")
        return {"heading": heading}

    def forward(self, fused, per_view, view_mask, tabular=None):
        return {"heading": self.sincos(per_view), "heading_cardinal": self.cardinal(per_view)}

    def loss(self, out, batch, cfg):
        return losses.heading_loss(
            out["heading"], out["heading_cardinal"], batch["heading"], cfg.heading_alpha
        )

    def collect(self, out, batch):
        sin, cos = out["heading"].double().unbind(-1)
        pred = torch.rad2deg(torch.atan2(sin, cos)) % 360.0
        diff = (pred - batch["heading"].double()).abs() % 360.0
        return {"heading_err": torch.minimum(diff, 360.0 - diff)}  # (B, V) degrees, NaN where missing

    def metrics(self, gathered):
        err = gathered["heading_err"][~np.isnan(gathered["heading_err"])]
        return {"heading_maae": float(err.mean()) if err.size else float("nan")}
