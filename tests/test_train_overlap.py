"""Honest evaluation: a checkpoint records its training locations, and `evaluate` counts and warns about
locations it was trained on (same uuid, or within 10 m), on the real sample and on a folder of new places."""

import json
import shutil
import uuid as uuidlib
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from test_training_cli import cli

from geodemo.geo import haversine_km, load_points_csv
from geodemo.truth import train_overlap


def test_overlap_matches_uuids_or_coordinates_within_10_m():
    config = SimpleNamespace(
        train_locations={"uuid": ["a", "b"], "latitude": [45.0, 43.5], "longitude": [16.0, 16.4]}
    )
    lat = np.array([44.0, 45.0 + 8e-5, 45.0 + 2e-4, 43.5])  # far / ~9 m / ~22 m / exact
    lon = np.array([15.0, 16.0, 16.0, 16.4])
    seen = train_overlap(config, lat, lon, ["a", "x", "y", "z"])  # "a" matches by uuid only
    assert seen.tolist() == [True, True, False, True]
    assert train_overlap(SimpleNamespace(train_locations={}), lat, lon, ["a"] * 4) is None


def _new_places(sample_dir, prior_csv, dst, n=6):
    """n sample locations' photos under NEW uuids, at real prior coordinates > 1 km from every sample one."""
    sample = pd.read_csv(sample_dir / "data.csv")
    lat, lon = load_points_csv(prior_csv)
    far = haversine_km(lat[:, None], lon[:, None], sample.latitude.to_numpy(), sample.longitude.to_numpy())
    keep = np.flatnonzero(far.min(1) > 1.0)[:n]
    rows = []
    for src, i in zip(sample.uuid[:n], keep):
        new = str(uuidlib.uuid4())
        shutil.copytree(sample_dir / "images" / src, dst / "images" / new)
        rows.append({"uuid": new, "latitude": lat[i], "longitude": lon[i]})
    pd.DataFrame(rows).to_csv(dst / "data.csv", index=False)
    return dst


@pytest.fixture(scope="module")
def checkpoint(sample_dir, tmp_path_factory):
    """A tiny model trained on ALL 100 sample locations (one batch: only the recorded locations matter)."""
    out = tmp_path_factory.mktemp("overlap") / "ckpt"
    r = cli(
        "train", "--task", "geocell", "--data", sample_dir, "--out", out, "--backbone", "test_efficientnet",
        "--pretrained", "none", "--image-size", 64, "--max-epochs", 1, "--batch-size", 4,
        "--limit-train-batches", 1, "--val-fraction", 0, "--no-progress-bar",
        "--cache-dir", out.parent / "cache",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_the_checkpoint_records_every_training_location(checkpoint, sample_dir):
    recorded = json.loads((checkpoint / "config.json").read_text())["train_locations"]
    sample = pd.read_csv(sample_dir / "data.csv")
    assert sorted(recorded["uuid"]) == sorted(sample.uuid)
    assert len(recorded["latitude"]) == len(recorded["longitude"]) == 100


def test_evaluate_warns_on_training_data_not_on_new_places(checkpoint, sample_dir, prior_csv, tmp_path):
    out = tmp_path / "train.json"
    r = cli("evaluate", "--checkpoint", checkpoint, "--data", sample_dir, "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(out.read_text())["train_overlap"] == 100
    assert "100 of these 100 locations were used to train this checkpoint" in r.stderr
    assert "not a test" in r.stderr

    new = _new_places(sample_dir, prior_csv, tmp_path / "new")
    out = tmp_path / "new.json"
    r = cli("evaluate", "--checkpoint", checkpoint, "--data", new, "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    found = json.loads(out.read_text())
    assert found["train_overlap"] == 0 and found["count"] == 6
    assert "were used to train" not in r.stderr
