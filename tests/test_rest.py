"""POST /api/v1/predict on the running app: the /predict JSON for any subset of views, JSON 4xx errors."""

import httpx
import pytest
from conftest import PREDICT_CONTRACT

from geodemo.data import read_locations, view_paths
from geodemo.predict import Predictor
from geodemo.ui.rest import PATH, parse_size

pytest_plugins = ["app_fixtures"]


@pytest.fixture(scope="module")
def files(sample_dir):
    """The four real views of the first sample location: {north: bytes, ...}."""
    paths = view_paths(sample_dir, read_locations(sample_dir).uuid.iloc[0])
    return {name: paths[v].read_bytes() for v, name in enumerate(("north", "east", "south", "west"))}


def _post(app_server, **kwargs) -> httpx.Response:
    return httpx.post(app_server.url + PATH, timeout=120, **kwargs)


def test_four_views_and_a_subset_return_the_predict_json(app_server, files):
    r = _post(app_server, files={k: (f"{k}.jpg", v, "image/jpeg") for k, v in files.items()})
    assert r.status_code == 200, r.text
    result = r.json()
    assert PREDICT_CONTRACT <= set(result)
    library = Predictor.load(app_server.settings.default_checkpoint).predict(
        {0: files["north"], 90: files["east"], 180: files["south"], 270: files["west"]}
    )
    assert result["latitude"] == pytest.approx(library.latitude, abs=1e-6)
    assert 42.3 < result["latitude"] < 46.6 and 13.4 < result["longitude"] < 19.5
    one = _post(app_server, files={"west": ("w.jpg", files["west"], "image/jpeg")})
    assert one.status_code == 200 and set(one.json()["headings"]) <= {"270"}


@pytest.mark.parametrize(
    "send, status, words",
    [
        ({"data": {"north": "text"}, "files": {"east": ("e.jpg", b"x", "image/jpeg")}}, 400, "not a file"),
        ({"files": {"up": ("u.jpg", b"x", "image/jpeg")}}, 400, "Unknown field 'up'"),
        ({"files": {"north": ("n.jpg", b"GIF89a broken", "image/jpeg")}}, 400, "0 degree view"),
        ({"json": {"north": "abc"}}, 415, "multipart/form-data"),
        ({"files": {}, "data": {}}, 415, "multipart"),
    ],
    ids=["text-field", "unknown-field", "broken-image", "json-body", "empty"],
)
def test_bad_requests_get_a_json_4xx_with_one_sentence(app_server, send, status, words):
    r = _post(app_server, **send)
    assert r.status_code == status, r.text
    message = r.json()["error"]
    assert words.lower() in message.lower() and "Traceback" not in message and message.endswith(".")


def test_no_view_and_oversized_views_are_refused(app_server, files, monkeypatch):
    r = _post(app_server, files={"north": ("n.jpg", files["north"], "image/jpeg")}, data={}, headers={})
    assert r.status_code == 200
    boundary = "x1x"
    empty = f"--{boundary}--\r\n".encode()
    r = _post(
        app_server, content=empty, headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert r.status_code == 400 and "at least one view" in r.json()["error"].lower()
    big = files["north"] + b"\0" * (parse_size("25mb") + 1)
    r = _post(app_server, files={"north": ("n.jpg", big, "image/jpeg")})
    assert r.status_code == 413 and "25mb upload limit" in r.json()["error"]


def test_parse_size():
    assert parse_size("25mb") == 25 << 20 and parse_size("500kb") == 500 << 10 and parse_size("1024") == 1024
