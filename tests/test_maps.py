"""Figures: offline style, no text-mode map traces, the prediction/error layers, the SVG click projection."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from geodemo import geo, maps


def _prediction():
    names = geo.county_names()
    probs = {n: (0.6 if i == 0 else 0.4 / 20) for i, n in enumerate(names)}
    top = [
        {"latitude": 45.8, "longitude": 15.98, "probability": 0.5},
        {"latitude": 43.5, "longitude": 16.44, "probability": 0.2},
    ]
    return SimpleNamespace(
        latitude=45.5,
        longitude=16.0,
        county=names[0],
        county_probabilities=probs,
        cell_probabilities=None,
        top_cells=top,
        argmax_cell=(45.8, 15.98),
    )


def _offline(fig) -> None:
    layout = fig.to_plotly_json()["layout"]
    assert layout["map"]["style"] == "white-bg" and "layers" not in layout["map"]
    for trace in fig.data:
        if trace.type in ("scattermap", "choroplethmap"):
            # text on a map makes MapLibre fetch glyph files from the internet
            assert "text" not in (getattr(trace, "mode", None) or ""), trace.name
    assert "http" not in json.dumps(layout)


def test_prediction_figure_has_every_layer_and_stays_offline():
    fig = maps.prediction_figure(_prediction(), truth=(45.1, 14.0))
    _offline(fig)
    names = {t.name for t in fig.data}
    assert {"county probability", "cell probability", "most likely cell", "prediction", "truth"} <= names
    assert any(n and n.startswith("error ") for n in names)
    counties = next(t for t in fig.data if t.type == "choroplethmap")
    assert len(counties.locations) == 21 and max(counties.z) == pytest.approx(0.6)


def test_map_style_can_be_switched_to_tiles(monkeypatch):
    monkeypatch.setenv("GEODEMO_MAP_STYLE", "open-street-map")
    assert maps.empty_map().layout.map.style == "open-street-map"


def test_error_figures():
    frame = pd.DataFrame(
        {
            "uuid": ["a", "b", "c"],
            "true_lat": [45.8, 43.5, 45.3],
            "true_lon": [16.0, 16.4, 18.0],
            "pred_lat": [45.7, 44.5, 45.0],
            "pred_lon": [16.1, 15.4, 14.0],
            "error_km": [5, 140, 320],
        }
    )
    fig = maps.error_map(frame)
    _offline(fig)
    segments = [t for t in fig.data if t.type == "scattermap" and t.mode == "lines" and t.legendgroup]
    assert len(segments) == 3  # three error bins, one coloured trace each
    predictions = [t for t in fig.data if (t.name or "").startswith("prediction")]
    assert [t.marker.color for t in predictions] == [t.line.color for t in segments]  # line = end's colour
    assert [list(t.lat) for t in predictions] == [[45.7], [44.5], [45.0]]
    truth = next(t for t in fig.data if (t.name or "").startswith("truth"))
    assert list(truth.lat) == [45.8, 43.5, 45.3]
    assert truth.marker.color not in [t.marker.color for t in predictions]
    assert "truth" in fig.layout.legend.title.text and "prediction" in fig.layout.legend.title.text
    assert maps.error_histogram(frame).data[0].type == "histogram"
    cdf = maps.error_cdf(frame).data[0]
    assert list(cdf.y) == pytest.approx([1 / 3, 2 / 3, 1])


def test_training_curves_handle_empty_and_partial_history():
    assert len(maps.training_curves([]).data) == 2
    fig = maps.training_curves(
        [{"epoch": 0, "train/loss": 2.0}, {"epoch": 1, "train/loss": 1.5, "val/mean_km": 90}]
    )
    assert list(fig.data[0].y) == [2.0, 1.5]


def test_svg_projection_round_trips_and_svg_holds_all_counties():
    p = maps.svg_projection()
    lat, lon = np.array([45.815, 42.65]), np.array([15.982, 18.09])
    x, y = (lon - p["lon0"]) * p["kx"], (p["lat1"] - lat) * p["ky"]
    assert ((0 < x) & (x < p["width"]) & (0 < y) & (y < p["height"])).all()
    np.testing.assert_allclose(p["lat1"] - y / p["ky"], lat)  # what the click JS computes
    np.testing.assert_allclose(p["lon0"] + x / p["kx"], lon)
    svg = maps.label_map_svg()
    assert svg.count('class="county"') == 21 and "Zagreb" in svg and "<script" not in svg
