"""Predictor on real sample views with a tiny random model: contract, point rules, batching, TTA, Grad-CAM."""

import json

import numpy as np
import pytest
import shapely
from conftest import PREDICT_CONTRACT
from PIL import Image

from geodemo.cells import CellSet, build_grid
from geodemo.checkpoint import CheckpointError, save_checkpoint
from geodemo.data import read_locations
from geodemo.dataset import build_transform
from geodemo.geo import (
    COUNTY_CODES,
    XYStats,
    county_index,
    in_croatia,
    load_points_csv,
    nearest_land,
    to_3765,
)
from geodemo.images import load_rgb
from geodemo.model import ModelConfig, build_model
from geodemo.predict import Predictor
from geodemo.prediction import Prediction

TINY = "test_efficientnet"


@pytest.fixture(scope="module")
def make_predictor(prior_csv, tmp_path_factory):
    """Build, save and load a tiny random-weight checkpoint: make_predictor(tasks, **config overrides)."""
    lat, lon = load_points_csv(prior_csv)
    geo = {
        "cells": build_grid(lat[:300], lon[:300], spacing_km=100.0).to_dict(),
        "xy_stats": XYStats.fit(lat, lon).to_dict(),
    }

    def make(tasks=("geocell", "region", "heading"), **kwargs) -> Predictor:
        config = ModelConfig.for_backbone(TINY, list(tasks), **{"fusion": "attention", **geo, **kwargs})
        path = save_checkpoint(build_model(config), config, tmp_path_factory.mktemp("ckpt") / "tiny")
        return Predictor.load(path)

    return make


@pytest.fixture(scope="module")
def predictor(make_predictor) -> Predictor:
    return make_predictor()


@pytest.fixture(scope="module")
def location(sample_dir) -> dict:
    """The first sample location: {heading: path} for its four 640x640 views."""
    uuid = read_locations(sample_dir)["uuid"].iloc[0]
    return {h: sample_dir / "images" / uuid / f"{h}.jpg" for h in (0, 90, 180, 270)}


def test_load_is_cached_until_the_checkpoint_is_rewritten(predictor, tmp_path):
    assert Predictor.load(predictor.path) is predictor
    save_checkpoint(predictor.model, predictor.config, predictor.path)
    reloaded = Predictor.load(predictor.path)
    assert reloaded is not predictor and Predictor.load(predictor.path) is reloaded
    with pytest.raises(CheckpointError, match="does not exist"):
        Predictor.load(tmp_path / "none")


