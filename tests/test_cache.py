"""The embedding cache: memory-mapped shards + index, file fingerprints, duplicates, mirrors, kill -9."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from geodemo.data import read_locations
from training import cache as emb
from training import fill

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64

# Run as a script: fill the cache at argv[2] from the dataset at argv[1], slowly (flushes every batch).
FILLER = """
import sys, time, torch
from geodemo.data import read_locations
from geodemo.model import GeoModel, ModelConfig
from training import cache as emb, fill
torch.manual_seed(0)
model = GeoModel(ModelConfig.for_backbone("test_efficientnet", ["region"], image_size=64))
frame = read_locations(sys.argv[1])
cache = emb.EmbeddingCache(sys.argv[2])
keys = emb.location_keys(sys.argv[1], frame, "t", emb.weights_hash(model.backbone), 64, model.config.mean,
                         model.config.std, emb.FileHashes(sys.argv[2]))
pause = float(sys.argv[3])
fill.fill_cache(model, sys.argv[1], frame, keys, cache, 64, model.config.mean, model.config.std, batch_size=4,
                workers=0, engine="torch", flush_rows=4, progress=lambda done, total: time.sleep(pause))
"""


def _model():
    from geodemo.model import GeoModel, ModelConfig

    torch.manual_seed(0)
    return GeoModel(ModelConfig.for_backbone("test_efficientnet", ["region"], image_size=SIZE)).eval()


def _keys(data, model, root):
    frame = read_locations(data)
    wkey = emb.weights_hash(model.backbone)
    mean, std = model.config.mean, model.config.std
    return frame, emb.location_keys(data, frame, "t", wkey, SIZE, mean, std, emb.FileHashes(root))


def _fill(model, data, frame, keys, cache, **kwargs):
    kwargs = {"workers": 0, "engine": "torch", **kwargs}
    return fill.fill_cache(
        model, data, frame, keys, cache, SIZE, model.config.mean, model.config.std, **kwargs
    )


@pytest.fixture()
def data(sample_copy):
    """Six real locations, copied (files get their own mtimes)."""
    return sample_copy(6)


def test_views_are_embedded_once_mirrors_only_on_request_and_read_lazily(data, tmp_path):
    model = _model()
    frame, keys = _keys(data, model, tmp_path / "c")
    cache = emb.EmbeddingCache(tmp_path / "c")
    stats = _fill(model, data, frame, keys, cache, mirror=False)
    assert stats["views"] == sum(len(k) for k in keys) and stats["embedded"] == len(frame)
    assert not cache.has(keys[0][0], "mirror")
    with pytest.raises(KeyError, match="fill it first"):
        emb.FeatureBank(keys, cache, mirror=True)
    bank = emb.FeatureBank(keys, cache)
    with pytest.raises(ValueError, match="mirror=True"):
        emb.CachedLocationDataset(None, bank, bank.mask, hflip=True)
    # the stored rows are the backbone's features of the eval crop, in a few shards, not one file per view
    feats = bank.materialise()
    assert feats.shape == (len(frame), 1, 4, bank.dim) and bank.mask.all()
    assert len(list((cache.dir / "shards").glob("*.npy"))) == 1
    from geodemo.dataset import LocationDataset

    views = LocationDataset(data, frame.head(2), SIZE, model.config.mean, model.config.std)[1]["views"]
    with torch.inference_mode():
        want = model.backbone(views)
    torch.testing.assert_close(feats[1, 0], want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(bank[1], feats[1])
    # a recipe with flips adds only the mirrors
    again = _fill(model, data, frame, keys, cache, mirror=True)
    assert again["views"] == stats["views"]
    both = emb.FeatureBank(keys, cache, mirror=True).materialise()
    torch.testing.assert_close(both[:, 0], feats[:, 0])
    with torch.inference_mode():
        torch.testing.assert_close(both[1, 1], model.backbone(views.flip(-1)), atol=1e-4, rtol=1e-4)
    assert _fill(model, data, frame, keys, cache, mirror=True)["views"] == 0


def test_duplicate_files_are_embedded_once_and_onnx_matches_torch(data, tmp_path):
    uid = read_locations(data)["uuid"][0]
    twin = data / "images" / "twin"
    twin.mkdir()
    for view in (data / "images" / uid).iterdir():
        os.link(view, twin / view.name)  # hard links: the competition-size benchmark's duplicates
    frame = read_locations(data)
    pd.concat([frame, frame.head(1).assign(uuid="twin")]).to_csv(data / "data.csv", index=False)
    model = _model()
    frame, keys = _keys(data, model, tmp_path / "c")
    assert keys[-1] == keys[0]
    cache = emb.EmbeddingCache(tmp_path / "c")
    stats = _fill(model, data, frame, keys, cache, mirror=False, engine=None)
    assert stats["engine"] == "onnx" and stats["duplicates"] == len(keys[0])
    assert stats["views"] == sum(len(k) for k in keys) - len(keys[0])
    reference = emb.EmbeddingCache(tmp_path / "ref")
    _fill(model, data, frame, keys, reference, mirror=False)
    np.testing.assert_allclose(
        emb.load_features(keys, cache, mirror=False)[0],
        emb.load_features(keys, reference, mirror=False)[0],
        atol=1e-3,
    )


def test_unchanged_files_are_not_read_again_and_changed_ones_are(data, tmp_path, monkeypatch):
    model = _model()
    frame, keys = _keys(data, model, tmp_path / "c")

    def boom(path):
        raise AssertionError(f"{path} was read although its path, size and mtime are unchanged")

    monkeypatch.setattr(emb, "file_sha1", boom)
    assert _keys(data, model, tmp_path / "c")[1] == keys  # a new process: the fingerprints come from disk
    monkeypatch.undo()
    view = data / "images" / frame["uuid"][2] / "90.jpg"
    view.write_bytes(view.read_bytes() + b"\0")  # same picture, other bytes: a new key
    changed = _keys(data, model, tmp_path / "c")[1]
    assert changed[2][1] != keys[2][1] and changed[2][0] == keys[2][0] and changed[3] == keys[3]


def _filler(data, root, pause: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.Popen(
        [sys.executable, "-c", FILLER, str(data), str(root), str(pause)], cwd=REPO, env=env
    )


def test_a_fill_killed_mid_way_leaves_a_usable_cache_that_the_next_fill_completes(data, tmp_path):
    root = tmp_path / "c"
    index = root / emb.STORE / "index.csv"
    proc = _filler(data, root, pause=1.0)
    deadline = time.time() + 120
    while time.time() < deadline and (not index.exists() or index.read_text().count("\n") < 8):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    with open(index, "ab") as f:  # as if a writer died in the middle of appending its index line
        f.write(b"deadbeef,pla")
    stale = root / emb.STORE / "shards" / f".1-{proc.pid}-dead.tmp"  # a shard it never finished
    stale.write_bytes(b"partial")
    model = _model()
    frame, keys = _keys(data, model, root)
    cache = emb.EmbeddingCache(root)
    unique = {key for k in keys for key in k.values()}
    left = {key for key in unique if not (cache.has(key, "plain") and cache.has(key, "mirror"))}
    assert 0 < len(left) < len(unique)
    stats = _fill(model, data, frame, keys, cache)
    assert stats["views"] == len(left) and not stale.exists()
    reference = emb.EmbeddingCache(tmp_path / "ref")
    _fill(model, data, frame, keys, reference)
    torch.testing.assert_close(emb.load_features(keys, cache)[0], emb.load_features(keys, reference)[0])
    lines = index.read_text().splitlines()  # the next writer cut the torn line off
    assert all(len(line.split(",")) == 4 for line in lines) and not any("deadbeef" in x for x in lines)


def test_two_writers_at_once_leave_one_consistent_cache(data, tmp_path):
    root = tmp_path / "c"
    procs = [_filler(data, root, pause=0.0) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    model = _model()
    frame, keys = _keys(data, model, root)
    reference = emb.EmbeddingCache(tmp_path / "ref")
    _fill(model, data, frame, keys, reference)
    cache = emb.EmbeddingCache(root)
    torch.testing.assert_close(emb.load_features(keys, cache)[0], emb.load_features(keys, reference)[0])


def test_frozen_epochs_before_unfreeze_read_the_cache_then_images(data, tmp_path, monkeypatch):
    from training.config import TrainConfig
    from training.fit import train
    from training.tasks import GeoTask

    seen = []
    forward_batch = GeoTask.forward_batch

    def record(self, batch):
        if self.training:
            trainable = any(p.requires_grad for p in self.model.backbone.parameters())
            seen.append((self.current_epoch, "feats" in batch, trainable))
        return forward_batch(self, batch)

    monkeypatch.setattr(GeoTask, "forward_batch", record)
    cfg = TrainConfig(
        tasks=["geocell"],
        backbone="test_efficientnet",
        weights="none",
        image_size=SIZE,
        max_epochs=2,
        unfreeze_epoch=1,
        batch_size=2,
        num_workers=0,
    )
    out = train(
        data,
        tmp_path / "ckpt",
        cfg,
        limit_train_batches=1,
        limit_val_batches=1,
        enable_progress_bar=False,
        cache_dir=tmp_path / "c",
    )
    assert seen == [(0, True, False), (1, False, True)]  # epoch 0: frozen, cached; epoch 1: images, trained
    import json

    assert json.loads((out / "config.json").read_text())["metrics"]["cache"]["used"] is True


def test_view_crops_are_the_eval_transform_in_uint8(sample_dir):
    """The fill's decode (uint8, no albumentations) gives exactly the eval transform's pixels."""
    from geodemo.dataset import build_transform
    from geodemo.images import load_rgb

    paths = sorted((sample_dir / "images").glob("*/*.jpg"))[:4]
    transform = build_transform(SIZE, (0.0, 0.0, 0.0), (1 / 255,) * 3, train=False)  # 0..255 as float
    crops = fill.ViewCrops(paths, SIZE)
    for i, path in enumerate(paths):
        want = transform(image=load_rgb(path, min_side=SIZE))["image"]
        assert crops[i].dtype == torch.uint8 and torch.allclose(crops[i].float(), want, atol=1e-3)
