"""Bad input a user can send, beyond tests/test_app_api.py, test_images.py, test_data.py, test_checkpoint.py.

Through the running app (gradio_client) where the app is the door, else through the library or the CLI.
Each case asserts a one-sentence message naming the problem, and app cases that /predict still serves.
"""

import io
import re
import struct
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from geodemo.data import DatasetError, read_locations, view_paths
from geodemo.validate import validate_dataset

pytest_plugins = ["app_fixtures"]
REPO = Path(__file__).resolve().parents[1]


def _in_croatia_bbox(result) -> bool:
    return 42.3 < result["latitude"] < 46.6 and 13.4 < result["longitude"] < 19.5


def _one_sentence(message: str) -> None:
    assert "Traceback" not in message and "\n" not in message.strip(), message


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server.url, verbose=False)


@pytest.fixture(scope="module")
def real_view(sample_dir) -> Image.Image:
    uid = read_locations(sample_dir).uuid.iloc[0]
    with Image.open(view_paths(sample_dir, uid)[0]) as img:
        return img.convert("RGB").resize((128, 128))


@pytest.fixture(scope="module")
def good_view(sample_dir):
    uid = read_locations(sample_dir).uuid.iloc[0]
    return handle_file(str(view_paths(sample_dir, uid)[0]))


def _still_serving(client, good_view) -> None:
    assert _in_croatia_bbox(client.predict(good_view, None, None, None, api_name="/predict"))


def _png_header_only(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose IHDR claims width x height pixels (a decompression bomb, cheaply)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _save(img: Image.Image, path: Path, **kwargs) -> str:
    img.save(path, **kwargs)
    return str(path)


# ------------------------------------------------------------------------------------------- images
def test_decompression_bomb_is_refused_by_the_app(client, good_view, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(30000, 30000))
    with pytest.raises(Exception) as info:
        client.predict(handle_file(str(bomb)), None, None, None, api_name="/predict")
    message = str(info.value)
    assert "bomb.png" in message and "megapixel limit" in message
    _one_sentence(message)
    _still_serving(client, good_view)


def test_every_image_mode_is_accepted_and_predicted(client, app_server, real_view, tmp_path):
    rgb = np.asarray(real_view)
    gray16 = (rgb.mean(axis=2) * 257).astype(np.uint16)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])
    files = {
        "cmyk.jpg": _save(real_view.convert("CMYK"), tmp_path / "cmyk.jpg", format="JPEG"),
        "gray16.png": _save(Image.fromarray(gray16), tmp_path / "gray16.png", format="PNG"),
        "rgba.png": _save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png", format="PNG"),
        "gray.jpg": _save(real_view.convert("L"), tmp_path / "gray.jpg", format="JPEG"),
        "one_pixel.png": _save(Image.new("RGB", (1, 1), (90, 120, 60)), tmp_path / "one_pixel.png"),
    }
    assert Image.open(files["gray16.png"]).mode.startswith("I")  # really 16-bit on disk
    for name, path in files.items():
        result = client.predict(handle_file(path), None, None, None, api_name="/predict")
        assert _in_croatia_bbox(result), name
    # all modes at once, as one labelled location: stored re-encoded as plain RGB JPEGs
    views = [handle_file(files[n]) for n in ("cmyk.jpg", "gray16.png", "rgba.png", "gray.jpg")]
    assert _in_croatia_bbox(client.predict(*views, api_name="/predict"))
    stored = client.predict(*views, 45.33, 14.44, api_name="/label")
    saved = view_paths(app_server.settings.labels_dir, stored["uuid"]).values()
    assert len(saved) == 4 and all(Image.open(p).mode == "RGB" and p.suffix == ".jpg" for p in saved)


# ------------------------------------------------------------------------------------- coordinates
@pytest.mark.parametrize("lat, lon", [("45,8x", "15.98"), ("north", "east"), ("", "15.98")])
def test_coordinates_as_text_are_refused_by_the_label_api(client, good_view, app_server, lat, lon):
    labels = app_server.settings.labels_dir
    before = len(read_locations(labels)) if (labels / "data.csv").exists() else 0
    with pytest.raises(Exception) as info:
        client.predict(good_view, None, None, None, lat, lon, api_name="/label")
    message = str(info.value)
    assert re.search(r"(?i)not a number|set the location|latitude|longitude", message), message
    _one_sentence(message)
    after = len(read_locations(labels)) if (labels / "data.csv").exists() else 0
    assert after == before
    _still_serving(client, good_view)


