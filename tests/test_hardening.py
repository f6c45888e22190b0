"""Issue 10: bounded memory and disk, and a clear error with the right exit code for every bad input.

Images: strips are refused by geometry before decoding. Checkpoints: config.json and the safetensors header
are checked before anything is allocated. App: the same through gradio_client, plus the file route, request
ids, job caps. Labels: crash leftovers. CLI: exit 2 (argument) or 1 (data), one sentence, never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import shutil
import struct
import urllib.error
import urllib.request
import uuid as uuidlib
import zlib
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from geodemo.checkpoint import CheckpointError, load_checkpoint, read_config, save_checkpoint
from geodemo.data import read_locations, view_paths
from geodemo.dataset import LocationDataset
from geodemo.images import MAX_ASPECT, ImageError, center_square, load_rgb
from geodemo.labels import LabelError, LabelStore
from geodemo.validate import validate_dataset

pytest_plugins = ["app_fixtures"]
LAT, LON = 45.8150, 15.9819  # Zagreb


def _one_sentence(message: str) -> None:
    assert message and "Traceback" not in message and "\n" not in message.strip(), message


def _png_header_only(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose IHDR claims width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(
        b"IEND", b""
    )


@pytest.fixture(scope="module")
def real_rgb(sample_dir) -> np.ndarray:
    uid = read_locations(sample_dir).uuid.iloc[0]
    return load_rgb(view_paths(sample_dir, uid)[0])  # (640, 640, 3)


def _strip(rgb: np.ndarray, ratio: float, path: Path) -> Path:
    """A real photo squeezed into a `ratio`:1 horizontal strip, saved as JPEG."""
    width = rgb.shape[1]
    Image.fromarray(rgb).resize((width, max(1, round(width / ratio)))).save(path, quality=90)
    return path


# ------------------------------------------------------------------------------------------ images
@pytest.mark.parametrize("size", [(1, 30000), (30000, 1), (100, 900)])
def test_strip_images_are_refused_from_the_header(size):
    with pytest.raises(ImageError, match=r"strip more than 8 times longer") as info:
        load_rgb(_png_header_only(*size), name="strip.png")
    _one_sentence(str(info.value))
    assert f"{size[0]}x{size[1]}" in str(info.value) and "strip.png" in str(info.value)


def test_aspect_limit_on_real_photos(real_rgb, tmp_path):
    ok = load_rgb(_strip(real_rgb, MAX_ASPECT, tmp_path / "ok.jpg"))
    assert ok.shape[1] == MAX_ASPECT * ok.shape[0]
    with pytest.raises(ImageError, match="strip"):
        load_rgb(_strip(real_rgb, MAX_ASPECT + 1, tmp_path / "bad.jpg"))


@pytest.mark.parametrize("shape", [(80, 640), (640, 80), (7, 56), (640, 640)])
def test_center_square_crops_before_it_scales(real_rgb, shape):
    rgb = np.ascontiguousarray(real_rgb[: shape[0], : shape[1]])
    out = center_square(rgb, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    side = min(shape)
    top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
    expected = center_square(np.ascontiguousarray(rgb[top : top + side, left : left + side]), 224)
    np.testing.assert_array_equal(out, expected)  # exactly the centre square, resized


def test_label_store_and_validate_data_refuse_strips(real_rgb, tmp_path, sample_dir):
    strip = _strip(real_rgb, 20, tmp_path / "strip.jpg")
    with pytest.raises(LabelError, match="strip"):
        LabelStore(tmp_path / "labels").add({0: strip}, LAT, LON)
    data = _copy(sample_dir, tmp_path / "data", 2)
    uid = read_locations(data).uuid.iloc[0]
    shutil.copyfile(strip, data / "images" / uid / "90.jpg")
    report = validate_dataset(data)
    assert not report.ok and any(p.where == uid and "strip" in p.what for p in report.errors)
    frame = read_locations(data)
    with pytest.raises(ImageError, match="strip"):  # training and evaluation read views the same way
        LocationDataset(data, frame, 64, (0.5,) * 3, (0.5,) * 3)[0]


def _copy(sample_dir: Path, dest: Path, n: int) -> Path:
    frame = read_locations(sample_dir).head(n)
    (dest / "images").mkdir(parents=True)
    for uid in frame.uuid:
        shutil.copytree(sample_dir / "images" / uid, dest / "images" / uid)
    frame.to_csv(dest / "data.csv", index=False)
    return dest


def test_symlinks_are_not_followed_out_of_a_dataset(sample_dir, tmp_path):
    data = _copy(sample_dir, tmp_path / "data", 1)
    uid = read_locations(data).uuid.iloc[0]
    outside = tmp_path / "secret.jpg"
    shutil.copyfile(data / "images" / uid / "90.jpg", outside)
    (data / "images" / uid / "90.jpg").unlink()
    (data / "images" / uid / "90.jpg").symlink_to(outside)
    (data / "images" / uid / "180.jpg").unlink()
    (data / "images" / uid / "180.jpg").symlink_to(data / "images" / uid / "0.jpg")  # inside: fine
    assert sorted(view_paths(data, uid)) == [0, 2, 3]


# ------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, prior_csv):
    from geodemo.cells import build_grid
    from geodemo.geo import load_points_csv
    from geodemo.model import ModelConfig, build_model

    lat, lon = load_points_csv(prior_csv)
    config = ModelConfig.for_backbone("test_efficientnet", ["geocell", "region"],
                                      cells=build_grid(lat, lon).to_dict())
    return save_checkpoint(build_model(config), config, tmp_path_factory.mktemp("ckpt") / "tiny")


def _edited(source: Path, dest: Path, **changes) -> Path:
    shutil.copytree(source, dest)
    config = json.loads((dest / "config.json").read_text())
    config.update(changes)
    (dest / "config.json").write_text(json.dumps(config))
    return dest


BAD_CONFIGS = [
    ({"image_size": 4096}, "image_size = 4096"),
    ({"image_size": -5}, "image_size = -5"),
    ({"image_size": "224"}, "image_size = '224'"),
    ({"image_size": True}, "image_size = True"),
    ({"hidden_dim": 600000}, "hidden_dim = 600000"),
    ({"std": [0.5, 0.0, 0.5]}, "std ="),
    ({"mean": [float("nan"), 0.5, 0.5]}, "mean ="),
    ({"backbone": "resnet9000"}, "unknown backbone"),
    ({"tasks": ["geocell", "teleport"]}, "unknown task"),
    ({"counties": ["HR-01", "<img src=x onerror=alert(1)>"]}, "counties ="),
    ({"class_names": ["a" * 500]}, "class_names ="),
    ({"dropout": 1.5}, "dropout = 1.5"),
]


@pytest.mark.parametrize("changes, message", BAD_CONFIGS)
def test_config_schema_refuses_before_building(tiny_checkpoint, tmp_path, changes, message):
    bad = _edited(tiny_checkpoint, tmp_path / "bad", **changes)
    with pytest.raises(CheckpointError) as info:
        read_config(bad)
    assert message in str(info.value), str(info.value)
    _one_sentence(str(info.value))
    with pytest.raises(CheckpointError):
        load_checkpoint(bad)


def test_safetensors_header_is_checked_before_loading(tiny_checkpoint, tmp_path):
    # A 100k x 100k float tensor declared in a tiny file: refused from the header, nothing allocated.
    bad = _edited(tiny_checkpoint, tmp_path / "huge", **{})
    header = json.dumps({"w": {"dtype": "F32", "shape": [100_000, 100_000], "data_offsets": [0, 4]}}).encode()
    (bad / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    with pytest.raises(CheckpointError, match="declares 10,000,000,000 weights, over the limit"):
        load_checkpoint(bad)
    # Right names, one wrong shape: named before any weight is read.
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_checkpoint / "model.safetensors"))
    key = next(k for k in state if k.startswith("heads."))
    state[key] = state[key][:1].clone()
    wrong = _edited(tiny_checkpoint, tmp_path / "wrong", **{})
    save_file(state, str(wrong / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"weight {key} .* has shape"):
        load_checkpoint(wrong)
    assert load_checkpoint(tiny_checkpoint)[1].backbone == "test_efficientnet"  # the good one still loads


def test_parameter_limit_is_checked_on_a_meta_model(tiny_checkpoint, tmp_path, monkeypatch):
    from geodemo import checkpoint

    monkeypatch.setattr(checkpoint, "MAX_PARAMETERS", 1000)
    with pytest.raises(CheckpointError, match="parameters, over the limit of 1,000"):
        load_checkpoint(tiny_checkpoint)


def test_predictor_cache_is_a_small_lru(tiny_checkpoint, tmp_path, monkeypatch):
    from geodemo.predict import Predictor

    monkeypatch.setenv("GEODEMO_ENGINE", "torch")
    monkeypatch.setenv("GEODEMO_MAX_MODELS", "2")
    monkeypatch.setattr(Predictor, "_cache", {})
    paths = [_edited(tiny_checkpoint, tmp_path / f"c{i}", **{}) for i in range(3)]
    first = Predictor.load(paths[0])
    Predictor.load(paths[1])
    assert Predictor.load(paths[0]) is first  # a hit makes it the most recent
    Predictor.load(paths[2])  # evicts paths[1], the least recently used
    assert [k[0] for k in Predictor._cache] == [paths[0].resolve(), paths[2].resolve()]


# ----------------------------------------------------------------------------------------- labels
def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        buf, format="JPEG"
    )
    return buf.getvalue()


def test_crash_leftovers_are_removed_at_start_and_logged(tmp_path, caplog):
    root = tmp_path / "labels"
    store = LabelStore(root)
    kept = store.add({0: _jpeg(0)}, LAT, LON).uuid
    # What a kill -9 mid-add leaves: an image folder without a row, half-written temporary files.
    orphan = root / "images" / str(uuidlib.uuid4())
    orphan.mkdir()
    (orphan / "0.jpg").write_bytes(_jpeg(1))
    (orphan / ".90.jpg.abc123.tmp").write_bytes(b"\xff\xd8partial")
    (root / ".partial" / ".0.jpg.x1y2.tmp").write_bytes(b"\xff\xd8partial")
    (root / ".data.csv.q9.tmp").write_text("uuid,lat")
    mine = root / "images" / "not-a-label-folder"  # not named like the store's ids: left alone
    mine.mkdir()
    with caplog.at_level(logging.INFO, logger="geodemo.labels"):
        LabelStore(root)
    assert sorted(p.name for p in (root / "images").iterdir()) == sorted([kept, mine.name])
    assert not list((root / ".partial").iterdir()) and not list(root.glob(".*.tmp"))
    assert orphan.name in caplog.text and "crash leftover" in caplog.text
    assert validate_dataset(root).ok


def test_request_id_makes_retries_idempotent_across_restarts(tmp_path):
    root = tmp_path / "labels"
    first = LabelStore(root).add({0: _jpeg(0)}, LAT, LON, request_id="req-1")
    again = LabelStore(root).add({0: _jpeg(0)}, LAT, LON, request_id="req-1")  # a new process after restart
    assert again.uuid == first.uuid and again.count == first.count == 1
    other = LabelStore(root).add({0: _jpeg(0)}, LAT, LON, request_id="req-2")
    assert other.uuid != first.uuid and other.count == 2
    assert len(list((root / "images").iterdir())) == 2
    with pytest.raises(LabelError, match="request id"):
        LabelStore(root).add({0: _jpeg(0)}, LAT, LON, request_id="../x")


@pytest.mark.parametrize("value", [True, False, 10**400, float("inf"), "1e400"])
def test_label_coordinates_must_be_real_numbers(tmp_path, value):
    with pytest.raises(LabelError, match="is not a number") as info:
        LabelStore(tmp_path / "labels").add({0: _jpeg(0)}, value, LON)
    _one_sentence(str(info.value))
    assert len(str(info.value)) < 200  # 10**400 is not printed in full


# ------------------------------------------------------------------------------------------- jobs
def test_job_queue_is_capped_and_old_jobs_are_pruned(tmp_path):
    from geodemo import jobs

    manager = jobs.JobManager(tmp_path / "jobs", start=False)
    for i in range(jobs.KEEP_FINISHED + 10):
        job = manager.submit("evaluate", ["evaluate"], tmp_path / "x.json", job_id=f"20200101-{i:06d}-old")
        manager._update(job.id, status="done", finished=1.0)
    for _ in range(jobs.MAX_QUEUED):
        manager.submit("evaluate", ["evaluate"], tmp_path / "x.json")
    with pytest.raises(jobs.JobError, match=f"{jobs.MAX_QUEUED} jobs are already waiting") as info:
        manager.submit("evaluate", ["evaluate"], tmp_path / "x.json")
    _one_sentence(str(info.value))
    listed = manager.list()
    assert sum(j.status == "done" for j in listed) == jobs.KEEP_FINISHED
    assert "20200101-000000-old" not in {j.id for j in listed}  # the oldest went first


def test_devices_are_capped_by_the_machine(sample_dir, tmp_path):
    from geodemo import jobform

    cores, kind = jobform.max_devices("cpu")
    params = {"task": "geocell", "backbone": "test_efficientnet", "dataset": str(sample_dir), "name": "x",
              "max_epochs": 1, "image_size": 0, "batch_size": 4, "lr": 1e-3, "unfreeze_epoch": -1,
              "accelerator": "cpu", "devices": cores}
    jobform.train_args(params, [sample_dir], tmp_path)
    with pytest.raises(jobform.JobError, match=f"at most {cores}, the number of CPU cores"):
        jobform.train_args({**params, "devices": cores + 1}, [sample_dir], tmp_path)
    code, _, err = _cli("train", "--task", "geocell", "--data", str(sample_dir), "--out", str(tmp_path / "o"),
                        "--accelerator", "cpu", "--devices", str(cores + 1))
    assert code == 2 and "--devices" in err and kind in err


# -------------------------------------------------------------------------------------------- CLI
def _cli(*args) -> tuple[int, str, str]:
    from training.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:  # argparse
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def datasets(sample_dir, tmp_path_factory):
    """Small real datasets, each broken one way."""
    root = tmp_path_factory.mktemp("cli")
    frame = read_locations(sample_dir).head(3)

    def make(name, edit=None, images=True, rows=True):
        d = root / name
        (d / "images").mkdir(parents=True)
        fr = edit(frame.copy().astype(object)) if edit else frame
        if images:
            for uid in fr.uuid:
                shutil.copytree(sample_dir / "images" / uid, d / "images" / uid)
        (fr if rows else fr.iloc[:0]).to_csv(d / "data.csv", index=False)
        return d

    def set_lat(value):
        def edit(fr):
            fr.loc[1, "latitude"] = value
            return fr

        return edit

    return {
        "good": make("good"),
        "inf": make("inf", set_lat("inf")),
        "huge": make("huge", set_lat(str(10**400))),
        "bool": make("bool", set_lat("True")),
        "noimages": make("noimages", images=False),
        "header": make("header", rows=False),
    }


def _train(data, out) -> list:
    return ["train", "--task", "geocell", "--data", data, "--out", out, "--backbone", "test_efficientnet",
            "--max-epochs", "1", "--batch-size", "2"]


@pytest.mark.parametrize(
    "case, command, code, words",
    [
        ("inf", "evaluate", 1, "has latitude 'inf', which is not a number"),
        ("inf", "train", 1, "has latitude 'inf', which is not a number"),
        ("huge", "evaluate", 1, "which is not a number"),
        ("bool", "evaluate", 1, "has latitude 'True', which is not a number"),
        ("bool", "train", 1, "has latitude 'True', which is not a number"),
        ("noimages", "evaluate", 1, "none of the 3 locations"),
        ("noimages", "predict", 1, "none of the 3 locations"),
        ("noimages", "train", 1, "none of the 3 locations"),
        ("header", "evaluate", 1, "has a header but no locations"),
        ("header", "train", 1, "has a header but no locations"),
    ],
)
def test_cli_bad_data_exits_1_naming_problem_and_location(datasets, tmp_path, case, command, code, words):
    data = datasets[case]
    argv = {
        "evaluate": ["evaluate", "--data", data, "--out", tmp_path / "e.json"],
        "predict": ["predict", "--data", data, "--out", tmp_path / "p.csv"],
        "train": _train(data, tmp_path / "ckpt"),
    }[command]
    got, out, err = _cli(*argv)
    assert got == code, err
    assert err.startswith("error:") and words in err, err
    _one_sentence(err)
    located = read_locations(datasets["good"]).uuid.iloc[1] if case in ("inf", "huge", "bool") else "data"
    assert located in err or str(data) in err
    assert not (tmp_path / "e.json").exists()  # nothing written with null metrics


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--limit", "-3"], "--limit -3 is out of range; it must be at least 1"),
        (["--batch-size", "0"], "--batch-size 0 is out of range"),
        (["--limit", "many"], "argument --limit: invalid int value"),
    ],
)
def test_cli_bad_arguments_exit_2_in_one_sentence(datasets, tmp_path, argv, words):
    code, _, err = _cli("evaluate", "--data", datasets["good"], "--out", tmp_path / "e.json", *argv)
    assert code == 2 and err.startswith("error:") and words in err, err
    _one_sentence(err)


def test_cli_missing_data_and_bad_checkpoint_exit_2(datasets, tiny_checkpoint, tmp_path):
    code, _, err = _cli("evaluate", "--data", tmp_path / "nowhere", "--out", tmp_path / "e.json")
    assert code == 2 and "--data" in err and "does not exist" in err
    bad = _edited(tiny_checkpoint, tmp_path / "std0", std=[0.5, 0, 0.5])
    code, _, err = _cli(
        "evaluate", "--checkpoint", bad, "--data", datasets["good"], "--out", tmp_path / "e.json"
    )
    assert code == 2 and "std =" in err and "above 0" in err, err
    _one_sentence(err)
    assert not (tmp_path / "e.json").exists()


def test_cli_good_evaluation_still_exits_0_with_finite_metrics(datasets, tmp_path):
    code, _, err = _cli("evaluate", "--data", datasets["good"], "--out", tmp_path / "e.json", "--limit", "2")
    assert code == 0, err
    metrics = json.loads((tmp_path / "e.json").read_text())
    assert metrics["count"] == 2 and math.isfinite(metrics["mean_km"])


# -------------------------------------------------------------------------------------------- app
@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server.url, verbose=False)


@pytest.fixture(scope="module")
def good_view(sample_dir):
    uid = read_locations(sample_dir).uuid.iloc[0]
    return handle_file(str(view_paths(sample_dir, uid)[0]))


def test_app_refuses_a_strip_and_keeps_serving(client, good_view, tmp_path):
    strip = tmp_path / "strip.png"
    strip.write_bytes(_png_header_only(1, 30000))
    with pytest.raises(Exception, match="strip more than 8 times longer") as info:
        client.predict(good_view, handle_file(str(strip)), None, None, api_name="/predict")
    message = str(info.value)
    assert "/tmp/" not in message and "/root" not in message and "strip.png" in message, message
    assert 42 < client.predict(good_view, None, None, None, api_name="/predict")["latitude"] < 47


def test_app_refuses_bad_checkpoint_configs_without_server_paths(client, app_server, tmp_path):
    source = app_server.settings.default_checkpoint
    for changes, words in [({"image_size": 4096}, "image_size = 4096"),
                           ({"counties": ["<b>HR-01</b>"]}, "counties =")]:
        bad = _edited(source, tmp_path / f"bad{len(words)}", **changes)
        files = [handle_file(str(bad / "model.safetensors")), handle_file(str(bad / "config.json"))]
        with pytest.raises(Exception, match=words) as info:
            client.predict(files, f"bad{len(words)}", api_name="/upload_checkpoint")
        message = str(info.value)
        assert "/tmp" not in message and str(app_server.settings.checkpoints_dir) not in message, message
        assert not (app_server.settings.checkpoints_dir / f"bad{len(words)}").exists()


@pytest.mark.parametrize("value", [True, 10**400])
def test_label_api_refuses_booleans_and_overflow(client, good_view, app_server, value):
    before = LabelStore(app_server.settings.labels_dir, cleanup=False).count()
    with pytest.raises(Exception, match="is not a number") as info:
        client.predict(good_view, None, None, None, value, LON, api_name="/label")
    assert "OverflowError" not in str(info.value)
    assert LabelStore(app_server.settings.labels_dir, cleanup=False).count() == before


def test_label_api_request_id_dedups_a_retry(client, good_view, app_server):
    request = str(uuidlib.uuid4())
    first = client.predict(good_view, None, None, None, LAT, LON, request, api_name="/label")
    retry = client.predict(good_view, None, None, None, LAT, LON, request, api_name="/label")
    assert retry["uuid"] == first["uuid"] and retry["count"] == first["count"]
    frame = read_locations(app_server.settings.labels_dir)
    assert (frame.uuid == first["uuid"]).sum() == 1
    plain = client.predict(good_view, None, None, None, LAT, LON, api_name="/label")  # the id is optional
    assert plain["uuid"] != first["uuid"] and plain["count"] == first["count"] + 1


def _status(url: str) -> int:
    """HTTP status of a file URL; the app's own HTML page (what unknown routes answer) counts as 404."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            page = response.read(64).lstrip().lower().startswith(b"<!doctype html")
            return 404 if page else response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_file_route_serves_label_images_only(client, good_view, app_server, tmp_path):
    labels = app_server.settings.labels_dir
    result = client.predict(good_view, None, None, None, LAT, LON, api_name="/label")
    image = labels / "images" / result["uuid"] / "0.jpg"
    base = f"{app_server.url}/gradio_api/file="
    assert _status(f"{base}{image}") == 200
    (labels / ".partial" / ".0.jpg.probe.tmp").write_bytes(image.read_bytes())
    for private in (labels / "data.csv", labels / ".lock", labels / ".partial" / ".0.jpg.probe.tmp"):
        assert private.exists() and _status(f"{base}{private}") in (403, 404), private
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(image.read_bytes())
    link = labels / "images" / result["uuid"] / "link.jpg"
    link.symlink_to(secret)
    try:
        assert _status(f"{base}{link}") in (403, 404)  # resolved, it leaves the allowed roots
    finally:
        link.unlink()


