"""Plotly maps for the app: the prediction map, the error map and the game reveal.

The charts (error histogram and CDF, training curves) live in `geodemo.plots` and the SVG click map in
`geodemo.svgmap`; both are re-exported here for the tabs that call `maps.*`.

Every map is drawn offline: `map.style="white-bg"` and the bundled GeoJSON, no tile URLs and no
text-mode map traces (MapLibre would fetch glyphs from the internet for those). An online tile style
can be chosen with the env `GEODEMO_MAP_STYLE` (e.g. "open-street-map"); that is an option only.
"""

from __future__ import annotations

import functools
import json
import math
import os
from html import escape

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from geodemo import geo
from geodemo.plots import error_cdf, error_histogram, training_curves  # noqa: F401 - callers use maps.*
from geodemo.svgmap import label_map_svg, svg_projection  # noqa: F401 - callers use maps.*

CENTER = {"lat": 44.45, "lon": 16.45}  # Croatia's bounding-box centre, degrees
ZOOM = 5.95  # whole country in a ~540 px tall, ~650 px wide map
SIMPLIFY_DEG = 0.006  # ~600 m: enough at country zoom, keeps figures small
PRED_COLOUR, TRUTH_COLOUR, ARGMAX_COLOUR = "#d62728", "#2ca02c", "#6a3d9a"
PREDICTION_MARK = "#111111"  # the prediction map's point (the game keeps red for the model)
REGION_SIMPLIFY_M = 500.0  # credible-region outlines: ~half a pixel at country zoom
REGION_DISC = 0.75  # credible regions: disc radius around each cell, x the grid spacing (> 0.71: corners)
REGION_RGB = {0.5: (31, 119, 180), 0.9: (23, 190, 207)}  # credible regions (50%, 90%)
ERROR_BINS_KM = (0, 10, 25, 50, 100, 200, math.inf)
# error bins' colours, green to dark red; every one dark enough to read on white (no pale yellow)
ERROR_COLOURS = ("#1a7f37", "#5a9e1a", "#a68a00", "#e07000", "#d1452b", "#8e0b2e")
TRUTH_MARK = "#111111"  # the error map's truth dots


def map_style() -> str:
    """Map style name: "white-bg" (offline) unless `GEODEMO_MAP_STYLE` asks for a tile style."""
    return os.environ.get("GEODEMO_MAP_STYLE", "white-bg")


DRAW_DECIMALS = 3  # static layers' coordinates: 1e-3 degrees (~100 m), well under the simplification
# Static layers ("counties", "outline") referenced by URL instead of inline: an app that serves them
# (geodemo/ui/map_layers.py) registers their URLs here; Plotly fetches each once per page
# (window.PlotlyGeoAssets), so a figure carries the URL, not the polygons. Unregistered (tests, scripts),
# the GeoJSON is inline.
LAYER_URLS: dict[str, str] = {}


@functools.cache
def _counties_geojson() -> dict:
    """Simplified county polygons as a GeoJSON dict with `properties.code` / `name_hr` (built once)."""
    gdf = geo.counties()[["code", "name_hr", "geometry"]].copy()
    gdf["geometry"] = _rounded(gdf.geometry.simplify(SIMPLIFY_DEG, preserve_topology=True))
    return json.loads(gdf.to_json(drop_id=True))


def _rounded(geometry):
    """Coordinates rounded to DRAW_DECIMALS so the figure JSON stays small."""
    import shapely

    return shapely.transform(geometry, lambda coords: coords.round(DRAW_DECIMALS))


@functools.cache
def _outline_geojson() -> dict:
    """Croatia's simplified (s50) national outline, islets under ~1 km2 dropped, as GeoJSON (built once)."""
    import shapely

    with open(geo.GEO_DIR / "croatia_outline_osm_s50.geojson", encoding="utf-8") as f:
        features = json.load(f)["features"]
    polygons = []
    for feature in features:
        shape = _rounded(shapely.geometry.shape(feature["geometry"]).simplify(SIMPLIFY_DEG / 2))
        polygons += [p for p in getattr(shape, "geoms", [shape]) if p.area > 1e-4]  # islets: invisible
    geometry = shapely.geometry.mapping(shapely.MultiPolygon([shapely.Polygon(p.exterior) for p in polygons]))
    feature = {"type": "Feature", "id": "HR", "properties": {}, "geometry": geometry}
    return json.loads(json.dumps({"type": "FeatureCollection", "features": [feature]}))  # tuples -> lists


STATIC_LAYERS = {"counties": _counties_geojson, "outline": _outline_geojson}


def static_geojson(name: str) -> dict:
    """A static layer's GeoJSON ("counties" or "outline"), built once per process."""
    return STATIC_LAYERS[name]()


