"""`/predict` through gradio_client carries the neighbours: the bundled checkpoint's training locations."""

import pytest
from gradio_client import Client, handle_file

from geodemo.data import read_locations, view_paths

pytest_plugins = ["app_fixtures"]


def test_predict_returns_similar_training_locations(app_server, sample_dir):
    client = Client(app_server.url, verbose=False)
    frame = read_locations(sample_dir).set_index("uuid")
    uid = frame.index[7]
    paths = view_paths(sample_dir, uid)
    result = client.predict(*[handle_file(str(paths[v])) for v in range(4)], api_name="/predict")
    neighbours = result["neighbours"]
    assert len(neighbours) == 5
    assert all(set(n) == {"latitude", "longitude", "similarity", "uuid"} for n in neighbours)
    similarities = [n["similarity"] for n in neighbours]
    assert similarities == sorted(similarities, reverse=True)
    # the bundled model was trained on every sample location, so this one is its own nearest neighbour
    assert neighbours[0]["uuid"] == uid and neighbours[0]["similarity"] > 0.99
    assert (neighbours[0]["latitude"], neighbours[0]["longitude"]) == pytest.approx(
        (frame.latitude[uid], frame.longitude[uid])
    )
    assert {n["uuid"] for n in neighbours} <= set(frame.index)
