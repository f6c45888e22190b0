"""`train --data A --data B` (uuids distinct, fingerprints recorded) and `train --init-from`, on real data."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from safetensors.torch import load_file

from geodemo.data import read_locations, view_paths
from geodemo.labels import LabelStore
from geodemo.progress import PROGRESS_PREFIX
from training.sources import data_fingerprint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--backbone", "test_efficientnet", "--image-size", "64", "--max-epochs", "1", "--batch-size", "4",
        "--no-progress-bar", "--task", "geocell"]


def cli(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "training", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def two_datasets(sample_dir, tmp_path_factory):
    """A: 10 sample locations (a LUMEN folder); B: "my labels", 6 locations labelled in the app's store
    from the same sample, two of which are also in A (so their uuids collide)."""
    import shutil

    root = tmp_path_factory.mktemp("multi")
    frame = read_locations(sample_dir)
    a = root / "sample"
    for uid in frame.uuid[:10]:
        shutil.copytree(sample_dir / "images" / uid, a / "images" / uid)
    frame[["uuid", "latitude", "longitude"]].head(10).to_csv(a / "data.csv", index=False)
    store = LabelStore(root / "labels")
    for row in frame.iloc[8:14].itertuples():  # rows 8, 9 are in A too
        views = {h: p for h, p in zip((0, 90, 180, 270), view_paths(sample_dir, row.uuid).values())}
        store.add(views, row.latitude, row.longitude, source_uuid=row.uuid)
    return a, store.root


def test_train_on_two_folders_then_refine_with_init_from(two_datasets, tmp_path):
    a, b = two_datasets
    first = tmp_path / "first"
    r = cli("train", "--data", a, "--data", b, "--out", first, *TINY, "--progress-file", tmp_path / "p.json")
    assert r.returncode == 0, r.stderr[-2000:]
    config = json.loads((first / "config.json").read_text())
    assert [s["path"] for s in config["data_sources"]] == [str(a.resolve()), str(b.resolve())]
    assert [s["fingerprint"] for s in config["data_sources"]] == [data_fingerprint(a), data_fingerprint(b)]
    assert [s["locations"] for s in config["data_sources"]] == [10, 6]
    assert config["metrics"]["train_locations"] + config["metrics"]["val_locations"] == 16
    merged = next(first.glob("data-*"))
    table = pd.read_csv(merged / "data.csv")
    assert table.uuid.is_unique and len(table) == 16
    collided = table[table.dataset == 1].dataset_uuid.isin(table[table.dataset == 0].uuid)
    assert collided.sum() == 2  # the two labels of A's locations: renamed, traced back by dataset_uuid
    assert all(u.startswith("d1-") for u in table[table.dataset == 1].uuid[collided])
    assert all(len(view_paths(merged, u)) == 4 for u in table.uuid)
    assert f"{PROGRESS_PREFIX}epoch 1 / 1 done" in r.stdout

    # refine: another seed (other random heads) and a finer grid (the geocell head changes shape)
    second = tmp_path / "second"
    r = cli("train", "--data", a, "--data", b, "--out", second, *TINY, "--seed", "7",
            "--grid-spacing-km", "25", "--init-from", first)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "init from first: loaded" in r.stdout and "re-initialised 2 tensor(s)" in r.stdout
    w1, w2 = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    backbone = [k for k in w1 if k.startswith("backbone.")]
    assert backbone and all((w1[k] == w2[k]).all() for k in backbone)  # frozen backbone = the first run's
    geocell = [k for k in w1 if "geocell" in k]
    assert geocell and any(w1[k].shape != w2[k].shape for k in geocell)
    assert json.loads((second / "config.json").read_text())["training"]["init_from"] == str(first.resolve())


def test_init_from_another_backbone_is_one_sentence(two_datasets, tmp_path):
    a, _ = two_datasets
    from geodemo.checkpoint import DEFAULT_CHECKPOINT

    r = cli("train", "--data", a, "--out", tmp_path / "x", *TINY, "--init-from", DEFAULT_CHECKPOINT)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "was trained with backbone" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_the_same_folder_twice_is_refused(two_datasets, tmp_path):
    a, _ = two_datasets
    r = cli("train", "--data", a, "--data", a, "--out", tmp_path / "x", *TINY)
    assert r.returncode == 1 and "given twice" in r.stderr and "Traceback" not in r.stderr


def test_the_train_form_trains_on_two_datasets(two_datasets, tmp_path):
    """What the Train tab submits (two ticked datasets) runs as a real job and trains on both."""
    from geodemo.jobform import train_args
    from geodemo.jobs import JobManager

    a, b = two_datasets
    params = {"task": "geocell", "backbone": "test_efficientnet", "datasets": [str(a), str(b)],
              "name": "both", "max_epochs": 1, "image_size": 64, "batch_size": 4, "lr": 1e-3,
              "unfreeze_epoch": -1, "accelerator": "cpu", "devices": 1}
    args, out = train_args(params, [a, b], tmp_path / "checkpoints", backbones=("test_efficientnet",))
    manager = JobManager(tmp_path / "jobs")
    try:
        job = manager.wait(manager.submit("train", args, out, reserve=True).id, timeout=600)
    finally:
        manager.shutdown()
    assert job.status == "done", manager.log_tail(job.id)
    sources = json.loads((out / "config.json").read_text())["data_sources"]
    assert [s["locations"] for s in sources] == [10, 6]
    assert "epoch 1 / 1 done" in manager.curated_log(job.id) and "Tip" not in manager.curated_log(job.id)