def _geojson(name: str):
    """What a figure carries for a static layer: its registered URL, else the GeoJSON itself."""
    return LAYER_URLS.get(name) or static_geojson(name)


def _outline_trace() -> go.Choroplethmap:
    """The national outline: a line only (transparent fill), from the shared static layer."""
    clear = "rgba(0,0,0,0)"
    return go.Choroplethmap(
        geojson=_geojson("outline"),
        locations=["HR"],
        z=[0],
        colorscale=[[0, clear], [1, clear]],
        showscale=False,
        marker={"line": {"width": 1.2, "color": "#444"}},
        hoverinfo="skip",
        showlegend=False,
        name="Croatia",
    )


def _map_layout(height: int = 540) -> dict:
    """The maps' layout: offline style, Croatia in view, no margins, the legend bottom left."""
    return {
        "map": {"style": map_style(), "center": CENTER, "zoom": ZOOM},
        "height": height,
        "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
        "legend": {"x": 0.01, "y": 0.01, "bgcolor": "rgba(255,255,255,0.85)", "font": {"size": 11}},
    }


def _map_figure(traces: list, height: int = 540, legend_title: str | None = None) -> go.Figure:
    """A map from its traces, laid out in the constructor (update_layout afterwards costs ~10-100 ms)."""
    layout = _map_layout(height)
    if legend_title:
        layout["legend"]["title"] = {"text": legend_title}
    return go.Figure(traces, layout=layout)


def _point(lat, lon, colour: str, name: str, size: int, text: str) -> list[go.Scattermap]:
    """A marker with a white halo (Scattermap markers have no outline), as two traces."""
    halo = go.Scattermap(
        lat=[lat],
        lon=[lon],
        mode="markers",
        marker={"size": size + 6, "color": "white"},
        hoverinfo="skip",
        showlegend=False,
    )
    dot = go.Scattermap(
        lat=[lat],
        lon=[lon],
        mode="markers",
        marker={"size": size, "color": colour},
        name=name,
        hovertemplate=f"{escape(text)}<extra></extra>",
    )
    return [halo, dot]


def county_layer(probabilities: dict[str, float] | None = None) -> go.Choroplethmap:
    """Counties shaded by probability (name_hr -> p); plain grey land when None."""
    features = _counties_geojson()["features"]
    codes = [f["properties"]["code"] for f in features]
    names = [f["properties"]["name_hr"] for f in features]
    probs = [float((probabilities or {}).get(n, 0.0)) for n in names]
    return go.Choroplethmap(
        geojson=_geojson("counties"),
        featureidkey="properties.code",
        locations=codes,
        z=probs,
        text=names,
        zmin=0,
        zmax=max(max(probs), 0.2),  # near-uniform probabilities stay pale
        colorscale="Blues",
        showscale=False,
        marker={"opacity": 0.55 if probabilities else 0.25, "line": {"width": 0.6, "color": "#888"}},
        hovertemplate="%{text}: %{z:.1%}<extra></extra>" if probabilities else "%{text}<extra></extra>",
        name="county probability",
    )


def _cell_trace(lat: np.ndarray, lon: np.ndarray, prob: np.ndarray, max_cells: int = 80) -> go.Scattermap:
    """Cell centroids as markers sized and coloured by probability (the heatmap)."""
    order = np.argsort(-prob)[:max_cells]
    p = prob[order]
    size = 6 + 30 * np.sqrt(p / max(float(p.max()), 1e-9))
    return go.Scattermap(
        lat=lat[order],
        lon=lon[order],
        mode="markers",
        name="cell probability",
        marker={
            "size": size,
            "color": p,
            "colorscale": "YlOrRd",
            "cmin": 0,
            "opacity": 0.8,
            "showscale": False,
        },
        customdata=p * 100,
        hovertemplate="cell %{lat:.3f}, %{lon:.3f}: %{customdata:.1f}%<extra></extra>",
    )


@functools.cache
def _land_3765_coarse():
    """Croatia's outline in EPSG:3765, simplified to 300 m: clips the credible-region squares."""
    import shapely

    return shapely.simplify(geo.outline_3765(), 300.0)


def _smooth_region(cells, inside: np.ndarray):
    """A credible region as one smooth shape in EPSG:3765 metres: a disc around each of its grid squares,
    dissolved, gaps under a cell closed, clipped to Croatian land and simplified.

    The discs (radius REGION_DISC x the spacing) cover their squares' corners, so the outline contains every
    cell of the region; dissolving discs instead of squares leaves rounded edges, not a staircase.
    """
    import shapely

    s = cells.spacing_km * 1000.0
    centres = shapely.points((cells.grid_ix[inside] + 0.5) * s, (cells.grid_iy[inside] + 0.5) * s)
    blob = shapely.union_all(shapely.buffer(centres, REGION_DISC * s, quad_segs=6))
    blob = shapely.buffer(shapely.buffer(blob, 0.5 * s, quad_segs=6), -0.5 * s, quad_segs=6)  # close gaps
    return shapely.simplify(shapely.intersection(blob, _land_3765_coarse()), REGION_SIMPLIFY_M)