def test_coordinates_given_as_numeric_text_are_accepted(client, good_view, app_server):
    result = client.predict(good_view, None, None, None, "45.815", " 15.982 ", api_name="/label")
    frame = read_locations(app_server.settings.labels_dir).set_index("uuid")
    assert frame.loc[result["uuid"], "latitude"] == pytest.approx(45.815)


# ------------------------------------------------------------------------------------- paths and ids
@pytest.mark.parametrize("folder", ["/etc", "{labels}/../..", "{labels}/../../../../../../etc", "~"])
def test_load_folder_refuses_paths_outside_the_data_roots(client, good_view, app_server, folder):
    folder = folder.format(labels=app_server.settings.labels_dir)
    with pytest.raises(Exception, match="not inside a configured data root") as info:
        client.predict(folder, api_name="/load_folder")
    _one_sentence(str(info.value))
    _still_serving(client, good_view)


@pytest.mark.parametrize("name", ["../escape", "/tmp/absolute", "a/b", ".."])
def test_checkpoint_upload_refuses_path_names(client, app_server, name):
    ckpt = app_server.settings.default_checkpoint
    files = [handle_file(str(ckpt / "model.safetensors")), handle_file(str(ckpt / "config.json"))]
    with pytest.raises(Exception, match="(?i)name of letters"):
        client.predict(files, name, api_name="/upload_checkpoint")
    assert not (app_server.settings.checkpoints_dir.parent / "escape").exists()
    assert not Path("/tmp/absolute").exists()


@pytest.mark.parametrize(
    "checkpoint, dataset",
    [("/etc", "{sample}"), ("{ckpt}", "/etc"), ("{ckpt}", "{sample}/../../.."), ("{ckpt}/../..", "{sample}")],
)
def test_evaluate_api_refuses_paths_that_are_not_offered(client, app_server, sample_dir, checkpoint, dataset):
    names = {"sample": sample_dir, "ckpt": app_server.settings.default_checkpoint}
    with pytest.raises(
        Exception,
        match="(?i)not one of the (available checkpoints|configured data roots)|not in the list of choices",
    ):
        client.predict(checkpoint.format(**names), dataset.format(**names), 0, api_name="/evaluate")


@pytest.mark.parametrize("bad_id", ["../../etc", "/etc/passwd", "a/../../b", ""])
def test_unsafe_ids_are_refused_by_name(tmp_path, bad_id):
    with pytest.raises(DatasetError, match="not a safe folder name"):
        view_paths(tmp_path, bad_id)  # ids from a client (a clicked table row) never leave images/
    (tmp_path / "images").mkdir()
    pd.DataFrame(
        {"uuid": [bad_id or "x", "ok-1"], "latitude": [45.8, 45.3], "longitude": [15.9, 14.4]}
    ).to_csv(tmp_path / "data.csv", index=False)
    if bad_id:
        with pytest.raises(DatasetError, match=re.escape(repr(bad_id))):
            read_locations(tmp_path)
        report = validate_dataset(tmp_path, check_images=False)
        assert any(bad_id in p.what and "safe folder name" in p.what for p in report.errors)


# ---------------------------------------------------------------------------------------------- CSV
def _cli(*args) -> tuple[int, str, str]:
    """`python -m training ...` in-process (a subprocess costs ~15 s of imports): (code, stdout, stderr)."""
    import contextlib

    from training.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_huge_csv_is_reported_in_words_quickly(tmp_path):
    """10k rows pointing at no images: a summary plus a capped problem list, not a hang or 10k lines."""
    n = 10_000
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "uuid": [f"loc-{i:06d}" for i in range(n)],
            "latitude": rng.uniform(45.2, 45.8, n).round(6).astype(str).astype(object),
            "longitude": rng.uniform(15.2, 16.2, n).round(6),
        }
    )
    frame.loc[7, "latitude"] = "45°48'N"  # one coordinate as text among them
    (tmp_path / "images").mkdir()
    frame.to_csv(tmp_path / "data.csv", index=False)
    start = time.perf_counter()
    code, text, _ = _cli("validate-data", str(tmp_path), "--no-images")
    elapsed = time.perf_counter() - start
    assert code == 1 and elapsed < 30
    assert f"{n} locations" in text and "NOT OK" in text
    assert "loc-000007" in text and 'latitude "45°48\'N" is not a number' in text
    assert "more problem(s) not shown" in text and len(text.splitlines()) < 300


