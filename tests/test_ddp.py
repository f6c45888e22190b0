"""DDP on two CPU processes (gloo) from the same CLI writes a checkpoint that evaluate loads."""

import json
import os
import shutil
import subprocess
import sys

import pandas as pd

from training.evaluate import evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ddp_two_cpu_processes(sample_dir, tmp_path):
    data = tmp_path / "data"
    frame = pd.read_csv(sample_dir / "data.csv").head(12)
    for uuid in frame["uuid"]:
        shutil.copytree(sample_dir / "images" / uuid, data / "images" / uuid)
    frame.to_csv(data / "data.csv", index=False)
    ckpt = tmp_path / "ckpt"
    env = dict(os.environ, HF_HUB_OFFLINE="1", GEODEMO_CACHE_DIR=str(tmp_path / "cache"))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "train",
            "--task",
            "multi",
            "--data",
            str(data),
            "--out",
            str(ckpt),
            "--backbone",
            "test_efficientnet",
            "--image-size",
            "64",
            "--max-epochs",
            "1",
            "--batch-size",
            "2",
            "--limit-train-batches",
            "2",
            "--limit-val-batches",
            "1",
            "--val-fraction",  # the recipe trains on every location; a split gives mean_km to check
            "0.25",
            "--accelerator",
            "cpu",
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--no-progress-bar",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((ckpt / "config.json").read_text())["metrics"]["mean_km"] > 0
    metrics, _ = evaluate(ckpt, data, limit=2)
    assert metrics["count"] == 2 and metrics["mean_km"] > 0
