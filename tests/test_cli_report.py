"""A run reports what it made: epochs (1-based) and why it stopped, mean km beside the mean-coordinate
baseline, and a plain warning for a useless model, in the log and the result JSON; Lightning's noise stays
in the full log."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import copy_locations

from training.config import TrainConfig
from training.report import COLLAPSED, warnings_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny(sample_dir, tmp_path_factory):
    return copy_locations(sample_dir, pd.read_csv(sample_dir / "data.csv").head(12),
                          tmp_path_factory.mktemp("tiny"))


def test_useless_model_is_warned_in_output_and_json(tiny, tmp_path):
    out = tmp_path / "useless"
    r = subprocess.run(
        [sys.executable, "-m", "training", "train", "--task", "multi", "--data", str(tiny), "--out", str(out),
         "--backbone", "test_efficientnet", "--pretrained", "none", "--image-size", "64", "--max-epochs", "1",
         "--cache-dir", str(tmp_path / "cache")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    result = json.loads(lines[-1])  # the last stdout line is the result JSON
    report = result["report"]
    assert report["warnings"] and report["epochs_run"] == 1 and report["kept_epoch"] == 1
    assert "1-based" in report["epoch_convention"] and "fixed 1 epochs" in report["stopped"]
    accuracy = report["accuracy"]
    assert accuracy["locations"] == 12 and "training locations" in accuracy["evaluated_on"]
    assert accuracy["mean_km"] >= 0.95 * accuracy["baseline_mean_km"] or accuracy["top_county_share"] > 0.6
    shown = [line for line in lines if line.startswith("[geodemo] WARNING: ")]
    assert shown and shown[0].removeprefix("[geodemo] WARNING: ") == report["warnings"][0]
    for noise in ("GPU available", "litlogger", "_pytree", "Epoch 0/"):
        assert noise not in r.stdout + r.stderr, noise
    assert "GPU available" in (out / "logs" / "train.log").read_text()  # kept in the full log
    assert json.loads((out / "config.json").read_text())["metrics"]["report"] == report


def test_early_stopping_reports_the_kept_epoch_one_based(tiny, tmp_path):
    from training.fit import train

    cfg = TrainConfig(tasks=["geocell"], backbone="test_efficientnet", weights="none", image_size=64,
                      max_epochs=4, batch_size=4, num_workers=0, val_fraction=0.25, select_best=True,
                      patience=0, lr=0.5)
    out = train(tiny, tmp_path / "ckpt", cfg, enable_progress_bar=False, cache_dir=tmp_path / "cache")
    metrics = json.loads((out / "config.json").read_text())["metrics"]
    report = metrics["report"]
    assert 1 <= report["kept_epoch"] <= report["epochs_run"] <= 4 and metrics["epoch"] == report["kept_epoch"]
    accuracy = report["accuracy"]
    assert accuracy["evaluated_on"].startswith("validation") and accuracy["locations"] == 3
    if report["epochs_run"] < 4:
        assert report["stopped"].startswith("early stopping")


def test_warnings_follow_the_figures():
    good = {"evaluated_on": "validation locations (held out)", "locations": 40, "mean_km": 60.0,
            "baseline_mean_km": 110.0, "top_county": "Grad Zagreb", "top_county_share": 0.2,
            "top_place_share": 0.05, "true_counties": 15}
    assert warnings_for(good) == []
    assert "no better" in warnings_for({**good, "mean_km": 108.0})[0]
    collapsed = warnings_for({**good, "top_county_share": COLLAPSED + 0.1})
    assert len(collapsed) == 1 and "Grad Zagreb" in collapsed[0]
    assert warnings_for({**good, "top_county_share": 0.9, "true_counties": 1}) == []  # all truly in one