# ------------------------------------------------------------------------- memory, in a subprocess
SERVER = """
import sys
from geodemo.predict import Predictor
from geodemo.ui import build_app, launch
Predictor.load()  # loaded before serving: a short upload TTL must not expire while the model loads
launch(build_app(), server_name="127.0.0.1", server_port=int(sys.argv[1]), quiet=True)
"""
MEMORY_CAP_GB = 12  # RLIMIT_AS of the server: torch + onnxruntime reserve ~5 GB of address space idle


def _proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory, sample_dir):
    """The app in its own process under a memory cap, with a watchdog that kills it past +1.5 GB RSS."""
    import resource
    import subprocess
    import sys
    import threading
    import time

    from app_fixtures import free_port

    root = tmp_path_factory.mktemp("capped")
    port = free_port()
    env = {**os.environ, "GEODEMO_LABELS_DIR": str(root / "labels"), "GEODEMO_JOBS_DIR": str(root / "jobs"),
           "GEODEMO_CHECKPOINTS_DIR": str(root / "ckpts"), "GEODEMO_DATA_ROOTS": str(sample_dir),
           "GRADIO_TEMP_DIR": str(root / "gradio"), "GEODEMO_UPLOAD_TTL_S": "3", "GEODEMO_THREADS": "1"}

    def cap():
        limit = MEMORY_CAP_GB * 2**30
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], env=env, preexec_fn=cap,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            time.sleep(0.5)
    if proc.poll() is not None or time.monotonic() >= deadline:
        proc.kill()
        pytest.fail(f"the capped app did not start: {proc.stderr.read().decode()[-2000:]}")
    stop = threading.Event()
    watchdog = {"killed": False, "limit_kb": 0}

    def watch():
        while not stop.wait(0.1):
            if watchdog["limit_kb"] and _proc_kb(proc.pid, "VmRSS") > watchdog["limit_kb"]:
                watchdog["killed"] = True
                proc.kill()
                return

    threading.Thread(target=watch, daemon=True).start()
    yield type("Server", (), {"url": url, "pid": proc.pid, "root": root, "watchdog": watchdog, "proc": proc})
    stop.set()
    proc.kill()
    proc.wait(10)


