"""The training CLI and library end to end on tiny budgets (test backbone, 64 px, 1-2 batches)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from geodemo.images import load_rgb
from training import cache as emb
from training import fill
from training.config import TrainConfig, tasks_for
from training.evaluate import CONTRACT_KEYS, evaluate
from training.fit import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(backbone="test_efficientnet", weights="none", image_size=64, max_epochs=1, batch_size=4)


def tiny_copy(sample_dir, dst, n=10):
    """The first n locations of the real sample, copied (so they can be modified)."""
    frame = pd.read_csv(sample_dir / "data.csv").head(n)
    for uuid in frame["uuid"]:
        shutil.copytree(sample_dir / "images" / uuid, dst / "images" / uuid)
    frame.to_csv(dst / "data.csv", index=False)
    return dst


@pytest.fixture(scope="module")
def tiny(sample_dir, tmp_path_factory):
    return tiny_copy(sample_dir, tmp_path_factory.mktemp("tiny"))


def cli(*args, cwd=REPO, env_extra=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "training", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_train_evaluate_predict(tiny, tmp_path, prior_csv):
    ckpt, out = tmp_path / "ckpt", tmp_path / "eval.json"
    r = cli(
        "train",
        "--task",
        "multi",
        "--data",
        tiny,
        "--out",
        ckpt,
        "--prior",
        prior_csv,
        "--backbone",
        "test_efficientnet",
        "--image-size",
        64,
        "--max-epochs",
        1,
        "--batch-size",
        4,
        "--limit-train-batches",
        2,
        "--limit-val-batches",
        1,
        "--val-fraction",  # the recipe trains on every location; a split gives the progress file a history
        0.2,
        "--no-progress-bar",
        "--progress-file",
        tmp_path / "progress.json",
        "--cache-dir",
        tmp_path / "cache",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "config.json").is_file()
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["done"] and progress["error"] is None and progress["history"][0]["val/mean_km"] > 0
    config = json.loads((ckpt / "config.json").read_text())
    assert config["tasks"] == ["geocell", "region", "heading"] and config["cells"] and config["training"]

    r = cli("evaluate", "--checkpoint", ckpt, "--data", tiny, "--out", out, "--limit", 4)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads(out.read_text())
    assert set(metrics) == set(CONTRACT_KEYS) | {"heading_maae_deg"} and metrics["count"] == 4
    table = pd.read_csv(out.with_suffix(".csv"))
    assert {
        "uuid",
        "true_lat",
        "true_lon",
        "pred_lat",
        "pred_lon",
        "error_km",
        "true_county",
        "pred_county",
    } <= set(table.columns)

    cams = tmp_path / "cams"
    gradcam = ("--gradcam-dir", cams, "--gradcam-limit", "1")
    r = cli("predict", "--checkpoint", ckpt, "--data", tiny, "--out", tmp_path / "preds.csv", *gradcam)
    assert r.returncode == 0, r.stderr[-2000:]
    preds = pd.read_csv(tmp_path / "preds.csv")
    assert list(preds.columns) == ["uuid", "latitude", "longitude"] and len(preds) == 10
    first = preds.uuid[0]  # one overlay per view of the first location, named <uuid>_<heading>.jpg
    assert sorted(p.name for p in cams.iterdir()) == sorted(f"{first}_{h}.jpg" for h in (0, 90, 180, 270))

    from training.export import export_onnx  # ONNX export checks onnxruntime against eager PyTorch itself

    assert export_onnx(ckpt, tmp_path / "model.onnx")["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("task", ["geocell", "coords", "region", "heading"])
def test_every_geo_task_trains_and_evaluates(task, tiny, tmp_path):
    cfg = TrainConfig(tasks=tasks_for(task), haversine_tau_km=75.0, **TINY)
    ckpt = train(
        tiny,
        tmp_path / task,
        cfg,
        limit_train_batches=2,
        limit_val_batches=1,
        cache_dir=tmp_path / "cache",
        enable_progress_bar=False,
    )
    metrics, table = evaluate(ckpt, tiny, limit=3)
    expected = set(CONTRACT_KEYS) | ({"heading_maae_deg"} if task == "heading" else set())
    assert set(metrics) == expected and metrics["count"] == 3 and len(table) == 3
    if task != "heading":
        assert 0 < metrics["mean_km"] < 1000


def test_training_on_every_location_keeps_the_last_weights(tiny, tmp_path):
    """The default checkpoint's recipe: no validation split, fixed epochs, last weights."""
    recipe = {**TINY, "max_epochs": 2}
    cfg = TrainConfig(tasks=tasks_for("multi"), val_fraction=0.0, select_best=False, **recipe)
    ckpt = train(tiny, tmp_path / "all", cfg, cache_dir=tmp_path / "cache", enable_progress_bar=False)
    config = json.loads((ckpt / "config.json").read_text())
    assert config["metrics"]["train_locations"] == 10 and config["metrics"]["val_locations"] == 0
    assert not (ckpt / "lightning" / "best.ckpt").exists()
    metrics, _ = evaluate(ckpt, tiny, limit=2)
    assert metrics["count"] == 2 and 0 < metrics["mean_km"] < 1000