def test_preprocessing_matches_the_eval_transform(predictor, location):
    """Inference must see exactly what validation saw in training (no train/serve skew)."""
    config = predictor.config
    rgb = load_rgb(location[90], min_side=config.image_size)
    rgb = np.ascontiguousarray(np.concatenate([rgb, rgb[:, :37]], axis=1))  # not square: crop matters
    expected = build_transform(config.image_size, config.mean, config.std, train=False)(image=rgb)["image"]
    crops, _, _ = predictor._decode([{90: rgb}])
    images, mask = predictor._tensors(crops)
    assert mask.tolist() == [[False, True, False, False]]
    np.testing.assert_allclose(images[0].numpy(), expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("keys", [[0], [90, 270], [0, 90, 180, 270]])
def test_predict_one_two_four_views(predictor, location, keys):
    p = predictor.predict({h: location[h] for h in keys})
    assert isinstance(p, Prediction) and set(p.to_json()) == PREDICT_CONTRACT
    json.dumps(p.to_json())  # plain JSON types only
    assert 42 < p.latitude < 47 and 13 < p.longitude < 20
    assert set(p.headings) == {str(h) for h in keys}
    assert all(0 <= d < 360 for d in p.headings.values())
    probs = list(p.county_probabilities.values())
    assert len(probs) == 21 and probs == sorted(probs, reverse=True) and np.isclose(sum(probs), 1)
    # the county is the one containing the point (the county head's distribution is reported apart)
    assert in_croatia(p.latitude, p.longitude, tolerance_km=0)
    assert p.county_code == COUNTY_CODES[county_index(p.latitude, p.longitude, tolerance_km=np.inf)]
    assert p.expected_error_km > 0
    assert len(p.top_cells) == 10 and np.isclose(p.cell_probabilities.sum(), 1)
    assert set(p.timings_ms) == {"decode", "resize", "forward", "post"} and p.elapsed_ms > 0


def test_inputs_in_every_form_agree(predictor, location):
    by_path = predictor.predict({0: location[0], 180: location[180]})
    as_list = predictor.predict([location[0].read_bytes(), None, Image.open(location[180])])
    by_name = predictor.predict({"north": str(location[0]), "south": location[180]})
    for other in (as_list, by_name):
        np.testing.assert_allclose(other.cell_probabilities, by_path.cell_probabilities, rtol=1e-5)
    with pytest.raises(ValueError, match="at least one view"):
        predictor.predict({0: None, 90: None})
    with pytest.raises(ValueError, match="unknown view"):
        predictor.predict({45: location[0]})


def test_weighted_mean_point_lies_within_the_centroids(predictor, location):
    p = predictor.predict_batch([location], point_mode="weighted_mean")[0]
    cx, cy = to_3765(*CellSet.from_dict(predictor.config.cells).centroids(weighted=True))
    hull = shapely.MultiPoint(np.column_stack([cx, cy])).convex_hull
    assert hull.buffer(1.0).contains(shapely.Point(*to_3765(p.latitude, p.longitude)))


def test_argmax_mode_gives_a_centroid_and_cells_give_counties(make_predictor, location):
    p = make_predictor(("geocell",), point_mode="argmax").predict(location)
    assert p.argmax_cell == pytest.approx((p.top_cells[0]["latitude"], p.top_cells[0]["longitude"]))
    # the most probable cell's centroid, moved onto land when it lies at sea (a mean of island points)
    assert (p.latitude, p.longitude) == pytest.approx(nearest_land(*p.argmax_cell), abs=1e-9)
    assert np.isclose(sum(p.county_probabilities.values()), 1) and p.headings == {}


@pytest.mark.parametrize("task", ["coords", "region"])
def test_point_from_coords_or_region_alone(make_predictor, location, task):
    p = make_predictor((task,)).predict(location)
    assert 41 < p.latitude < 48 and 12 < p.longitude < 21
    assert p.cell_probabilities is None and p.top_cells == [] and p.argmax_cell is None
    assert np.isclose(sum(p.county_probabilities.values()), 1)


def test_tta_flip_is_mirror_symmetric(make_predictor, location):
    tta = make_predictor(tta_flip=True)
    size = tta.config.image_size
    views = {h: np.asarray(Image.open(path).resize((size, size))) for h, path in location.items()}
    mirrored = {
        0: views[0][:, ::-1],
        90: views[270][:, ::-1],
        180: views[180][:, ::-1],
        270: views[90][:, ::-1],
    }
    a, b = tta.predict(views), tta.predict(mirrored)
    np.testing.assert_allclose(a.cell_probabilities, b.cell_probabilities, rtol=1e-4)
    assert a.county == b.county


def test_batch_matches_single_and_dataset_frame(predictor, sample_dir):
    frame = read_locations(sample_dir).head(3)
    frame.loc[3] = ["no-such-location", 45.0, 16.0]
    single = [predictor.predict({0: sample_dir / "images" / u / "0.jpg"}) for u in frame["uuid"][:3]]
    batch = predictor.predict_batch([{0: sample_dir / "images" / u / "0.jpg"} for u in frame["uuid"][:3]], 2)
    for s, b in zip(single, batch):
        np.testing.assert_allclose(s.cell_probabilities, b.cell_probabilities, rtol=1e-4, atol=1e-7)
    seen = []
    table = predictor.predict_dataset(
        sample_dir, frame, batch_size=2, progress=lambda d, n: seen.append((d, n))
    )
    assert list(table.columns[:4]) == ["uuid", "latitude", "longitude", "county"]
    assert {"argmax_latitude", "heading_90"} <= set(table.columns) and seen[-1] == (4, 4)
    assert table.iloc[:3].notna().all().all() and np.isnan(table["latitude"].iloc[3])


def test_gradcam_overlays_present_views(predictor, location):
    overlays = predictor.gradcam({0: location[0], 270: location[270]})
    size = predictor.config.image_size
    assert sorted(overlays) == [0, 3]
    assert all(o.shape == (size, size, 3) and o.dtype == np.uint8 for o in overlays.values())


def test_refuses_a_classifier_checkpoint(tmp_path):
    config = ModelConfig.for_backbone(TINY, ["classify"], class_names=["a", "b"])
    path = save_checkpoint(build_model(config), config, tmp_path / "cls")
    with pytest.raises(CheckpointError, match="for task classify"):
        Predictor.load(path)


def _same_prediction(a: Prediction, b: Prediction) -> None:
    assert a.latitude == pytest.approx(b.latitude, abs=1e-4)
    assert a.longitude == pytest.approx(b.longitude, abs=1e-4)
    assert a.county_probabilities == pytest.approx(b.county_probabilities, abs=1e-4)
    np.testing.assert_allclose(a.cell_probabilities, b.cell_probabilities, atol=1e-4)
    assert a.headings == pytest.approx(b.headings, abs=1e-2)


def test_onnx_and_torch_engines_agree(make_predictor, location, monkeypatch):
    """The ONNX backbone is the default where onnxruntime is installed; GEODEMO_ENGINE=torch turns it off."""
    pytest.importorskip("onnxruntime")
    onnx = make_predictor()
    assert onnx.engine == "onnx"
    monkeypatch.setenv("GEODEMO_ENGINE", "torch")
    eager = Predictor.load(onnx.path)
    assert eager is not onnx and eager.engine == "torch"
    for views in (location, {90: location[90], 270: location[270]}):
        _same_prediction(onnx.predict(views), eager.predict(views))


def test_a_corrupt_cached_onnx_file_is_rebuilt(make_predictor, location, monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("GEODEMO_CACHE_DIR", str(tmp_path))
    first = make_predictor()
    (cached,) = (tmp_path / "onnx").glob("*.onnx")
    cached.write_bytes(b"not an onnx model")
    save_checkpoint(first.model, first.config, first.path)  # rewritten in place: load() loads it again
    again = Predictor.load(first.path)
    assert again is not first and again.engine == "onnx"
    assert cached.stat().st_size > 100
    _same_prediction(again.predict(location), first.predict(location))


def test_an_unwritable_cache_falls_back_to_torch(make_predictor, location, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("GEODEMO_CACHE_DIR", str(blocker))
    predictor = make_predictor()
    assert predictor.engine == "torch"
    assert 42 <= predictor.predict(location).latitude <= 47