def _region_traces(cells, regions: dict) -> list[go.Scattermap]:
    """Smooth outlines of credible regions (grid cells only): {mass: (C,) bool} -> a filled line trace each,
    drawn as rings in degrees."""
    import shapely

    if cells is None or cells.kind != "grid":
        return []
    traces = []
    for mass, inside in sorted(regions.items(), reverse=True):  # the wider (90%) region underneath
        parts = shapely.get_parts(_smooth_region(cells, np.asarray(inside, dtype=bool)))
        rings = [np.asarray(poly.exterior.coords) for poly in parts
                 if poly.geom_type == "Polygon" and poly.area >= 4e6]  # skip slivers under ~4 km2
        # one float32 array per axis, rings separated by NaN: sent as compact typed arrays, validated fast
        xy = np.concatenate([np.vstack([r, [np.nan, np.nan]]) for r in rings]) if rings else np.empty((0, 2))
        lats, lons = (a.astype(np.float32) for a in geo.from_3765(xy[:, 0], xy[:, 1]))
        rgb = ", ".join(map(str, REGION_RGB.get(mass, (90, 90, 90))))
        traces.append(
            go.Scattermap(
                lat=lats,
                lon=lons,
                mode="lines",
                fill="toself",
                fillcolor=f"rgba({rgb}, 0.10)",
                line={"width": 2.2 if mass < 0.75 else 1.4, "color": f"rgb({rgb})"},
                hoverinfo="skip",
                name=f"{mass:.0%} credible region",
            )
        )
    return traces


def prediction_figure(
    prediction, cells=None, truth: tuple[float, float] | None = None, regions: dict | None = None
) -> go.Figure:
    """The prediction map.

    Args:
        prediction: a `geodemo.predict.Prediction`.
        cells: the checkpoint's `CellSet` (for the full cell heatmap); top cells are used when None.
        truth: optional true (lat, lon) degrees; adds the truth marker and the error line.
        regions: optional credible regions {mass: (C,) bool over cells} (geodemo.readout); grid cells only.

    Returns:
        Figure with counties shaded by probability, credible regions, cell heatmap, argmax cell, predicted
        point and truth.
    """
    traces = [county_layer(prediction.county_probabilities), _outline_trace()]
    traces += _region_traces(cells, regions or {})
    probs = getattr(prediction, "cell_probabilities", None)
    if cells is not None and probs is not None:
        lat, lon = cells.centroids(weighted=True)
        traces.append(_cell_trace(np.asarray(lat), np.asarray(lon), np.asarray(probs, dtype=float)))
    elif prediction.top_cells:
        top = pd.DataFrame(prediction.top_cells)
        traces.append(
            _cell_trace(top.latitude.to_numpy(), top.longitude.to_numpy(), top.probability.to_numpy())
        )
    if getattr(prediction, "argmax_cell", None):
        a_lat, a_lon = prediction.argmax_cell
        traces += _point(a_lat, a_lon, ARGMAX_COLOUR, "most likely cell", 11, "most likely cell")
    traces += neighbour_traces(getattr(prediction, "neighbours", None) or [])  # under the truth: a training
    if truth is not None:  # location's truth is its own nearest neighbour
        error = float(geo.haversine_km(truth[0], truth[1], prediction.latitude, prediction.longitude))
        traces.append(
            go.Scattermap(
                lat=[truth[0], prediction.latitude],
                lon=[truth[1], prediction.longitude],
                mode="lines",
                line={"width": 2, "color": "#333"},
                hoverinfo="skip",
                name=f"error {error:.0f} km",
            )
        )
        traces += _point(truth[0], truth[1], TRUTH_COLOUR, "truth", 13, "truth")
    traces += _point(  # black in a white ring: unlike every heatmap dot (yellow to red), as in its legend
        prediction.latitude,
        prediction.longitude,
        PREDICTION_MARK,
        "prediction",
        14,
        f"prediction {prediction.latitude:.4f}, {prediction.longitude:.4f}",
    )
    return _map_figure(traces)


def empty_map(height: int = 540) -> go.Figure:
    """Croatia's counties and outline with nothing on them (placeholder before a prediction)."""
    return _map_figure([county_layer(None), _outline_trace()], height)


