"""Augmentation randomness across DataLoader workers: distinct per worker, reproducible per seed."""

import pandas as pd
import torch

from geodemo.data import read_locations
from training.config import TrainConfig
from training.datamodule import GeoDataModule


def _views(sample_dir, tmp_path, seed: int) -> list[torch.Tensor]:
    """One epoch of the training loader over ONE location listed twice: worker 0 and worker 1 each get it."""
    row = read_locations(sample_dir).head(1)
    frame = pd.concat([row, row], ignore_index=True)
    cfg = TrainConfig(
        tasks=["region"],
        backbone="test_efficientnet",
        weights="none",
        image_size=64,
        batch_size=1,
        cache=False,
        hflip=False,
        num_workers=2,
        seed=seed,
    )
    dm = GeoDataModule(
        sample_dir,
        cfg,
        frame=frame,
        train_uuids=list(row["uuid"]),
        val_uuids=[],
        cache_dir=tmp_path / "cache",
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.num_workers == 2
    return [batch["views"][0] for batch in loader]


def test_two_workers_augment_the_same_image_differently_and_a_seeded_run_repeats(sample_dir, tmp_path):
    first = _views(sample_dir, tmp_path, seed=7)
    assert len(first) == 2
    # same file, same transform, two workers: the random crop / colour jitter must differ
    assert not torch.allclose(first[0], first[1])
    again = _views(sample_dir, tmp_path, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    other = _views(sample_dir, tmp_path, seed=8)
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