def test_csv_with_bom_and_semicolons_passes_the_cli(tmp_path, sample_dir):
    """Covered for read_locations in test_data; here end to end through `validate-data` in a subprocess."""
    frame = read_locations(sample_dir).head(2)
    (tmp_path / "images").mkdir()
    for uid in frame.uuid:
        (tmp_path / "images" / uid).mkdir()
        for v, path in view_paths(sample_dir, uid).items():
            (tmp_path / "images" / uid / path.name).write_bytes(path.read_bytes())
    text = frame[["uuid", "latitude", "longitude"]].to_csv(index=False, sep=";")
    (tmp_path / "data.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    code, out, err = _cli("validate-data", str(tmp_path))
    assert code == 0, out + err
    assert "2 locations, 8 views" in out and "\nOK\n" in out


# ---------------------------------------------------------------------------------------- checkpoints
def _tiny(tmp_path, tasks, **extra):
    from geodemo.checkpoint import save_checkpoint
    from geodemo.model import ModelConfig, build_model

    config = ModelConfig.for_backbone("test_efficientnet", tasks, **extra)
    return save_checkpoint(build_model(config), config, tmp_path / "_".join(tasks))


def test_pickle_checkpoint_is_refused_by_the_cli_without_unpickling(tmp_path, sample_dir):
    folder = tmp_path / "pickled"
    folder.mkdir()
    marker = tmp_path / "unpickled.txt"
    # A real pickle that would create `marker` if anything ever unpickled it.
    import pickle

    class Boom:
        def __reduce__(self):
            return (Path(marker).write_text, ("unpickled!",))

    (folder / "model.ckpt").write_bytes(pickle.dumps(Boom()))
    code, _, err = _cli(
        "evaluate", "--checkpoint", str(folder), "--data", str(sample_dir), "--out", str(tmp_path / "e.json")
    )
    assert code == 2 and err.startswith("error:"), err
    assert "refusing to unpickle" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_config_of_another_task_is_refused_both_ways(tmp_path, sample_dir, prior_csv):
    from geodemo.cells import build_grid
    from geodemo.checkpoint import CheckpointError, load_checkpoint
    from geodemo.geo import load_points_csv

    lat, lon = load_points_csv(prior_csv)
    geocell = _tiny(tmp_path, ["geocell"], cells=build_grid(lat, lon).to_dict())
    with pytest.raises(CheckpointError, match="for task geocell, not classify") as info:
        load_checkpoint(geocell, expect_tasks=["classify"])
    _one_sentence(str(info.value))
    # a classify checkpoint on a LUMEN dataset through the CLI: one line, no traceback
    classify = _tiny(tmp_path, ["classify"], class_names=["a", "b"])
    code, _, err = _cli(
        "evaluate",
        "--checkpoint",
        str(classify),
        "--data",
        str(sample_dir),
        "--out",
        str(tmp_path / "e.json"),
    )
    assert code == 1 and err.startswith("error:"), err  # the data does not fit the checkpoint: exit 1
    assert "not an ImageFolder" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------- security
@pytest.mark.parametrize("route", ["/file=", "/gradio_api/file=", "/gradio_api/file/"])
def test_file_routes_serve_nothing_outside_the_allowed_roots(app_server, sample_dir, route):
    targets = [
        "/etc/passwd",
        str(REPO / "app.py"),
        str(REPO / "geodemo" / "labels.py"),
        str(REPO / "pyproject.toml"),
        f"{sample_dir}/../../../../../../etc/passwd",  # traversal out of an allowed root
        f"{app_server.settings.labels_dir}/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    ]
    for target in targets:
        try:
            with urllib.request.urlopen(f"{app_server.url}{route}{target}", timeout=10) as response:
                body = response.read()
        except urllib.error.HTTPError as err:
            assert err.code in (400, 403, 404, 405), (route, target, err.code)
            continue
        # a 200 may only be the app's HTML page (unknown routes), never the file
        assert b"root:" not in body and b"import" not in body[:2000], (route, target)


def test_allowed_files_are_still_served(app_server, sample_dir):
    """The guard above is not vacuous: a sample view inside a data root does come back."""
    uid = read_locations(sample_dir).uuid.iloc[0]
    path = view_paths(sample_dir, uid)[0].resolve()
    with urllib.request.urlopen(f"{app_server.url}/gradio_api/file={path}", timeout=10) as response:
        assert response.read()[:2] == b"\xff\xd8"


def test_no_user_string_can_reach_a_shell():
    """No shell anywhere: subprocesses are argument lists (jobs.py), never shell=True/os.system/os.popen."""
    pattern = re.compile(r"shell\s*=\s*True|os\.system\(|os\.popen\(|commands\.getoutput|pty\.spawn")
    offenders = []
    for folder in ("geodemo", "training"):
        for path in (REPO / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    for path in (REPO / "app.py",):
        if pattern.search(path.read_text(encoding="utf-8")):
            offenders.append(str(path))
    assert not offenders, offenders
