"""The running app through gradio_client: /predict with 1, 2, 4 and broken views; /label incl. concurrency."""

import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import PREDICT_CONTRACT
from gradio_client import Client, handle_file

from geodemo.data import read_locations, view_paths
from geodemo.validate import validate_dataset

pytest_plugins = ["app_fixtures"]


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server.url, verbose=False)


@pytest.fixture(scope="module")
def views(sample_dir):
    """The four real views (N, E, S, W) of the first sample location, as upload handles."""
    uid = read_locations(sample_dir).uuid.iloc[0]
    paths = view_paths(sample_dir, uid)
    return [handle_file(str(paths[v])) for v in range(4)]


def _in_croatia_bbox(result):
    return 42.3 < result["latitude"] < 46.6 and 13.4 < result["longitude"] < 19.5


def test_predict_four_views_returns_the_contract(client, views):
    result = client.predict(*views, api_name="/predict")
    assert set(result) == PREDICT_CONTRACT
    assert _in_croatia_bbox(result) and result["elapsed_ms"] > 0
    assert abs(sum(result["county_probabilities"].values()) - 1) < 1e-3
    assert set(result["headings"]) == {"0", "90", "180", "270"}
    assert {"latitude", "longitude", "probability"} <= set(result["top_cells"][0])


@pytest.mark.parametrize("present", [(0,), (1, 3)])
def test_predict_with_one_and_two_views(client, views, present):
    args = [views[v] if v in present else None for v in range(4)]
    result = client.predict(*args, api_name="/predict")
    assert _in_croatia_bbox(result)
    assert set(result["headings"]) == {str(90 * v) for v in present}


def test_broken_files_give_one_sentence_and_the_server_keeps_serving(client, views, tmp_path, sample_dir):
    garbage = tmp_path / "north.jpg"
    garbage.write_bytes(b"this is not a JPEG at all")
    empty = tmp_path / "east.jpg"
    empty.write_bytes(b"")
    truncated = tmp_path / "south.jpg"
    good = view_paths(sample_dir, read_locations(sample_dir).uuid.iloc[0])[0].read_bytes()
    truncated.write_bytes(good[: len(good) // 3])
    for broken in (garbage, empty, truncated):
        with pytest.raises(Exception) as info:
            client.predict(handle_file(str(broken)), None, None, None, api_name="/predict")
        message = str(info.value)
        assert broken.name in message and "Traceback" not in message
    with pytest.raises(Exception, match="(?i)at least one view"):
        client.predict(None, None, None, None, api_name="/predict")
    assert _in_croatia_bbox(client.predict(*views, api_name="/predict"))


def test_label_stores_and_refuses_points_outside_croatia(client, views, app_server):
    result = client.predict(*views, 45.815, 15.982, api_name="/label")
    assert set(result) >= {"uuid", "count", "dataset"}
    labels = app_server.settings.labels_dir
    assert result["uuid"] in set(read_locations(labels).uuid)
    before = len(read_locations(labels))
    with pytest.raises(Exception, match="outside Croatia"):
        client.predict(*views, 48.2, 16.37, api_name="/label")  # Vienna
    assert len(read_locations(labels)) == before


def test_concurrent_labels_are_all_stored_exactly_once(app_server, views):
    labels = app_server.settings.labels_dir
    before = len(read_locations(labels)) if (labels / "data.csv").exists() else 0
    results, errors = [], []

    def one(i):
        try:
            c = Client(app_server.url, verbose=False)
            results.append(
                c.predict(views[0], None, views[2], None, 45.0 + i * 0.05, 15.5, api_name="/label")
            )
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    frame = read_locations(labels)
    assert len(frame) == before + 6 and frame.uuid.is_unique
    assert {r["uuid"] for r in results} <= set(frame.uuid)
    assert validate_dataset(labels).ok


def test_checkpoint_upload_refuses_pickles_and_accepts_a_valid_one(client, app_server, tmp_path):
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"\x80\x04not really")
    with pytest.raises(Exception, match="safetensors"):
        client.predict([handle_file(str(pickle))], "bad", api_name="/upload_checkpoint")
    ckpt = app_server.settings.default_checkpoint
    files = [handle_file(str(ckpt / "model.safetensors")), handle_file(str(ckpt / "config.json"))]
    client.predict(files, "uploaded", api_name="/upload_checkpoint")
    assert (app_server.settings.checkpoints_dir / "uploaded" / "model.safetensors").exists()


def test_job_form_is_validated(client):
    with pytest.raises(Exception, match="(?i)name"):
        client.predict(
            "multi",
            "test_efficientnet",
            client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/start_training"][
                "parameters"
            ][2]["parameter_default"],
            "",
            "../../evil",
            1,
            64,
            4,
            1e-3,
            -1,
            "cpu",
            1,
            1,
            api_name="/start_training",
        )


def test_no_file_outside_the_allowed_roots_is_served(app_server):
    for target in (
        "/etc/passwd",
        str(Path(__file__).resolve().parents[1] / "app.py"),  # the repo itself, outside assets/
        str(app_server.settings.jobs_dir),
    ):
        url = f"{app_server.url}/gradio_api/file={target}"
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url, timeout=10)
        assert info.value.code in (403, 404)


def test_uploads_above_max_file_size_are_refused(client, tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * (26 * 1024 * 1024))  # the app allows 25 MB
    with pytest.raises(Exception, match="(?i)size|large|413"):
        client.predict(handle_file(str(big)), None, None, None, api_name="/predict")
