"""Issue 20 through the running app (gradio_client and plain HTTP) and the CLI: the looping PostScript file
is refused at once on every route and starts no process, uploaded ground truth is not served, a visitor
cannot cancel another's job, and a just-uploaded checkpoint is accepted everywhere."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid as uuidlib
import zipfile
from pathlib import Path

import pytest
import requests
from gradio_client import Client, handle_file
from test_hardening_formats import LOOP_PS, children, looping_zip

from geodemo.data import read_locations, view_paths

pytest_plugins = ["app_fixtures"]
REPO = Path(__file__).resolve().parents[1]
LAT, LON = 45.8150, 15.9819


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server.url, verbose=False)


@pytest.fixture(scope="module")
def files(sample_dir, tmp_path_factory):
    """The looping PostScript file named .jpg, a text file named .jpg (the baseline refusal), a good view."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "loop.jpg").write_bytes(LOOP_PS)
    (root / "text.jpg").write_bytes(b"just some text, not a picture at all")
    uid = read_locations(sample_dir).uuid.iloc[0]
    return {"loop": root / "loop.jpg", "text": root / "text.jpg", "good": view_paths(sample_dir, uid)[0],
            "zip": looping_zip(sample_dir, root / "loop.zip"), "root": root}


def _refusal_s(call) -> tuple[float, str]:
    start = time.perf_counter()
    with pytest.raises(Exception) as info:  # noqa: PT011 - gradio_client raises AppError, HTTP a 4xx
        call()
    return time.perf_counter() - start, str(info.value)


def _rest(url: str, path: Path, field: str = "north") -> requests.Response:
    with open(path, "rb") as fh:
        return requests.post(f"{url}/api/v1/predict", files={field: (path.name, fh, "image/jpeg")},
                             timeout=60)


def test_looping_postscript_is_refused_at_once_on_every_route(client, app_server, files):
    assert _rest(app_server.url, files["good"]).status_code == 200  # model loaded: timings below are decoding
    before = children()
    for _ in range(2):  # twice: the attack held both REST model slots
        start = time.perf_counter()
        answer = _rest(app_server.url, files["loop"])
        assert time.perf_counter() - start < 1.0
        assert answer.status_code == 400 and "PostScript (EPS) file, not a photo" in answer.json()["error"]
    start = time.perf_counter()
    assert _rest(app_server.url, files["good"]).status_code == 200
    assert time.perf_counter() - start < 5.0  # answered at once: no slot is held
    loop, text = handle_file(str(files["loop"])), handle_file(str(files["text"]))
    good = handle_file(str(files["good"]))
    routes = {
        "/predict": lambda f: client.predict(good, f, None, None, api_name="/predict"),
        "/predict_panorama": lambda f: client.predict(f, 0, api_name="/predict_panorama"),
        "/label": lambda f: client.predict(f, None, None, None, LAT, LON, "", api_name="/label"),
    }
    for route, call in routes.items():
        baseline, _ = _refusal_s(lambda: call(text))  # the same round trip, refused for a plain reason
        seconds, message = _refusal_s(lambda: call(loop))
        assert "PostScript (EPS) file, not a photo" in message, (route, message)
        assert seconds < baseline + 1.0, (route, seconds, baseline)
    seconds, message = _refusal_s(lambda: client.predict(handle_file(str(files["zip"])),
                                                        api_name="/upload_dataset"))
    assert "PostScript" in message and seconds < 5.0
    checkpoint = str(app_server.settings.default_checkpoint)
    seconds, message = _refusal_s(lambda: client.predict(checkpoint, handle_file(str(files["zip"])), 0,
                                                        api_name="/evaluate_zip"))
    assert "PostScript" in message and seconds < 5.0
    assert children() <= before  # no decoder (or any other) process was started or left
    assert _rest(app_server.url, files["good"]).status_code == 200
    start = time.perf_counter()  # the Gradio queue's model slots are free too
    assert 42 < client.predict(good, None, None, None, api_name="/predict")["latitude"] < 47
    assert time.perf_counter() - start < 10.0


def test_label_api_refuses_tiny_views_and_a_changed_retry(client, files, tmp_path):
    from PIL import Image

    for size in ((1, 1), (8, 1)):
        tiny = tmp_path / f"tiny{size[0]}x{size[1]}.png"
        Image.new("RGB", size, (90, 120, 60)).save(tiny)
        with pytest.raises(Exception, match="smaller than the 32-pixel minimum side"):
            client.predict(handle_file(str(tiny)), None, None, None, LAT, LON, "", api_name="/label")
    request_id = uuidlib.uuid4().hex
    good = handle_file(str(files["good"]))
    first = client.predict(good, None, None, None, LAT, LON, request_id, api_name="/label")
    assert client.predict(good, None, None, None, LAT, LON, request_id, api_name="/label") == first
    with pytest.raises(Exception, match="already used for a different label"):
        client.predict(good, None, None, None, 45.0, 15.5, request_id, api_name="/label")


