"""LightningModules: GeoTask (any subset of the registered heads, geodemo.heads) and ClassifyTask.

Both share one ``_step(batch, split)`` for train/val/test; task differences live in small hooks:
``configure_models``, ``configure_losses``, ``configure_metrics``,
``compute_losses``, ``collect``, ``summarise``.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from geodemo import geo, losses
from geodemo.heads import get_head, in_registry_order
from geodemo.model import ClassifierModel, GeoModel, ModelConfig
from geodemo.readout import Readout
from training import metrics
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
    """Multi-view geolocation over geodemo.model.GeoModel with any subset of heads.

    Losses, validation tensors and metrics come from the heads themselves (geodemo.heads); the task adds
    the metrics of the point (geodemo.readout) when a head gives one.
    """

    def configure_models(self, backbone_weights: str) -> None:
        config = self.model_config
        self.model = GeoModel(config, backbone_weights)
        # losses are summed in registry order (not the config's), so a run's floating point never depends
        # on how the heads were listed
        self.head_order = in_registry_order(config.tasks)
        self.point_heads = [n for n in self.head_order if get_head(n).point]
        monitors = [f"val/{get_head(n).monitor}" for n in self.head_order if get_head(n).monitor]
        self.monitor = "val/mean_km" if self.point_heads else next(iter(monitors), "val/loss")
        # Validation turns outputs into points exactly as serving does (geodemo.readout), so val/mean_km here
        # is what `evaluate` reports for the same locations.
        self.readout = Readout(config)

    def forward_batch(self, batch: dict) -> dict:
        """Heads on cached features (``feats`` (B, V, D)) or on images (``views`` (B, V, 3, H, W))."""
        tabular = batch.get("tabular") if self.model_config.tabular else None
        if "feats" in batch:
            return self.model.forward_features(batch["feats"], batch["view_mask"], tabular)
        return self.model(batch["views"], batch["view_mask"], tabular)

    def compute_losses(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        """Each head's own loss (``Head.loss``), keyed by head name."""
        return {name: self.model.heads[name].loss(out, batch, self.cfg) for name in self.head_order}

    def collect(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        """Per-batch tensors for epoch metrics: the truth, then what each head keeps (``Head.collect``)."""
        rows = {"lat": batch["lat"].double(), "lon": batch["lon"].double(), "county_true": batch["county"]}
        for name in self.head_order:
            rows.update(self.model.heads[name].collect(out, batch))
        return rows

    def summarise(self, g: dict[str, np.ndarray]) -> dict[str, float]:
        """Gathered per-location arrays -> logged metrics (val/mean_km, val/acc_25km, val/county_acc, ...)."""
        out = {}
        if self.point_heads:
            heads = {k: g[k] for k in self.point_heads}
            modes = {"": None}  # "" = the config's point rule; a head with several rules logs each
            if any(get_head(n).point_modes for n in self.point_heads):
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
        for name in self.head_order:
            out.update(self.model.heads[name].metrics(g))
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