def test_strip_and_huge_image_size_are_refused_within_200_mb(capped_server, good_view, tmp_path):
    client = Client(capped_server.url, verbose=False)
    assert 42 < client.predict(good_view, None, None, None, api_name="/predict")["latitude"] < 47  # warm
    pid = capped_server.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _proc_kb(pid, "VmRSS")
    capped_server.watchdog["limit_kb"] = before + 1536 * 1024
    strip = tmp_path / "strip.png"
    strip.write_bytes(_png_header_only(1, 30000))
    with pytest.raises(Exception, match="strip"):
        client.predict(*[handle_file(str(strip))] * 4, api_name="/predict")  # four views: 19 GB before
    source = Path(__file__).resolve().parents[1] / "assets" / "checkpoints" / "default"
    bad = _edited(source, tmp_path / "big", image_size=4096)
    with pytest.raises(Exception, match="image_size = 4096"):
        client.predict([handle_file(str(bad / "model.safetensors")), handle_file(str(bad / "config.json"))],
                       "big", api_name="/upload_checkpoint")
    bad = _edited(source, tmp_path / "wide", hidden_dim=600000)
    (bad / "model.safetensors").write_bytes(struct.pack("<Q", 60) + b"{" + b" " * 58 + b"}")  # 68 bytes
    with pytest.raises(Exception, match="hidden_dim = 600000"):
        client.predict([handle_file(str(bad / "model.safetensors")), handle_file(str(bad / "config.json"))],
                       "wide", api_name="/upload_checkpoint")
    peak = _proc_kb(pid, "VmHWM")
    assert not capped_server.watchdog["killed"] and capped_server.proc.poll() is None
    assert (peak - before) / 1024 < 200, f"server peak grew by {(peak - before) / 1024:.0f} MB"
    assert 42 < client.predict(good_view, None, None, None, api_name="/predict")["latitude"] < 47


