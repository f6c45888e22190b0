"""The running app's `/predict_panorama` through gradio_client: the /predict contract, same answer as the
library, one sentence for a photo that is not a panorama."""

import pytest
from conftest import PREDICT_CONTRACT
from gradio_client import Client, handle_file

from geodemo.data import VIEW_HEADINGS, read_locations, view_paths
from geodemo.images import encode_jpeg, load_rgb
from geodemo.panorama import predict_panorama, views_to_panorama
from geodemo.predict import Predictor

pytest_plugins = ["app_fixtures"]


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server.url, verbose=False)


@pytest.fixture(scope="module")
def panorama(sample_dir, tmp_path_factory):
    """A sample location's four real views stitched into a 2:1 panorama file, and one of its views."""
    uid = read_locations(sample_dir).uuid.iloc[1]
    paths = view_paths(sample_dir, uid)
    views = {VIEW_HEADINGS[v]: load_rgb(p) for v, p in paths.items()}
    path = tmp_path_factory.mktemp("pano") / "pano.jpg"
    path.write_bytes(encode_jpeg(views_to_panorama(views)))
    return path, paths[0]


def test_predict_panorama_returns_the_predict_contract(client, panorama):
    path, _ = panorama
    result = client.predict(handle_file(str(path)), 90, api_name="/predict_panorama")
    assert set(result) == PREDICT_CONTRACT
    assert set(result["headings"]) == {"0", "90", "180", "270"}
    expected, _ = predict_panorama(Predictor.load(), path, 90)
    assert (result["latitude"], result["longitude"]) == pytest.approx((expected.latitude, expected.longitude))


def test_a_photo_that_is_not_a_panorama_is_refused(client, panorama):
    _, square_view = panorama
    with pytest.raises(Exception, match="not a 2:1") as info:
        client.predict(handle_file(str(square_view)), 0, api_name="/predict_panorama")
    assert "Traceback" not in str(info.value)
    with pytest.raises(Exception, match="(?i)upload a 360"):
        client.predict(None, 0, api_name="/predict_panorama")
