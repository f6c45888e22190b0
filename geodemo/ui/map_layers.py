"""The maps' static GeoJSON layers (counties, national outline), served once to each browser.

``routes()`` serves each layer at ``/geodemo/layers/<name>.geojson?v=<content hash>`` and registers that URL
in ``geodemo.maps.LAYER_URLS``: from then on a figure carries the URL, not the polygons, and Plotly fetches
each layer once per page (``window.PlotlyGeoAssets``); the hash in the URL lets the browser cache it a year.
"""

from __future__ import annotations

import hashlib
import json

from fastapi.responses import Response
from fastapi.routing import APIRoute

from geodemo import maps

PREFIX = "geodemo/layers"  # relative: resolved against the page, so an app under a path prefix works too


def _endpoint(body: bytes):
    def serve() -> Response:
        return Response(body, media_type="application/geo+json",
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})

    return serve


def routes() -> list[APIRoute]:
    """GET routes for every static layer; registers their URLs with geodemo.maps."""
    out = []
    for name in maps.STATIC_LAYERS:
        body = json.dumps(maps.static_geojson(name), separators=(",", ":")).encode()
        out.append(APIRoute(f"/{PREFIX}/{name}.geojson", _endpoint(body), methods=["GET"],
                            include_in_schema=False))
        maps.LAYER_URLS[name] = f"{PREFIX}/{name}.geojson?v={hashlib.sha256(body).hexdigest()[:12]}"
    return out
