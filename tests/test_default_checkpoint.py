"""The bundled default checkpoint: loads offline, is small, and predicts sensibly on real views."""

import json

import numpy as np
import pandas as pd

from geodemo.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from geodemo.data import read_locations, view_paths
from geodemo.geo import from_3765, haversine_km, in_croatia, to_3765
from geodemo.predict import Predictor

MAX_MB = 25


def test_default_checkpoint_is_small_safe_files_and_a_card():
    files = sorted(p.name for p in DEFAULT_CHECKPOINT.iterdir())
    assert files == ["README.md", "config.json", "model.safetensors", "retrieval.safetensors"]
    size_mb = sum(p.stat().st_size for p in DEFAULT_CHECKPOINT.iterdir()) / 2**20
    assert size_mb <= MAX_MB, f"{size_mb:.1f} MB"
    config = json.loads((DEFAULT_CHECKPOINT / "config.json").read_text())
    assert config["tasks"] == ["geocell", "region", "heading"]
    assert config["backbone"] == "tf_efficientnet_lite0"
    model, cfg = load_checkpoint(DEFAULT_CHECKPOINT)
    assert cfg.num_cells == len(cfg.cells["centroid_lat"]) > 10


def test_default_checkpoint_predicts_inside_croatia_from_one_to_four_views(sample_dir):
    predictor = Predictor.load()
    uuid = read_locations(sample_dir)["uuid"].iloc[0]
    views = view_paths(sample_dir, uuid)  # view index 0..3 (N, E, S, W) -> file
    for n in (1, 2, 4):
        pred = predictor.predict([views[v] if v < n else None for v in range(4)])
        assert in_croatia(pred.latitude, pred.longitude)
        assert abs(sum(pred.county_probabilities.values()) - 1) < 1e-4
        assert len(pred.headings) == n


def test_default_checkpoint_fits_its_training_data_better_than_the_mean(sample_dir):
    """On locations it was trained on, the right weights beat the mean coordinate (random ones do not)."""
    frame = read_locations(sample_dir).iloc[:24]
    preds = Predictor.load().predict_dataset(sample_dir, frame=frame)
    merged = frame.merge(preds, on="uuid", suffixes=("", "_pred"))
    model_km = haversine_km(merged.latitude, merged.longitude, merged.latitude_pred, merged.longitude_pred)
    all_points = read_locations(sample_dir)
    x, y = to_3765(all_points.latitude.to_numpy(), all_points.longitude.to_numpy())
    mean_lat, mean_lon = from_3765(x.mean(), y.mean())
    baseline_km = haversine_km(merged.latitude, merged.longitude, mean_lat, mean_lon)
    assert np.mean(model_km) < 0.9 * np.mean(baseline_km), (np.mean(model_km), np.mean(baseline_km))
    assert isinstance(preds, pd.DataFrame)


def test_every_sample_location_is_predicted_in_croatia_in_the_county_holding_the_point(sample_dir):
    """The served point is on Croatian land, and `county` names the county that contains it (real views)."""
    from geodemo.geo import COUNTY_CODES, county_index

    preds = Predictor.load().predict_dataset(sample_dir)
    lat, lon = preds.latitude.to_numpy(), preds.longitude.to_numpy()
    assert len(preds) == 100 and in_croatia(lat, lon, tolerance_km=0).all()
    holding = [COUNTY_CODES[i] for i in county_index(lat, lon, tolerance_km=np.inf)]
    assert preds.county.tolist() == holding
    assert (preds.expected_error_km > 0).all()
