"""Cache fill and batch prediction on Lightning's predict loop with 2 CPU processes (gloo), from the same CLI
as tests/test_ddp.py trains: the same cache and the same CSV as one process."""

import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from geodemo.cells import build_grid
from geodemo.checkpoint import save_checkpoint
from geodemo.geo import load_points_csv
from geodemo.model import ModelConfig, build_model
from training import cache as emb
from training.__main__ import main
from training.distributed import embed_datasets, embedding_model
from training.evaluate import predict_locations

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKBONE = ["--backbone", "test_efficientnet", "--image-size", "64", "--seed", "3"]
RANKS = ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]


@pytest.fixture(scope="module")
def data(sample_dir, tmp_path_factory):
    """8 rows, 6 real locations: one lacks its 90° view (23 distinct views: an uneven split); one row is
    another's photos under a new uuid (4 repeated contents); one row has no view at all."""
    root = tmp_path_factory.mktemp("lumen") / "data"
    frame = pd.read_csv(sample_dir / "data.csv").head(6)
    for uuid in frame["uuid"]:
        shutil.copytree(sample_dir / "images" / uuid, root / "images" / uuid)
    (root / "images" / frame["uuid"][1] / "90.jpg").unlink()
    shutil.copytree(root / "images" / frame["uuid"][2], root / "images" / "copy-of-2")
    extra = frame.iloc[[2, 3]].assign(uuid=["copy-of-2", "no-views"])
    pd.concat([frame, extra], ignore_index=True).to_csv(root / "data.csv", index=False)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, prior_csv):
    """A small geocell + region checkpoint (the test backbone at 64 px; seeded random weights)."""
    lat, lon = load_points_csv(prior_csv)
    torch.manual_seed(0)
    config = ModelConfig.for_backbone("test_efficientnet", ["geocell", "region"], image_size=64,
                                      point_mode="weighted_mean", cells=build_grid(lat, lon).to_dict())
    return save_checkpoint(build_model(config), config, tmp_path_factory.mktemp("ckpt") / "small")


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    run = [sys.executable, "-m", "training", *args, *RANKS]
    return subprocess.run(run, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _rows(cache: emb.EmbeddingCache) -> Counter:
    lines = (cache.dir / "index.csv").read_text().splitlines()
    return Counter(tuple(line.split(",")[:2]) for line in lines)


def test_two_ranks_fill_the_cache_as_one_process_does(data, tmp_path):
    r = _cli("embed", "--data", str(data), *BACKBONE, "--mirror", "--cache-dir", str(tmp_path / "ranks"))
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert (summary["ranks"], summary["views"], summary["duplicates"], summary["locations"]) == (2, 23, 4, 8)

    model, name = embedding_model(backbone="test_efficientnet", weights="none", image_size=64, seed=3)
    one = embed_datasets([data], model, name, cache_dir=tmp_path / "one", mirror=True, workers=0)
    assert (one["ranks"], one["views"], one["duplicates"]) == (1, 23, 4)

    ranks, single = emb.EmbeddingCache(tmp_path / "ranks"), emb.EmbeddingCache(tmp_path / "one")
    written = _rows(ranks)
    assert len(written) == 2 * 23 and set(written.values()) == {1}, "each view and mirror stored once"
    assert set(written) == set(_rows(single))
    shards = {ranks.locate(key, kind)[0] for key, kind in written}
    assert len(shards) >= 2, "each rank writes its own shard"
    for key, kind in written:
        assert np.allclose(ranks.get(key, kind), single.get(key, kind), atol=1e-5)

    # the keys are training's: a frame's location_keys find every present view in the cache
    frame = pd.read_csv(data / "data.csv", dtype={"uuid": str})
    keys = emb.location_keys(data, frame, name, emb.weights_hash(model.backbone), 64, model.config.mean,
                             model.config.std)
    assert sum(len(k) for k in keys) == 27 and all(ranks.has(key) for k in keys for key in k.values())


def test_two_ranks_predict_the_same_csv_in_the_same_order(data, checkpoint, tmp_path):
    out = str(tmp_path / "ranks.csv")
    r = _cli("predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out", out, "--batch-size=2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (tmp_path / ".ranks.csv.parts").exists(), "the part files are removed after the merge"
    ranks = pd.read_csv(out, dtype={"uuid": str})
    one = predict_locations(checkpoint, data)
    assert list(ranks.columns) == ["uuid", "latitude", "longitude"]
    assert ranks["uuid"].tolist() == one["uuid"].tolist()
    assert ranks[["latitude", "longitude"]].isna().sum().tolist() == [1, 1]  # the location without views
    assert np.allclose(ranks[["latitude", "longitude"]], one[["latitude", "longitude"]], atol=1e-5,
                       equal_nan=True)
    assert ranks["latitude"].nunique() > 3  # real, distinct predictions: a shuffled order would show


def test_distributed_flags_refuse_what_they_cannot_split(data, tmp_path, capsys):
    panorama = str(data / "images" / "copy-of-2" / "0.jpg")
    assert main(["predict", "--panorama", panorama, "--out", str(tmp_path / "p.csv"), *RANKS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "panoramas" in err and not (tmp_path / "p.csv").exists()
