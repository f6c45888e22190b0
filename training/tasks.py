"""LightningModules: GeoTask (any subset of geocell/coords/region/heading heads) and ClassifyTask.

Both share one ``_step(batch, split)`` for train/val/test; task differences live in small hooks:
``configure_models``, ``configure_losses``, ``configure_metrics``,
``compute_losses``, ``collect``, ``summarise``.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from geodemo import geo
from geodemo.model import ClassifierModel, GeoModel, ModelConfig
from geodemo.readout import Readout
from training import losses, metrics
from training.config import TrainConfig


class _Task(L.LightningModule):
    """Shared optimisation, freezing and step logic."""

    monitor, mode = "val/loss", "min"  # what early stopping and best-checkpointing watch

    def __init__(self, model_config: dict, train_config: dict, backbone_weights: str = "none"):
        """Args: model_config: ModelConfig.to_dict(); train_config: TrainConfig.to_dict();
        backbone_weights: initial backbone weights as for geodemo.backbones.create_backbone."""
        super().__init__()
        self._frozen = None
        # kept in the .ckpt (resume compares them), not written to the loggers: the model config lists every
        # training location, and YAML-dumping 16k of them cost ~50 s before the first step
        self.save_hyperparameters(logger=False)
        self.model_config = ModelConfig.from_dict(model_config)
        self.cfg = TrainConfig.from_dict(train_config)
        self.configure_models(backbone_weights)
        self.configure_losses()
        self.configure_metrics()
        self._set_frozen(self.backbone_frozen(0))

    # ------------------------------------------------------------------ freezing
    def backbone_frozen(self, epoch: int) -> bool:
        """The backbone is frozen before ``unfreeze_epoch`` (always, when it is None)."""
        return self.cfg.unfreeze_epoch is None or epoch < self.cfg.unfreeze_epoch

    def _set_frozen(self, frozen: bool) -> None:
        if frozen != self._frozen:
            self.model.backbone.requires_grad_(not frozen)
            self._frozen = frozen
        if frozen:  # frozen BatchNorm statistics too: the backbone behaves as at inference
            self.model.backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self._frozen:
            self.model.backbone.eval()
        return self

    def on_train_epoch_start(self) -> None:
        self._set_frozen(self.backbone_frozen(self.current_epoch))

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        backbone = list(self.model.backbone.parameters())
        seen = {id(p) for p in backbone}
        groups = [{"params": [p for p in self.parameters() if id(p) not in seen], "lr": self.cfg.lr}]
        if not self.cfg.frozen_throughout:  # lower LR once unfrozen, as in the LUMEN write-up
            groups.append({"params": backbone, "lr": self.cfg.lr * self.cfg.backbone_lr_mult})
        opt = torch.optim.AdamW(groups, weight_decay=self.cfg.weight_decay)
        if self.cfg.schedule == "warm_restarts":
            sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
                opt, T_0=max(1, self.cfg.restart_epochs)
            )
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.cfg.max_epochs))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # ------------------------------------------------------------------ steps
    def configure_losses(self) -> None:
        pass

    def configure_metrics(self) -> None:
        self._collected: dict[str, list[dict]] = {"val": [], "test": []}

    def _step(self, batch: dict, split: str) -> torch.Tensor:
        out = self.forward_batch(batch)
        parts = self.compute_losses(out, batch)
        loss = sum(self.cfg.task_weights.get(k, 1.0) * v for k, v in parts.items())
        size = len(batch["view_mask"] if "view_mask" in batch else batch["label"])
        train = split == "train"
        self.log(
            f"{split}/loss",
            loss,
            # a progress-bar metric is turned into a Python number after every step (a GPU -> CPU sync), so
            # the training loss goes to the loggers (every LOG_EVERY_N_STEPS) and the progress file only
            prog_bar=not train,
            on_step=train,
            on_epoch=True,
            batch_size=size,
            sync_dist=not train,
        )
        for name, value in parts.items():
            self.log(
                f"{split}/loss_{name}",
                value,
                on_step=False,
                on_epoch=True,
                batch_size=size,
                sync_dist=not train,
            )
        if not train:
            self._collected[split].append({k: v.detach() for k, v in self.collect(out, batch).items()})
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._step(batch, "test")

    def _epoch_end(self, split: str) -> None:
        rows = self._collected[split]
        if not rows:
            return
        gathered = {}
        for key in rows[0]:
            value = self.all_gather(torch.cat([r[key] for r in rows]))
            gathered[key] = (value.flatten(0, 1) if self.trainer.world_size > 1 else value).cpu().numpy()
        rows.clear()
        for name, value in self.summarise(gathered).items():
            # already gathered from every rank: no sync needed (and identical on each rank)
            self.log(
                f"{split}/{name}", float(value), prog_bar=name in ("mean_km", "acc"), rank_zero_only=False
            )

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")


class GeoTask(_Task):
    """Multi-view geolocation over geodemo.model.GeoModel with any subset of heads."""

    def configure_models(self, backbone_weights: str) -> None:
        config = self.model_config
        self.model = GeoModel(config, backbone_weights)
        self.point_task = next((t for t in ("geocell", "coords", "region") if t in config.tasks), None)
        self.monitor = "val/mean_km" if self.point_task else "val/heading_maae"
        # Validation turns outputs into points exactly as serving does (geodemo.readout), so val/mean_km here
        # is what `evaluate` reports for the same locations.
        self.readout = Readout(config)
        if "geocell" in config.tasks:  # centroids for the haversine-smoothed targets (non-persistent: config)
            for name, value in (("cell_lat", self.readout.cell_lat), ("cell_lon", self.readout.cell_lon)):
                self.register_buffer(name, torch.as_tensor(value, dtype=torch.float64), persistent=False)

    def forward_batch(self, batch: dict) -> dict:
        """Heads on cached features (``feats`` (B, V, D)) or on images (``views`` (B, V, 3, H, W))."""
        tabular = batch.get("tabular") if self.model_config.tabular else None
        if "feats" in batch:
            return self.model.forward_features(batch["feats"], batch["view_mask"], tabular)
        return self.model(batch["views"], batch["view_mask"], tabular)

    def compute_losses(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        c = self.cfg
        parts = {}
        if "geocell" in out:
            dist = None
            if c.haversine_tau_km > 0:
                dist = geo.haversine_km_torch(
                    batch["lat"][:, None], batch["lon"][:, None], self.cell_lat[None], self.cell_lon[None]
                )
            parts["geocell"] = losses.geocell_loss(
                out["geocell"], batch["cell"], dist, c.haversine_tau_km, c.label_smoothing
            )
        if "coords" in out:
            parts["coords"] = F.mse_loss(out["coords"].float(), batch["xy"])
        if "region" in out:
            keep = batch["county"] >= 0
            parts["region"] = (
                F.cross_entropy(
                    out["region"][keep].float(), batch["county"][keep], label_smoothing=c.label_smoothing
                )
                if keep.any()
                else out["region"].sum() * 0.0
            )
        if "heading" in out:
            parts["heading"] = losses.heading_loss(
                out["heading"], out["heading_cardinal"], batch["heading"], c.heading_alpha
            )
        return parts

    def collect(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        """Per-batch tensors for epoch metrics: truth, head probabilities / coords, heading errors."""
        rows = {"lat": batch["lat"].double(), "lon": batch["lon"].double(), "county_true": batch["county"]}
        for key in ("geocell", "region"):
            if key in out:
                rows[key] = torch.softmax(out[key].double(), dim=1)  # (B, C) / (B, K)
        if "coords" in out:
            rows["coords"] = out["coords"].double()  # (B, 2) standardised EPSG:3765
        if "heading" in out:
            sin, cos = out["heading"].double().unbind(-1)
            pred = torch.rad2deg(torch.atan2(sin, cos)) % 360.0
            diff = (pred - batch["heading"].double()).abs() % 360.0
            rows["heading_err"] = torch.minimum(diff, 360.0 - diff)  # (B, V), NaN where missing
        return rows

    def summarise(self, g: dict[str, np.ndarray]) -> dict[str, float]:
        """Gathered per-location arrays -> logged metrics (val/mean_km, val/acc_25km, val/county_acc, ...)."""
        out = {}
        if self.point_task:
            heads = {k: g[k] for k in ("geocell", "region", "coords") if k in g}
            modes = {"": None}  # "" = the config's point rule; a geocell head also logs every rule
            if "geocell" in heads:
                modes = {"_min_expected": "min_expected_km", "_weighted": "weighted_mean"}
                modes.update({"_argmax": "argmax", "": None})
            for suffix, mode in modes.items():
                r = self.readout.read(heads, mode)
                summary = metrics.haversine_summary(geo.haversine_km(g["lat"], g["lon"], r.lat, r.lon))
                if suffix:
                    summary = {k: summary[k] for k in ("mean_km", "median_km")}
                out.update({f"{k}{suffix}": v for k, v in summary.items()})
                if suffix == "":  # the county containing the point, as `evaluate` scores it
                    out["county_acc"] = metrics.county_accuracy(g["county_true"], r.county)
        if "heading_err" in g:
            err = g["heading_err"][~np.isnan(g["heading_err"])]
            out["heading_maae"] = float(err.mean()) if err.size else float("nan")
        return out


class ClassifyTask(_Task):
    """Single-image ImageFolder classifier over geodemo.model.ClassifierModel."""

    monitor, mode = "val/acc", "max"

    def configure_models(self, backbone_weights: str) -> None:
        self.model = ClassifierModel(self.model_config, backbone_weights)

    def forward_batch(self, batch: dict) -> dict:
        return self.model(batch["image"])

    def compute_losses(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        logits = out["classify"].float()
        if self.cfg.focal:
            return {"classify": losses.focal_loss(logits, batch["label"], gamma=2.0)}
        return {"classify": F.cross_entropy(logits, batch["label"], label_smoothing=self.cfg.label_smoothing)}

    def collect(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        return {"pred": out["classify"].argmax(1), "true": batch["label"]}

    def summarise(self, g: dict[str, np.ndarray]) -> dict[str, float]:
        return metrics.accuracy_and_macro_f1(g["true"], g["pred"], len(self.model_config.class_names))


def build_task(model_config: ModelConfig, cfg: TrainConfig, backbone_weights: str = "none") -> _Task:
    """GeoTask or ClassifyTask for a config."""
    cls = ClassifyTask if model_config.tasks == ["classify"] else GeoTask
    return cls(model_config.to_dict(), cfg.to_dict(), backbone_weights)