def test_uploads_are_deleted_from_gradios_cache(capped_server, sample_dir, tmp_path):
    import time

    client = Client(capped_server.url, verbose=False)
    cache = capped_server.root / "gradio"
    before = set(cache.rglob("*"))  # e.g. the examples, which Gradio keeps for good
    view = tmp_path / "fresh.jpg"  # a real view with unique trailing bytes: its own cache entry
    uid = read_locations(sample_dir).uuid.iloc[3]
    view.write_bytes(view_paths(sample_dir, uid)[0].read_bytes() + uuidlib.uuid4().bytes)
    client.predict(handle_file(str(view)), None, None, None, api_name="/predict")
    uploaded = [p for p in set(cache.rglob("*.jpg")) - before if p.is_file()]
    assert uploaded, "the upload did not reach Gradio's cache"
    time.sleep(6)  # GEODEMO_UPLOAD_TTL_S=3: swept every second once older than 3 s
    assert not [p for p in uploaded if p.exists()]


def test_county_names_are_shown_as_text_never_html():
    from types import SimpleNamespace

    from geodemo.ui.predict_tab import summary_markdown

    evil = "<img src=x onerror=alert(1)>"
    prediction = SimpleNamespace(latitude=LAT, longitude=LON, county=evil, expected_error_km=12.0,
                                 county_probabilities={evil: 0.6, "Grad Zagreb": 0.4}, headings={},
                                 model="default", elapsed_ms=5.0)
    text = summary_markdown(prediction)
    assert "<img" not in text and "&lt;img src=x onerror=alert\\(1\\)&gt;" in text
    assert "Grad Zagreb" in text
