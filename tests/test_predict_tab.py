"""Predict-tab and result-panel callbacks as plain functions on the bundled checkpoint and real example views:
the summary names the point's county; a truth gives the error, the region check and an honest note;
new photos clear an old truth; a half-typed truth is not scored; bad uploads are refused from their header."""

import re

import numpy as np
import pytest

from geodemo.data import read_locations, view_paths
from geodemo.geo import haversine_km
from geodemo.predict import Predictor
from geodemo.ui.predict_tab import examples
from geodemo.ui.settings import EXAMPLES_DIR
from geodemo.ui.widgets import summary_markdown, truth_markdown


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
    from geodemo.ui.widgets import result_figure

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
    from geodemo.ui.widgets import result_figure

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


def _jpeg_with_gps(path, lat, lon):
    from PIL import Image

    def dms(x):
        d = int(x)
        m = int((x - d) * 60)
        return (d, m, round(((x - d) * 60 - m) * 60, 2))

    image = Image.new("RGB", (64, 64), "grey")
    exif = image.getexif()
    exif.get_ifd(0x8825).update({1: "N", 2: dms(lat), 3: "E", 4: dms(lon)})
    image.save(path, exif=exif)
    return path


def test_new_photos_clear_the_truth_given_for_the_predicted_ones(tmp_path):
    from geodemo.ui.predict_tab import photo_uploaded

    plain = tmp_path / "plain.jpg"
    from PIL import Image

    Image.new("RGB", (64, 64), "grey").save(plain)
    # after a prediction, the old truth goes (it belonged to the previous location)
    lat, lon, note, predicted = photo_uploaded(str(plain), "45.1", "15.2", True, "north")
    assert (lat, lon, note, predicted) == ("", "", "", False)
    # before any prediction a truth typed for these photos stays (untouched: not echoed back)
    import gradio as gr

    lat, lon, _, _ = photo_uploaded(str(plain), "45.1", "15.2", False, "north")
    assert lat == gr.skip() and lon == gr.skip()
    # a photo with GPS fills the cleared fields
    gps = _jpeg_with_gps(tmp_path / "gps.jpg", 45.5, 16.25)
    lat, lon, note, _ = photo_uploaded(str(gps), "43.0", "17.0", True, "north")
    assert float(lat) == pytest.approx(45.5, abs=1e-3) and float(lon) == pytest.approx(16.25, abs=1e-3)
    assert "EXIF" in note


def test_a_text_file_named_jpg_is_refused_from_its_header_at_once(tmp_path):
    import time

    import gradio as gr

    from geodemo.ui import predict_tab

    fake = tmp_path / "north.jpg"
    fake.write_text("this is not a photo\n" * 1000)
    start = time.perf_counter()
    with pytest.raises(gr.Error) as refused:
        predict_tab.photo_uploaded(str(fake), "", "", False, "north")
    assert time.perf_counter() - start < 0.5
    message = refused.value.message
    assert "north.jpg" in message and "not a readable image" in message and "/" not in message


def test_a_pause_in_typing_scores_only_a_finished_truth(example):
    from geodemo.ui.predict_tab import settled_truth, show_truth

    predictor, prediction, _ = example
    ckpt = str(predictor.path)
    for lat, lon in (("45.8", ""), ("45.8", "1"), ("45.", "15.9"), ("", "")):  # half typed or out of Croatia
        figure, told = settled_truth(prediction, lat, lon, ckpt)
        assert told == "" and "truth" not in figure
    figure, told = settled_truth(prediction, "45,815", "15.98", ckpt)
    assert "Error:" in told and '"name":"truth"' in figure.replace(" ", "")
    _, told = show_truth(prediction, "45.8", "", ckpt)  # Enter on a half-typed pair: a hint, no error
    assert "other true coordinate" in told


def test_panorama_upload_refuses_a_square_photo_and_a_new_one_clears_the_truth(tmp_path):
    import gradio as gr
    from PIL import Image

    from geodemo.ui import panorama_tab

    square = tmp_path / "square.jpg"
    Image.new("RGB", (640, 640), "grey").save(square)
    with pytest.raises(gr.Error) as refused:
        panorama_tab.uploaded(str(square), True)
    assert "640x640" in refused.value.message and "not a 2:1" in refused.value.message
    wide = tmp_path / "pano.jpg"
    Image.new("RGB", (1024, 512), "grey").save(wide)
    assert panorama_tab.uploaded(str(wide), True) == ("", "", False)  # the old panorama's truth goes
    lat, lon, _ = panorama_tab.uploaded(str(wide), False)  # no result yet: a truth typed for it stays
    assert lat == gr.skip() and lon == gr.skip()
    cleared = panorama_tab.cleared()
    assert cleared[1] == panorama_tab.EMPTY_SUMMARY and cleared[2] == [] and cleared[6] is None


def test_install_checkpoint_checks_then_installs(tmp_path):
    import shutil

    from geodemo.checkpoint import DEFAULT_CHECKPOINT, CheckpointError, install_checkpoint, is_checkpoint

    files = [DEFAULT_CHECKPOINT / "model.safetensors", DEFAULT_CHECKPOINT / "config.json"]
    out = install_checkpoint(files, "mine", tmp_path)
    assert out == tmp_path / "mine" and is_checkpoint(out)
    with pytest.raises(CheckpointError, match="already exists"):
        install_checkpoint(files, "mine", tmp_path)
    with pytest.raises(CheckpointError, match="name of letters"):
        install_checkpoint(files, "../up", tmp_path)
    broken = tmp_path / "in" / "config.json"
    broken.parent.mkdir()
    broken.write_text("{}")
    shutil.copy(files[0], broken.parent / "model.safetensors")
    with pytest.raises(CheckpointError):
        install_checkpoint([broken.parent / "model.safetensors", broken], "bad", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "mine"]  # nothing left of the refused one
