"""The click-to-label map of Croatia as plain SVG markup (Label and Play tabs): no Plotly, no WebGL.

Equirectangular with x scaled by cos(lat0); counties, the neighbours' land and names, and the main towns in
two sizes (GeoNames, CC BY 4.0). No road network is bundled (none is available offline), so none is drawn.
"""

from __future__ import annotations

import base64
import functools
import math
from html import escape

import numpy as np

from geodemo import geo

SIMPLIFY_DEG = 0.006  # ~600 m: enough at country zoom (as geodemo.maps)
MAJOR_TOWNS, MAJOR_GAP_KM = 14, 25.0  # named large, each this far from a larger named town
MINOR_TOWNS, MINOR_GAP_KM = 28, 22.0  # then named small, this far from any named town
LABEL_ROOM = 180.0  # viewBox units a town name needs to the right of its dot (the east edge may be cropped)

SVG_BOUNDS = {"lat_min": 42.3, "lat_max": 46.65, "lon_min": 13.35, "lon_max": 19.55}
SVG_WIDTH = 1000.0  # viewBox units; the browser scales the SVG to its box


def svg_projection() -> dict:
    """Parameters of the SVG map projection: x = (lon - lon0) * kx, y = (lat1 - lat) * ky.

    Returns:
        dict lon0, lat1, kx, ky (viewBox units per degree), width, height (viewBox units).
    """
    b = SVG_BOUNDS
    cos_lat = math.cos(math.radians((b["lat_min"] + b["lat_max"]) / 2))
    kx = SVG_WIDTH / (b["lon_max"] - b["lon_min"])
    ky = kx / cos_lat
    return {
        "lon0": b["lon_min"],
        "lat1": b["lat_max"],
        "kx": kx,
        "ky": ky,
        "width": SVG_WIDTH,
        "height": round((b["lat_max"] - b["lat_min"]) * ky, 1),
    }


def _svg_path(geometry, proj: dict) -> str:
    parts = []
    for poly in getattr(geometry, "geoms", [geometry]):
        for ring in [poly.exterior, *poly.interiors]:
            lon, lat = np.asarray(ring.coords).T
            x = (lon - proj["lon0"]) * proj["kx"]
            y = (proj["lat1"] - lat) * proj["ky"]
            parts.append("M" + "L".join(f"{a:.1f},{b:.1f}" for a, b in zip(x, y)) + "Z")
    return "".join(parts)


# Land outside Croatia, from the GLOBE DEM (scripts/make_neighbours_png.py), and where to name it.
NEIGHBOURS_PNG = geo.GEO_DIR / "neighbours_land.png"
NEIGHBOURS_BOUNDS = {"lat_min": 42.3, "lat_max": 46.6, "lon_min": 13.4, "lon_max": 19.5}
NEIGHBOUR_NAMES = (
    ("SLOVENIA", 46.25, 14.55),
    ("HUNGARY", 46.45, 17.6),
    ("SERBIA", 45.3, 19.35),
    ("BOSNIA AND HERZEGOVINA", 44.3, 17.75),
    ("MONTENEGRO", 42.75, 19.2),
    ("ITALY", 42.55, 14.0),
    ("Adriatic Sea", 43.2, 15.0),
)


def _neighbours_svg(proj: dict) -> str:
    """The neighbours' land as an embedded PNG plus their names (inner SVG markup)."""
    b = NEIGHBOURS_BOUNDS
    x, y = (b["lon_min"] - proj["lon0"]) * proj["kx"], (proj["lat1"] - b["lat_max"]) * proj["ky"]
    w = (b["lon_max"] - b["lon_min"]) * proj["kx"]
    h = (b["lat_max"] - b["lat_min"]) * proj["ky"]
    data = base64.b64encode(NEIGHBOURS_PNG.read_bytes()).decode()
    parts = [
        f'<image class="neighbours" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
        f'preserveAspectRatio="none" href="data:image/png;base64,{data}"/>'
    ]
    for name, lat, lon in NEIGHBOUR_NAMES:
        cls = "sea-label" if "Sea" in name else "country-label"
        tx, ty = (lon - proj["lon0"]) * proj["kx"], (proj["lat1"] - lat) * proj["ky"]
        parts.append(
            f'<text class="{cls}" x="{tx:.1f}" y="{ty:.1f}" text-anchor="middle">{escape(name)}</text>'
        )
    return "".join(parts)


def _towns() -> list[tuple]:
    """(place row, minor) for the towns to name: the MAJOR_TOWNS largest, each over MAJOR_GAP_KM from a
    larger one (Sesvete is not named next to Zagreb), then smaller ones over MINOR_GAP_KM from any named."""
    chosen = []
    for row in geo.places().sort_values("population", ascending=False).itertuples():
        minor = len(chosen) >= MAJOR_TOWNS
        gap = MINOR_GAP_KM if minor else MAJOR_GAP_KM
        near = (geo.haversine_km(row.latitude, row.longitude, t.latitude, t.longitude) for t, _ in chosen)
        if all(km > gap for km in near):
            chosen.append((row, minor))
        if len(chosen) == MAJOR_TOWNS + MINOR_TOWNS:
            break
    return chosen


@functools.cache
def label_map_svg() -> str:
    """Inner SVG markup (no <svg> tag): neighbours' land, the counties and the main towns (click map)."""
    proj = svg_projection()
    gdf = geo.counties()
    shapes = [_neighbours_svg(proj)]
    for name, geometry in zip(gdf.name_hr, gdf.geometry.simplify(SIMPLIFY_DEG, preserve_topology=True)):
        shapes.append(
            f'<path class="county" d="{_svg_path(geometry, proj)}"><title>{escape(name)}</title></path>'
        )
    for row, minor in _towns():
        x = (row.longitude - proj["lon0"]) * proj["kx"]
        y = (proj["lat1"] - row.latitude) * proj["ky"]
        east = x > proj["width"] - LABEL_ROOM  # near the right edge: the name goes to the left of the dot
        tx, anchor = (x - 8, "end") if east else (x + 8, "start")
        cls = " minor" if minor else ""
        shapes.append(
            f'<circle class="town{cls}" cx="{x:.1f}" cy="{y:.1f}" r="{3 if minor else 5}"/>'
            f'<text class="town-label{cls}" x="{tx:.1f}" y="{y - 6:.1f}" text-anchor="{anchor}">'
            f"{escape(row.name)}</text>"
        )
    return "".join(shapes)
