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


def test_prediction_marker_is_unlike_every_heatmap_dot_and_matches_its_legend_entry():
    import plotly.colors

    fig = maps.prediction_figure(_prediction())
    shown = [t for t in fig.data if t.name == "prediction"]
    assert len(shown) == 1 and shown[0].showlegend is not False  # the legend's entry is the drawn dot
    colour = shown[0].marker.color
    heat = {c.lower() for c in plotly.colors.sequential.YlOrRd}  # the heatmap's colourscale
    others = {maps.TRUTH_COLOUR, maps.ARGMAX_COLOUR, maps.NEIGHBOUR_COLOUR}
    assert colour.lower() not in heat | others
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    assert max(r, g, b) < 60  # dark: no yellow-to-red heatmap dot is


def _grid_cells():
    from geodemo.cells import build_grid

    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(43.0, 46.2, 400), rng.uniform(14.5, 18.8, 400)
    return build_grid(lat, lon, spacing_km=25.0)


def test_credible_regions_are_smooth_outlines_that_hold_their_cells():
    import shapely

    cells = _grid_cells()
    lat, lon = cells.centroids(weighted=False)
    inside = (np.abs(np.asarray(lat) - 45.3) < 0.6) & (np.abs(np.asarray(lon) - 16.5) < 1.0)
    assert 6 < inside.sum() < len(cells)
    region = maps._smooth_region(cells, inside)
    s = cells.spacing_km * 1000.0
    centres = shapely.points((cells.grid_ix[inside] + 0.5) * s, (cells.grid_iy[inside] + 0.5) * s)
    on_land = shapely.intersects(centres, maps._land_3765_coarse())
    assert shapely.contains(region.buffer(1.0), centres[on_land]).all()  # every cell of the region is in it
    squares = shapely.union_all(shapely.box(cells.grid_ix[inside] * s, cells.grid_iy[inside] * s,
                                            (cells.grid_ix[inside] + 1) * s, (cells.grid_iy[inside] + 1) * s))
    assert region.area < 1.6 * squares.area  # an outline of the cells, not a blob around them

    def axis_aligned_share(geometry) -> float:
        xy = np.concatenate([np.asarray(p.exterior.coords) for p in shapely.get_parts(geometry)])
        d = np.diff(xy, axis=0)
        return float(np.mean((np.abs(d) < 1.0).any(axis=1)))

    assert axis_aligned_share(squares) > 0.9  # the grid squares' staircase
    assert axis_aligned_share(region) < 0.3  # the drawn outline: rounded, no staircase
    fig = maps.prediction_figure(_prediction(), cells, regions={0.5: inside})
    trace = next(t for t in fig.data if t.name == "50% credible region")
    assert trace.fill == "toself" and np.isfinite(trace.lat).sum() > 20


def test_label_map_names_more_towns_and_keeps_names_inside_the_map():
    import re

    p = maps.svg_projection()
    svg = maps.label_map_svg()
    pattern = r'<text class="town-label( minor)?" x="([\d.]+)" y="[\d.]+" text-anchor="(\w+)">([^<]+)<'
    labels = re.findall(pattern, svg)
    assert len(labels) >= 35 and sum(1 for m, *_ in labels if m) >= 20  # small towns too, drawn smaller
    names = {name for *_, name in labels}
    assert {"Zagreb", "Vinkovci", "Dubrovnik", "Gospić", "Knin"} <= names
    for _, x, anchor, name in labels:  # ~12 viewBox units per character at the larger size
        width = 12 * len(name)
        left, right = (float(x), float(x) + width) if anchor == "start" else (float(x) - width, float(x))
        assert 0 <= left and right <= p["width"], name


def test_split_modules_are_the_ones_maps_offers():
    from geodemo import plots, svgmap

    assert maps.error_histogram is plots.error_histogram and maps.training_curves is plots.training_curves
    assert maps.label_map_svg is svgmap.label_map_svg and maps.svg_projection is svgmap.svg_projection


def test_truth_and_prediction_are_drawn_above_the_similar_places():
    prediction = _prediction()
    prediction.neighbours = [{"latitude": 45.1, "longitude": 14.0, "similarity": 0.9, "uuid": "a"}]
    names = [t.name for t in maps.prediction_figure(prediction, truth=(45.1, 14.0)).data]
    near = names.index("similar-looking known places")
    assert near < names.index("truth") < names.index("prediction") == len(names) - 1
