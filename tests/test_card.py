"""The model card: README.md in every checkpoint folder, in the Hub's format, written by train, updated by
evaluate --update-card; the bundled checkpoint's card matches BENCHMARKS.md."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import copy_locations

from geodemo.checkpoint import DEFAULT_CHECKPOINT
from training.card import CardError, add_evaluation, read_evaluations, write_card
from training.config import TrainConfig
from training.fit import train

REPO = Path(__file__).resolve().parents[1]
CV_RESULTS = REPO / "benchmarks" / "research" / "results" / "cv_calibration_shipped.json"
TINY = dict(backbone="test_efficientnet", weights="none", image_size=64, max_epochs=1, batch_size=4)


def front_matter(path: Path) -> tuple[dict, str]:
    """(YAML front matter, body) of a card, parsed here with PyYAML alone (as the Hub does)."""
    text = path.read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
    assert match, f"{path} has no YAML front matter"
    return yaml.safe_load(match.group(1)), match.group(2)


def index_metrics(meta: dict) -> dict[tuple[str, str], dict[str, float]]:
    """(dataset name, split) -> {metric type: value} from the model-index."""
    found = {}
    for result in meta["model-index"][0]["results"]:
        key = (result["dataset"]["name"], result["dataset"].get("split"))
        found.setdefault(key, {}).update({m["type"]: m["value"] for m in result["metrics"]})
    return found


@pytest.fixture()
def ckpt(tmp_path):
    out = tmp_path / "my-model"
    shutil.copytree(DEFAULT_CHECKPOINT, out, ignore=shutil.ignore_patterns("README.md"))
    return out


def test_card_front_matter_and_body_come_from_config(ckpt):
    write_card(ckpt)
    meta, body = front_matter(ckpt / "README.md")
    config = json.loads((ckpt / "config.json").read_text())
    assert meta["library_name"] == "geodemo" and meta["license"] == "mit"
    assert meta["pipeline_tag"] == "image-classification"
    assert {"geolocation", "croatia", config["backbone"]} <= set(meta["tags"])
    assert config["backbone"] in body and config["data_fingerprint"] in body
    assert f"{len(config['train_locations']['uuid'])} locations" in body
    assert f"read-out temperature {config['temperature']}" in body
    assert "No held-out evaluation yet" in body  # trained on all its data: nothing to claim


def test_evaluations_are_appended_and_replace_the_same_dataset(ckpt):
    write_card(ckpt)
    first = {"count": 10, "mean_km": 90.0, "median_km": 80.0, "geoscore": 4700.0, "region_coverage_90": 0.8,
             "acc_10km": 0.1, "county_report": [], "train_overlap": 0}
    add_evaluation(ckpt, first, "zagreb-2025")
    add_evaluation(ckpt, {**first, "mean_km": 70.0}, "split-2025")
    add_evaluation(ckpt, {**first, "mean_km": 60.0}, "zagreb-2025")  # a rerun replaces its dataset's entry
    meta, body = front_matter(ckpt / "README.md")
    metrics = index_metrics(meta)
    assert metrics[("zagreb-2025", "evaluate")]["mean_km"] == 60.0
    assert metrics[("split-2025", "evaluate")]["mean_km"] == 70.0
    assert metrics[("split-2025", "evaluate")]["region_coverage_90"] == 0.8
    assert "count" not in metrics[("split-2025", "evaluate")]  # counts live in the table, not as metrics
    assert [e["dataset"] for e in read_evaluations(ckpt)] == ["split-2025", "zagreb-2025"]
    assert "| split-2025 | evaluate |" in body and "| 60.0 |" in body and "| 90.0 |" not in body


def test_card_refusals(ckpt, tmp_path):
    with pytest.raises(CardError, match="no figure a card can show"):
        add_evaluation(ckpt, {"count": 3, "accuracy": 0.5}, "x")
    with pytest.raises(CardError, match="has no config.json"):
        write_card(tmp_path)
    (ckpt / "README.md").write_text("---\nlibrary_name: geodemo\n  bad: [yaml\n---\n")
    with pytest.raises(CardError, match="not a readable model card"):
        read_evaluations(ckpt)
    done = subprocess.run([sys.executable, "-m", "training", "card", "--checkpoint", str(tmp_path / "none")],
                          cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, text=True)
    assert done.returncode == 2 and "has no config.json" in done.stderr and "Traceback" not in done.stderr


def test_evaluate_update_card_appends_its_figures(ckpt, sample_dir, tmp_path):
    out = tmp_path / "m.json"
    done = subprocess.run(
        [sys.executable, "-m", "training", "evaluate", "--checkpoint", str(ckpt), "--data", str(sample_dir),
         "--out", str(out), "--limit", "3", "--update-card", "--dataset-name", "first three"],
        cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(out.read_text())
    meta, body = front_matter(ckpt / "README.md")
    figures = index_metrics(meta)[("first three", "evaluate")]
    for key in ("mean_km", "geoscore", "acc_10km", "region_coverage_90", "expected_error_ratio"):
        assert figures[key] == pytest.approx(found[key], abs=1e-4)
    assert "| first three | evaluate |" in body and "| 3 |" in body  # 3 locations, all seen in training


def test_train_writes_a_card_with_its_held_out_figures(sample_dir, tmp_path):
    data = copy_locations(sample_dir, pd.read_csv(sample_dir / "data.csv").head(8), tmp_path / "data")
    cfg = TrainConfig(tasks=["geocell"], val_fraction=0.5, select_best=False, num_workers=0, **TINY)
    out = train(data, tmp_path / "ckpt", cfg, enable_progress_bar=False)
    meta, body = front_matter(Path(out) / "README.md")
    config = json.loads((Path(out) / "config.json").read_text())
    (dataset, split), figures = next(iter(index_metrics(meta).items()))
    assert dataset == "data" and "held-out validation split" in split and "(4 locations)" in split
    assert figures["mean_km"] == pytest.approx(config["metrics"]["mean_km"], abs=1e-3)
    assert "test_efficientnet" in body


def test_the_bundled_card_matches_benchmarks():
    """The bundled checkpoint's card: front matter parses, and its cross-validated figures are the ones
    BENCHMARKS.md quotes (both from
    benchmarks/research/results/cv_calibration_shipped.json)."""
    meta, body = front_matter(DEFAULT_CHECKPOINT / "README.md")
    assert meta["library_name"] == "geodemo" and meta["pipeline_tag"] == "image-classification"
    cv = json.loads(CV_RESULTS.read_text())
    (_, split), figures = next((k, v) for k, v in index_metrics(meta).items() if "cross-validation" in k[1])
    for key in ("mean_km", "median_km", "geoscore", "region_coverage_50", "region_coverage_90",
                "expected_error_ratio", "acc_10km", "county_accuracy"):
        assert figures[key] == pytest.approx(cv[key], abs=1e-4), key
    benchmarks = (REPO / "BENCHMARKS.md").read_text()
    assert f"{cv['mean_km']:.1f}" in benchmarks and f"{cv['region_coverage_90']:.0%}" in benchmarks
    assert f"{cv['expected_error_ratio']:.2f}" in benchmarks and f"{cv['geoscore']:.0f}" in benchmarks