def _error_markers(rows, end: str, ids, colour: str, size: int, name: str, group=None) -> go.Scattermap:
    """The `end` ("true" or "pred") points of `rows` as markers whose hover names the location and error."""
    what = "truth" if end == "true" else "prediction"
    return go.Scattermap(
        lat=rows[f"{end}_lat"],
        lon=rows[f"{end}_lon"],
        mode="markers",
        marker={"size": size, "color": colour},
        name=name,
        customdata=np.column_stack([rows.error_km, ids[rows.index]]),
        hovertemplate=f"%{{customdata[1]}}<br>{what}: error %{{customdata[0]:.1f}} km<extra></extra>",
        legendgroup=group,
    )


def error_map(frame: pd.DataFrame) -> go.Figure:
    """Every location as truth (black dot, white ring) -> prediction (dot at the line's other end), the line
    and the prediction coloured by the error (binned, dark enough to read on the pale map), with a legend.

    Args:
        frame: columns true_lat, true_lon, pred_lat, pred_lon, error_km [, uuid].
    """
    traces = [county_layer(None), _outline_trace()]
    bins = pd.cut(frame.error_km, ERROR_BINS_KM, right=False)
    ids = frame.get("uuid", pd.Series("", index=frame.index)).astype(str)
    for (interval, group), colour in zip(frame.groupby(bins, observed=False), ERROR_COLOURS):
        if group.empty:
            continue
        lats = np.column_stack([group.true_lat, group.pred_lat, np.full(len(group), np.nan)]).ravel()
        lons = np.column_stack([group.true_lon, group.pred_lon, np.full(len(group), np.nan)]).ravel()
        hi = "" if math.isinf(interval.right) else f"{interval.right:.0f}"
        label = f"{interval.left:.0f}-{hi} km" if hi else f">= {interval.left:.0f} km"
        traces.append(
            go.Scattermap(
                lat=lats, lon=lons, mode="lines", line={"width": 2.5, "color": colour}, hoverinfo="skip",
                showlegend=False, legendgroup=label,
            )
        )
        traces.append(
            _error_markers(group, "pred", ids, colour, 9, f"prediction, error {label} ({len(group)})", label)
        )
    traces.append(  # the truth on top: a black dot in a white ring, unlike any prediction
        go.Scattermap(
            lat=frame.true_lat, lon=frame.true_lon, mode="markers", marker={"size": 11, "color": "white"},
            hoverinfo="skip", showlegend=False,
        )
    )
    traces.append(_error_markers(frame, "true", ids, TRUTH_MARK, 6, f"truth ({len(frame)})"))
    return _map_figure(traces, legend_title="truth ● — line — ● prediction")


GUESS_COLOUR = "#1f77b4"


def game_figure(result: dict, height: int = 460) -> go.Figure:
    """The reveal of one game round: truth, the player's guess and the model's point, with km lines.

    Args:
        result: a geodemo.game round result ({truth, guess, model: {latitude, longitude}, you_km, model_km}).
    """
    truth = (result["truth"]["latitude"], result["truth"]["longitude"])
    traces = [county_layer(), _outline_trace()]
    for key, colour, name in (("guess", GUESS_COLOUR, "your guess"), ("model", PRED_COLOUR, "model")):
        point = (result[key]["latitude"], result[key]["longitude"])
        km = result["you_km" if key == "guess" else "model_km"]
        traces.append(
            go.Scattermap(
                lat=[truth[0], point[0]],
                lon=[truth[1], point[1]],
                mode="lines",
                line={"width": 2, "color": colour},
                hoverinfo="skip",
                name=f"{name}: {km:.0f} km",
            )
        )
        traces += _point(*point, colour, name, 13, f"{name} {point[0]:.4f}, {point[1]:.4f}")
    traces += _point(*truth, TRUTH_COLOUR, "truth", 15, f"truth {truth[0]:.4f}, {truth[1]:.4f}")
    return _map_figure(traces, height)


NEIGHBOUR_COLOUR = "#e377c2"  # pink: apart from the yellow-red cell heatmap


def neighbour_traces(neighbours: list[dict]) -> list[go.Scattermap]:
    """Similar-looking known (training) places as markers; neighbours: [{latitude, longitude, similarity}]."""
    if not neighbours:
        return []
    return [
        go.Scattermap(
            lat=[n["latitude"] for n in neighbours],
            lon=[n["longitude"] for n in neighbours],
            mode="markers",
            marker={"size": 11, "color": NEIGHBOUR_COLOUR, "opacity": 0.9},
            name="similar-looking known places",
            customdata=[[i + 1, n["similarity"]] for i, n in enumerate(neighbours)],
            hovertemplate="similar known place #%{customdata[0]}, cosine %{customdata[1]:.2f}<extra></extra>",
        )
    ]
