"""Heads own their tasks: every registered head's targets, loss, metrics and outputs work end to end, and
a new head (a toy one defined here, touching no other file) becomes a task that trains through GeoTask."""

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from geodemo.cells import build_grid
from geodemo.data import read_locations
from geodemo.dataset import LocationDataset
from geodemo.geo import XYStats, load_points_csv
from geodemo.heads import HEADS, MULTI_TASKS, POINT_TASKS, TASKS, Head, get_head, register_head
from geodemo.model import GeoModel, ModelConfig
from training.config import TrainConfig, tasks_for
from training.tasks import build_task

TINY = "test_efficientnet"
TOY_MEAN_LAT = 45.0  # the toy target: degrees of latitude north of this


class ToyHead(Head):
    """Latitude regression, degrees from TOY_MEAN_LAT: {'toy': (B,)}."""

    help = "latitude (a test head)"
    outputs = ("toy",)
    monitor = "toy_mae"

    def __init__(self, config, fused_dim, view_dim):
        super().__init__()
        self.fc = nn.Linear(fused_dim, 1)

    @classmethod
    def targets(cls, dataset, i, view_mask):
        return {"toy_lat": torch.tensor(dataset.lat[i] - TOY_MEAN_LAT, dtype=torch.float32)}

    def forward(self, fused, per_view, view_mask, tabular=None):
        return {"toy": self.fc(fused).squeeze(-1)}

    def loss(self, out, batch, cfg):
        return nn.functional.mse_loss(out["toy"].float(), batch["toy_lat"])

    def collect(self, out, batch):
        return {"toy_err": (out["toy"].double() - batch["toy_lat"].double()).abs()}

    def metrics(self, gathered):
        return {"toy_mae": float(gathered["toy_err"].mean())}


@pytest.fixture
def toy_head():
    """ToyHead registered as "toy" for one test, then removed (the registry is process-wide)."""
    register_head("toy")(ToyHead)
    yield ToyHead
    HEADS.pop("toy", None)


@pytest.fixture(scope="module")
def geo_kwargs(prior_csv):
    lat, lon = load_points_csv(prior_csv)
    return {"cells": build_grid(lat[:300], lon[:300], spacing_km=100.0).to_dict(),
            "xy_stats": XYStats.fit(lat, lon).to_dict()}


def batch_of(sample_dir, config: ModelConfig, n: int = 4) -> tuple[LocationDataset, dict]:
    """The dataset of the first n real sample locations, and all of them as one collated batch."""
    from geodemo.cells import CellSet

    frame = read_locations(sample_dir).iloc[:n]
    ds = LocationDataset(
        sample_dir, frame, config.image_size, config.mean, config.std,
        cells=CellSet.from_dict(config.cells) if config.cells else None,
        xy_stats=XYStats.from_dict(config.xy_stats) if config.xy_stats else None,
    )
    return ds, torch.utils.data.default_collate([ds[i] for i in range(n)])


def test_tasks_are_the_registry():
    assert list(TASKS) == list(HEADS) == ["geocell", "coords", "region", "heading"]
    assert list(POINT_TASKS) == ["geocell", "coords", "region"]
    assert list(MULTI_TASKS) == tasks_for("multi") == ["geocell", "region", "heading"]
    assert all(get_head(t).help and get_head(t).outputs for t in TASKS)


@pytest.mark.parametrize("task", list(TASKS))
def test_each_head_owns_targets_loss_collect_and_metrics(task, geo_kwargs, sample_dir):
    """A head's loss reads only its targets, gives a finite scalar with gradients, and its collected
    tensors turn into finite metrics; every declared output is produced."""
    torch.manual_seed(0)
    config = ModelConfig.for_backbone(TINY, [task], **geo_kwargs)
    model = GeoModel(config)
    ds, batch = batch_of(sample_dir, config)
    head = model.heads[task]
    assert set(head.targets(ds, 0, batch["view_mask"][0])) <= set(batch)
    out = model(batch["views"], batch["view_mask"])
    assert sorted(out) == sorted(head.outputs)
    loss = head.loss(out, batch, TrainConfig(tasks=[task], haversine_tau_km=75.0))
    assert loss.dim() == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    kept = head.collect({k: v.detach() for k, v in out.items()}, batch)
    assert kept or head.point  # a head without metrics still gives a point
    assert all(v.shape[0] == 4 for v in kept.values())
    found = head.metrics({k: v.numpy() for k, v in kept.items()})
    assert all(np.isfinite(v) for v in found.values())
    assert head.monitor is None or head.monitor in found  # what training watches without a point


def test_a_new_head_is_one_class_and_trains_one_step_through_geotask(toy_head, sample_dir):
    assert "toy" in TASKS and "toy" in tasks_for("toy") and "toy" not in POINT_TASKS
    from geodemo.jobform import train_tasks

    assert "toy" in train_tasks()
    config = ModelConfig.for_backbone(TINY, ["toy"])
    _, batch = batch_of(sample_dir, config)
    assert batch["toy_lat"].shape == (4,)  # the dataset made the toy head's target
    cfg = TrainConfig(tasks=["toy"], backbone=TINY, weights="none", image_size=64, max_epochs=1, lr=0.1)
    torch.manual_seed(0)
    task = build_task(config, cfg)
    assert task.monitor == "val/toy_mae"
    before = task.model.heads["toy"].fc.weight.detach().clone()
    items = [{k: v[i] if torch.is_tensor(v) else v[i] for k, v in batch.items()} for i in range(4)]
    loader = torch.utils.data.DataLoader(items, batch_size=4)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0,
                        accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(task, loader, loader)
    assert not torch.equal(task.model.heads["toy"].fc.weight, before)  # the optimiser stepped the head
    logged = trainer.callback_metrics
    assert {"train/loss", "train/loss_toy", "val/loss", "val/toy_mae"} <= set(logged)
    assert float(logged["val/toy_mae"]) > 0 and torch.isfinite(logged["val/loss"])


def test_removing_the_toy_head_leaves_the_registry_as_it_was():
    assert "toy" not in TASKS and list(TASKS) == ["geocell", "coords", "region", "heading"]
