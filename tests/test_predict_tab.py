"""Predict-tab callbacks as plain functions on the bundled checkpoint and real example views: the summary
names the county containing the point; a truth gives the error, the region check and an honest note."""

import re

import numpy as np
import pytest

from geodemo.data import read_locations, view_paths
from geodemo.geo import haversine_km
from geodemo.predict import Predictor
from geodemo.ui.predict_tab import examples, summary_markdown, truth_markdown
from geodemo.ui.settings import EXAMPLES_DIR


@pytest.fixture(scope="module")
def example():
    predictor = Predictor.load()
    row = read_locations(EXAMPLES_DIR).iloc[0]
    prediction = predictor.predict({v * 90: p for v, p in view_paths(EXAMPLES_DIR, row.uuid).items()})
    return predictor, prediction, (float(row.latitude), float(row.longitude))


def test_examples_carry_their_truth():
    rows = examples()
    truth = read_locations(EXAMPLES_DIR)
    assert [float(r[4]) for r in rows] == pytest.approx(truth.latitude.tolist(), abs=1e-6)
    assert all(len(r) == 6 and all(r[:4]) for r in rows)


def test_summary_names_the_county_of_the_point_and_says_when_the_head_disagrees(example):
    _, prediction, _ = example
    text = summary_markdown(prediction)
    assert f"in **{prediction.county}** county" in text
    head = next(iter(prediction.county_probabilities))
    assert ("disagree" in text) == (head != prediction.county)
    assert f"{prediction.expected_error_km:.0f} km" in text


def test_truth_gives_the_error_region_and_a_training_data_note(example):
    predictor, prediction, truth = example
    text = truth_markdown(predictor, prediction, truth)
    shown = float(re.search(r"Error: ([\d.]+) km", text).group(1))
    error = float(haversine_km(*truth, prediction.latitude, prediction.longitude))
    assert shown == pytest.approx(error, abs=0.05)
    assert "credible region" in text
    assert "training locations" in text  # the bundled examples are among the 100 training locations
    elsewhere = truth_markdown(predictor, prediction, (45.3, 14.5))  # not a training location
    assert "Error" in elsewhere and "training locations" not in elsewhere
    assert truth_markdown(predictor, prediction, None) == ""
    assert "Predict to see" in truth_markdown(predictor, None, truth)


def test_result_map_draws_both_credible_regions_the_truth_and_the_error_line(example):
    from geodemo.ui.predict_tab import result_figure

    predictor, prediction, truth = example
    fig = result_figure(predictor, prediction, truth)
    names = [t.name for t in fig.data]
    assert {"50% credible region", "90% credible region", "truth", "prediction"} <= set(names)
    assert any(n and n.startswith("error ") for n in names)
    wide, narrow = (next(t for t in fig.data if t.name == f"{m}% credible region") for m in (90, 50))
    assert np.isfinite(wide.lat).sum() >= np.isfinite(narrow.lat).sum() > 3  # rings split by NaN
    assert "truth" not in [t.name for t in result_figure(predictor, prediction).data]  # no truth, no marker


def test_result_map_is_light_and_refers_to_the_served_static_layers(example, monkeypatch):
    """The figure carries the counties and outline as URLs once an app serves them, no inline polygons, and
    stays under 40 KB of JSON (it was 260 KB with the layers inline); the layers are built once."""
    import json

    from geodemo import maps
    from geodemo.ui.predict_tab import result_figure

    predictor, prediction, truth = example
    monkeypatch.setattr(maps, "LAYER_URLS", {})  # no layer served yet (an app built earlier in this process)
    inline = result_figure(predictor, prediction, truth).to_json()
    from geodemo.ui import map_layers

    served = {route.path: route for route in map_layers.routes()}
    fig = result_figure(predictor, prediction, truth)
    text = fig.to_json()
    assert len(text) < 40_000 < len(inline)
    layers = [t for t in fig.data if t.type == "choroplethmap"]
    assert sorted(t.geojson.split("?")[0] for t in layers) == [
        f"{map_layers.PREFIX}/counties.geojson", f"{map_layers.PREFIX}/outline.geojson"
    ]
    for name in ("counties", "outline"):
        assert maps.static_geojson(name) is maps.static_geojson(name)  # built once per process
        body = served[f"/{map_layers.PREFIX}/{name}.geojson"].endpoint().body
        assert json.loads(body) == maps.static_geojson(name)
        coords = json.dumps(maps.static_geojson(name)["features"][0]["geometry"]["coordinates"])
        assert max(len(x.split(".")[-1]) for x in coords.replace("[", "").replace("]", "").split(",")) <= 3
    assert "coordinates" not in text and "coordinates" in inline
