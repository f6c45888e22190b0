"""Google Street View Static API: snap a point to the nearest panorama (free metadata), then four views.

Metadata: ``GET <base>/metadata?location=LAT,LNG&radius=R&source=outdoor&key=K`` answers
``{"status": "OK", "pano_id": ..., "location": {"lat": .., "lng": ..}, "date": "2019-07", "copyright": ..}``
or another status (ZERO_RESULTS, NOT_FOUND, OVER_QUERY_LIMIT, REQUEST_DENIED, INVALID_REQUEST,
UNKNOWN_ERROR). Metadata requests are free. Images: ``GET <base>?size=640x640&pano=ID&heading=H&fov=90&
pitch=0&return_error_code=true&key=K``, one per heading 0, 90, 180 and 270: the competition's views.
"""

from __future__ import annotations

import json

from geodemo.collect.candidate import Candidate, Skip, checked_view
from geodemo.collect.http import CollectError, Fetcher, base_url

HEADINGS = (0, 90, 180, 270)
NO_IMAGERY = ("ZERO_RESULTS", "NOT_FOUND")
LICENCE = "Google Maps Platform Terms of Service (imagery © Google or the named contributor)"


class StreetView:
    """The Street View source.

    Args:
        fetcher: the run's Fetcher. key: the user's API key (sent to Google only, never written).
        radius_m: how far from a sample point a panorama may be, metres.
        allow_third_party: keep user-contributed panoramas (copyright not Google's).
        base: a loopback test server instead of the real endpoint (tests only).
    """

    name = "streetview"
    requests_per_point = {"metadata (free)": 1, "images": len(HEADINGS)}

    def __init__(self, fetcher: Fetcher, key: str, radius_m: float = 50.0, allow_third_party: bool = False,
                 base: str | None = None):
        self.fetcher, self.key, self.radius_m = fetcher, key, radius_m
        self.allow_third_party = allow_third_party
        self.base = base_url("streetview", base)

    def locate(self, lat: float, lon: float) -> Candidate:
        """The nearest outdoor panorama within radius_m of (lat, lon) degrees; Skip("no_imagery") if none."""
        params = {"location": f"{lat:.7f},{lon:.7f}", "radius": f"{self.radius_m:g}", "source": "outdoor",
                  "key": self.key}
        reply = self.fetcher.get(f"{self.base}/metadata", params=params, what="Street View metadata")
        if reply.status in (401, 403):
            raise CollectError(f"Street View refused the key (HTTP {reply.status}); check the key and that "
                               "the Street View Static API is enabled for its project.")
        try:
            meta = json.loads(reply.body)
            status = str(meta.get("status", ""))
        except (ValueError, AttributeError):
            raise Skip("fetch_failed", f"metadata HTTP {reply.status} was not JSON") from None
        if status in NO_IMAGERY:
            raise Skip("no_imagery")
        if status == "REQUEST_DENIED":
            raise CollectError("Street View answered REQUEST_DENIED; check the key and that the Street View "
                               "Static API is enabled for its project (and billing is set up).")
        if status == "OVER_QUERY_LIMIT":
            raise CollectError("Street View answered OVER_QUERY_LIMIT: the key's quota is spent; raise it "
                               "in the Google Cloud console or wait, then re-run (finished points are kept).")
        if status != "OK":
            raise Skip("fetch_failed", f"metadata status {status or reply.status}")
        try:
            pano, where = str(meta["pano_id"]), meta["location"]
            lat, lon = float(where["lat"]), float(where["lng"])
        except (KeyError, TypeError, ValueError):
            raise Skip("fetch_failed", "metadata without pano_id or location") from None
        copyright_ = str(meta.get("copyright", ""))
        if copyright_ and "google" not in copyright_.lower() and not self.allow_third_party:
            raise Skip("third_party")
        return Candidate(f"streetview:{pano}", lat, lon,
                         {"pano_id": pano, "date": str(meta.get("date", "")), "copyright": copyright_})

    def fetch(self, candidate: Candidate) -> dict[int, bytes]:
        """The four 640x640 views {heading: JPEG bytes}, each validated; Skip if one is missing or bad."""
        views = {}
        for heading in HEADINGS:
            params = {"size": "640x640", "pano": candidate.info["pano_id"], "heading": str(heading),
                      "fov": "90", "pitch": "0", "return_error_code": "true", "key": self.key}
            reply = self.fetcher.get(self.base, params=params, what=f"Street View image {heading}°")
            if reply.status in (401, 403):
                raise CollectError(f"Street View refused an image request (HTTP {reply.status}); the Static "
                                   "API needs billing enabled on the key's project.")
            if reply.status == 404:
                raise Skip("no_imagery")
            if reply.status != 200:
                raise Skip("fetch_failed", f"image HTTP {reply.status}")
            views[heading] = checked_view(reply.body, f"{candidate.info['pano_id']}/{heading}.jpg")
        return views

    @staticmethod
    def sources_row(candidate: Candidate, views: dict[int, bytes]) -> dict:
        """The location's sources.csv fields (no key, nothing secret)."""
        pano = candidate.info["pano_id"]
        return {"source": "streetview", "source_id": pano, "captured": candidate.info["date"],
                "creator": candidate.info["copyright"] or "© Google", "licence": LICENCE,
                "views": ";".join(f"{h}:{pano}@{h}" for h in sorted(views)),
                "url": f"https://www.google.com/maps/@?api=1&map_action=pano&pano={pano}"}