def test_validation_km_equal_evaluate_km_on_the_same_locations(tiny, tmp_path):
    """Training validation and `evaluate` share one output->point rule (geodemo.readout)."""
    from geodemo.data import read_locations

    uuids = list(read_locations(tiny)["uuid"])
    cfg = TrainConfig(tasks=tasks_for("multi"), haversine_tau_km=75.0, **{**TINY, "max_epochs": 2})
    ckpt = train(
        tiny,
        tmp_path / "m",
        cfg,
        train_uuids=uuids[:6],
        val_uuids=uuids[6:],
        cache_dir=tmp_path / "cache",
        enable_progress_bar=False,
    )
    logged = json.loads((ckpt / "config.json").read_text())["metrics"]
    found, _ = evaluate(ckpt, tiny, uuids=uuids[6:])
    assert found["count"] == 4
    assert logged["mean_km"] == pytest.approx(found["mean_km"], abs=0.05)
    assert logged["county_acc"] == pytest.approx(found["county_accuracy"])


def test_unfrozen_training_runs_on_images_and_resumes(tiny, tmp_path, capsys):
    cfg = TrainConfig(tasks=["geocell"], unfreeze_epoch=0, **TINY)
    out = tmp_path / "unfrozen"
    train(tiny, out, cfg, limit_train_batches=1, limit_val_batches=1, enable_progress_bar=False)
    config = json.loads((out / "config.json").read_text())
    assert config["metrics"]["cache"]["used"] is False
    assert (out / "lightning" / "last.ckpt").is_file()
    train(tiny, out, cfg, limit_train_batches=1, limit_val_batches=1, enable_progress_bar=False)
    assert "resuming from" in capsys.readouterr().out


def _image_folder(root):
    rng = np.random.default_rng(0)
    for k, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for i in range(4):
            rgb = rng.integers(0, 60, (40, 40, 3), dtype=np.uint8)
            rgb[..., 2 * k] += 150
            Image.fromarray(rgb).save(root / name / f"{name}{i}.png")
    return root


def test_classify_train_evaluate_predict(tmp_path):
    data = _image_folder(tmp_path / "folder")
    cfg = TrainConfig(tasks=["classify"], focal=True, cbam=True, val_fraction=0.25, max_size_mb=10, **TINY)
    ckpt = train(data, tmp_path / "clf", cfg, enable_progress_bar=False)
    metrics, _ = evaluate(ckpt, data)
    assert set(metrics) == {"count", "accuracy", "macro_f1"} and metrics["count"] == 8
    cams = tmp_path / "cams"
    out = tmp_path / "sub.csv"
    r = cli("predict", "--checkpoint", ckpt, "--data", data, "--out", out, "--gradcam-dir", cams)
    assert r.returncode == 0, r.stderr[-2000:]
    submission = pd.read_csv(tmp_path / "sub.csv")
    assert list(submission.columns) == ["Id", "Category"]
    overlays = sorted(cams.glob("*.jpg"))  # <stem>_<class>.jpg, the class agreeing with the submission
    assert len(overlays) == len(submission) == 8
    expected = {f"{i}_{c}.jpg" for i, c in zip(submission.Id, submission.Category)}
    assert {o.name for o in overlays} == expected
    assert load_rgb(overlays[0]).shape == (64, 64, 3)
    with pytest.raises(ValueError, match="MB limit"):
        train(data, tmp_path / "big", TrainConfig(tasks=["classify"], max_size_mb=0.01, **TINY))


