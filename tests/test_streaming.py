"""litdata chunks (training.streaming): optimize the real sample, train from the chunks, same tensors."""

import json

import pandas as pd
import pytest
import torch
from test_training_cli import cli, tiny_copy

from geodemo.data import read_locations
from geodemo.dataset import LocationDataset
from training import sources, streaming
from training.sources import data_fingerprint
from training.streaming import chunk_dataset

SIZE = 64
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def source(sample_dir, tmp_path_factory):
    """8 real sample locations; one of them lacks its west view (a partial location)."""
    root = tiny_copy(sample_dir, tmp_path_factory.mktemp("source"), n=8)
    first = pd.read_csv(root / "data.csv")["uuid"][0]
    (root / "images" / first / "270.jpg").unlink()
    return root


@pytest.fixture(scope="module")
def chunks(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("chunks") / "lumen"
    r = cli("optimize", "--data", source, "--out", out, "--image-size", SIZE, "--num-workers", 2)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {
        "chunks": str(out), "locations": 8, "views": 31, "image_size": SIZE}
    return out


def test_optimize_writes_litdata_chunks_with_every_location(chunks, source):
    assert sources.is_chunks(chunks) and list(chunks.glob("chunk-*.bin"))
    assert sorted(read_locations(chunks)["uuid"]) == sorted(read_locations(source)["uuid"])
    # data.csv follows litdata's item order: row i is item i
    assert streaming.item_uuids(chunks) == read_locations(chunks)["uuid"].tolist()
    assert json.loads((chunks / "chunks.json").read_text())["sources"][0]["fingerprint"] == data_fingerprint(
        source)


def test_chunk_items_decode_to_the_image_paths_tensors(chunks, source):
    frame = read_locations(source)
    images = LocationDataset(source, frame, SIZE, MEAN, STD)
    from_chunks = chunk_dataset(chunks, LocationDataset(chunks, frame, SIZE, MEAN, STD), False, 0)
    items = {item["uuid"]: item for item in from_chunks}
    assert sorted(items) == sorted(frame["uuid"])
    for i, uuid in enumerate(frame["uuid"]):
        want, got = images[i], items[uuid]
        assert set(got) == set(want) and got["views"].shape == want["views"].shape == (4, 3, SIZE, SIZE)
        for key in ("view_mask", "cell", "county", "xy", "tabular", "lat", "lon"):
            assert torch.equal(got[key], want[key]), key
        assert torch.equal(got["heading"].isnan(), want["heading"].isnan())
        # same pixels up to the JPEG re-encoding (quality 95: ~2 levels of 255, 0.035 after normalising);
        # another location differs by far more
        error = (got["views"] - want["views"]).abs().mean().item()
        other = (got["views"] - images[(i + 1) % len(frame)]["views"]).abs().mean().item()
        assert error < 0.05 and other > 10 * error, (error, other)
    assert not items[frame["uuid"][0]]["view_mask"][3]  # the missing west view stays missing


def test_train_one_epoch_from_chunks(chunks, tmp_path):
    ckpt = tmp_path / "ckpt"
    r = cli("train", "--task", "multi", "--data", chunks, "--out", ckpt, "--backbone", "test_efficientnet",
            "--image-size", SIZE, "--max-epochs", 1, "--batch-size", 4, "--num-workers", 1,
            "--val-fraction", 0.25, "--no-progress-bar", "--cache-dir", tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-2000:]
    config = json.loads((ckpt / "config.json").read_text())
    metrics = config["metrics"]
    assert metrics["train_locations"] + metrics["val_locations"] == 8 and metrics["cache"]["used"] is False
    assert metrics["loss"] > 0 and metrics["mean_km"] > 0
    assert config["data_fingerprint"] == data_fingerprint(chunks)
    last_step = pd.read_csv(ckpt / "logs" / "csv" / "version_0" / "metrics.csv")["step"].max()  # 0-based
    assert last_step + 1 == -(-metrics["train_locations"] // 4)  # every training location streamed once


def test_chunks_that_are_too_small_or_combined_are_refused(chunks, source, tmp_path):
    r = cli("train", "--task", "multi", "--data", chunks, "--data", source, "--out", tmp_path / "c")
    assert r.returncode == 2 and "litdata chunks" in r.stderr and "Traceback" not in r.stderr
    frame = read_locations(source)
    with pytest.raises(ValueError, match="rerun `optimize` with --image-size 96"):
        chunk_dataset(chunks, LocationDataset(chunks, frame, 96, MEAN, STD), False, 0)


def test_train_from_chunks_in_object_storage(chunks, tmp_path):
    """A storage URL (litdata's `local:` scheme stands in for s3://): metadata copied, chunks streamed."""
    ckpt, cache = tmp_path / "ckpt", tmp_path / "cache"
    r = cli("train", "--task", "multi", "--data", f"local:{chunks}", "--out", ckpt, "--backbone",
            "test_efficientnet", "--image-size", SIZE, "--max-epochs", 1, "--batch-size", 4,
            "--num-workers", 0, "--val-fraction", 0.25, "--no-progress-bar", "--cache-dir", cache)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((ckpt / "config.json").read_text())["metrics"]
    assert metrics["train_locations"] + metrics["val_locations"] == 8 and metrics["loss"] > 0
    (meta,) = [p for p in (cache / "remote-chunks").iterdir() if (p / streaming.REMOTE).is_file()]
    assert json.loads((meta / streaming.REMOTE).read_text()) == {"url": f"local:{chunks}"}
    assert (meta / "data.csv").read_bytes() == (chunks / "data.csv").read_bytes()
    assert list(meta.with_name(meta.name + "-cache").rglob("chunk-*.bin"))  # streamed into the local cache
    missing = cli("train", "--task", "multi", "--data", f"local:{tmp_path / 'nowhere'}",
                  "--out", tmp_path / "x", "--backbone", "test_efficientnet", "--cache-dir", cache)
    assert missing.returncode == 1 and "could not read" in missing.stderr
    assert "Traceback" not in missing.stderr