@pytest.mark.parametrize("argv", [["validate-data", "{dir}"],
                                  ["evaluate", "--data", "{zip}", "--out", "{out}"]])
def test_looping_postscript_is_refused_by_the_cli(files, sample_copy, argv):
    root = sample_copy(1)
    uid = read_locations(root).uuid.iloc[0]
    view_paths(root, uid)[0].write_bytes(LOOP_PS)
    args = [a.format(dir=root, zip=files["zip"], out=files["root"] / "e.json") for a in argv]
    result = subprocess.run([sys.executable, "-m", "training", *args], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "PostScript (EPS) file, not a photo" in output
    assert "Traceback" not in output


def test_rest_refuses_the_same_field_twice(app_server, files):
    with open(files["good"], "rb") as a, open(files["good"], "rb") as b:
        twice = [("north", ("a.jpg", a, "image/jpeg")), ("north", ("b.jpg", b, "image/jpeg"))]
        answer = requests.post(f"{app_server.url}/api/v1/predict", files=twice, timeout=60)
    assert answer.status_code == 400 and answer.json()["error"] == (
        "Field 'north' appears twice; send one image per direction.")


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_uploaded_ground_truth_is_never_served(client, app_server, sample_dir, tmp_path):
    frame = read_locations(sample_dir).head(2)
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data.csv", frame[["uuid", "latitude", "longitude"]].to_csv(index=False))
        for uid in frame.uuid:
            for view in view_paths(sample_dir, uid).values():
                zf.write(view, f"images/{uid}/{view.name}")
    folder = Path(client.predict(handle_file(str(archive)), api_name="/upload_dataset")["value"])
    assert folder.parent == app_server.settings.uploads_dir and (folder / "data.csv").is_file()
    base = f"{app_server.url}/gradio_api/file="
    assert _status(f"{base}{folder / 'data.csv'}") == 403
    assert _status(f"{base}{folder / '.name'}") == 403
    assert _status(f"{base}{app_server.settings.labels_dir / 'data.csv'}") in (403, 404)
    assert _status(f"{base}{view_paths(folder, frame.uuid.iloc[0])[0]}") == 200  # views still are


def test_a_second_session_cannot_cancel_the_first_sessions_job(client, app_server):
    other = Client(app_server.url, verbose=False)
    checkpoint = str(app_server.settings.default_checkpoint)
    examples = next(path for label, path in app_server.settings.dataset_choices() if "examples" in label)
    job_id, _ = client.predict(checkpoint, examples, 0, api_name="/evaluate")
    with pytest.raises(Exception, match="started by another visitor; you can follow it, but only they can"):
        other.predict(job_id, api_name="/cancel_job")
    assert client.predict(job_id, api_name="/cancel_job") in ("cancelled", "running", "done", "queued")


def test_a_just_uploaded_checkpoint_is_accepted_by_every_selector(client, app_server, files):
    ckpt = app_server.settings.default_checkpoint
    name = f"fresh-{uuidlib.uuid4().hex[:6]}"
    uploaded = [handle_file(str(ckpt / "model.safetensors")), handle_file(str(ckpt / "config.json"))]
    client.predict(uploaded, name, api_name="/upload_checkpoint")
    path = str(app_server.settings.checkpoints_dir / name)
    other = Client(app_server.url, verbose=False)  # a session whose page was built before the upload
    # the checkpoint passes the selector; the call then stops at the (hostile) archive, before any job
    _, message = _refusal_s(lambda: other.predict(path, handle_file(str(files["zip"])), 0,
                                                  api_name="/evaluate_zip"))
    assert "PostScript" in message and "not in the list of choices" not in message
    _, message = _refusal_s(lambda: other.predict(path + "-nope", handle_file(str(files["zip"])), 0,
                                                  api_name="/evaluate_zip"))
    assert f"'{name}-nope' is not one of the available checkpoints" in message


def test_the_page_sets_an_owner_cookie_that_keeps_jobs_across_a_reload(client, app_server):
    first = requests.get(f"{app_server.url}/", timeout=30)
    token = first.cookies.get("geodemo_owner")
    assert token and len(token) == 32
    again = requests.get(f"{app_server.url}/", cookies={"geodemo_owner": token}, timeout=30)
    assert "geodemo_owner" not in again.cookies  # kept, not replaced
    cookie = {"Cookie": f"geodemo_owner={token}"}
    page, reloaded = (Client(app_server.url, verbose=False, headers=cookie) for _ in range(2))
    checkpoint = str(app_server.settings.default_checkpoint)
    examples = next(path for label, path in app_server.settings.dataset_choices() if "examples" in label)
    job_id, _ = page.predict(checkpoint, examples, 0, api_name="/evaluate")
    assert app_server.demo.geodemo_jobs.get(job_id).owner == f"browser-{token}"
    with pytest.raises(Exception, match="started by another visitor"):
        client.predict(job_id, api_name="/cancel_job")  # another browser
    assert reloaded.predict(job_id, api_name="/cancel_job") in ("cancelled", "running", "done", "queued")