def test_cache_hits_on_second_run_and_misses_on_changed_file(tiny, tmp_path):
    from geodemo.data import read_locations
    from geodemo.model import GeoModel, ModelConfig

    model = GeoModel(ModelConfig.for_backbone("test_efficientnet", ["region"], image_size=64))
    frame = read_locations(tiny).head(3)
    cache = emb.EmbeddingCache(tmp_path / "cache")
    wkey = emb.weights_hash(model.backbone)
    keys = emb.location_keys(tiny, frame, "test_efficientnet", wkey, 64, model.config.mean, model.config.std)
    assert (
        fill.fill_cache(model, tiny, frame, keys, cache, 64, model.config.mean, model.config.std)["embedded"]
        == 3
    )

    def boom(*args, **kwargs):
        raise AssertionError("the backbone ran although every view was cached")

    model.backbone.forward = boom
    assert (
        fill.fill_cache(model, tiny, frame, keys, cache, 64, model.config.mean, model.config.std)["embedded"]
        == 0
    )
    feats, mask = emb.load_features(keys, cache)
    assert feats.shape[:3] == (3, 2, 4) and mask.all()

    view = next((tiny / "images" / frame["uuid"][0]).iterdir())
    copy = tmp_path / "changed"
    shutil.copytree(tiny, copy)
    rgb = np.asarray(Image.open(view)).copy()
    rgb[:8] = 0
    Image.fromarray(rgb).save(copy / "images" / frame["uuid"][0] / view.name)
    changed = emb.location_keys(
        copy, frame, "test_efficientnet", wkey, 64, model.config.mean, model.config.std
    )
    assert changed[0] != keys[0] and changed[1:] == keys[1:]
    other_size = emb.location_keys(
        tiny, frame, "test_efficientnet", wkey, 96, model.config.mean, model.config.std
    )
    assert other_size[1] != keys[1]


def test_validate_data_exit_codes(tiny, tmp_path):
    r = cli("validate-data", tiny)
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout[-2000:]
    broken = tmp_path / "broken"
    shutil.copytree(tiny, broken)
    view = next((broken / "images").iterdir()) / "0.jpg"
    view.write_bytes(view.read_bytes()[:200])  # truncated JPEG
    r = cli("validate-data", broken)
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr
    assert view.parent.name in r.stdout


def test_validate_data_missing_view_is_a_warning_unless_strict(tiny, tmp_path, capsys):
    from training.__main__ import main

    partial = tmp_path / "partial"
    shutil.copytree(tiny, partial)
    location = next((partial / "images").iterdir())
    (location / "90.jpg").unlink()
    assert main(["validate-data", str(partial), "--no-images"]) == 0  # 1-3 views are usable
    assert main(["validate-data", str(partial), "--no-images", "--strict"]) == 1
    out = capsys.readouterr().out
    assert location.name in out and "90" in out


def test_user_errors_are_one_line_without_traceback(tiny, tmp_path, capsys):
    from training.__main__ import main

    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(tmp_path / "missing"),
                "--data",
                str(tiny),
                "--out",
                str(tmp_path / "x.json"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert (
        main(
            [
                "train",
                "--task",
                "geocell",
                "--data",
                str(tmp_path / "nothing"),
                "--out",
                str(tmp_path / "o"),
                "--backbone",
                "test_efficientnet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error:") and "data.csv" in err
