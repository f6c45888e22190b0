"""Mapillary API v4 (CC-BY-SA imagery): the photos near a point, grouped into one location, one per heading.

Search: ``GET <base>/images?fields=id,computed_geometry,compass_angle,captured_at,creator,thumb_2048_url,
is_pano&bbox=W,S,E,N&limit=L`` with the token in an ``Authorization: OAuth <token>`` header (never in a
URL), answering ``{"data": [{"id": .., "computed_geometry": {"type": "Point", "coordinates": [lon, lat]},
"compass_angle": .., "captured_at": <ms>, "creator": {"username": .., "id": ..}, "thumb_2048_url": ..}]}``.

A location is the photos lying within `group_m` metres of one photo (the group filling the most view slots,
then the one nearest the point). Each slot 0/90/180/270 takes the photo whose compass_angle is nearest,
within ±45°, each photo used once; slots with none stay missing (the model masks them). The 2048 px
thumbnail is centre-cropped to a square and resized to 640x640 like the LUMEN views; a phone's field of
view (often 60-70°) stays narrower than Street View's 90°. Panoramas (is_pano) are left out.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from urllib.parse import urlsplit

import numpy as np

from geodemo import geo
from geodemo.collect.candidate import Candidate, Skip, checked_view
from geodemo.collect.http import LOOPBACK, CollectError, Fetcher, FetchFailed, base_url, test_mode

HEADINGS = (0, 90, 180, 270)
MAX_OFF_DEG = 45.0  # a photo fills a slot if its compass angle is within this of the slot's heading
FIELDS = "id,computed_geometry,compass_angle,captured_at,creator,thumb_2048_url,is_pano"
SEARCH_LIMIT = 500  # photos per search (the API's most is 2000)
LICENCE = "CC-BY-SA 4.0"


def _images(body: bytes) -> list[dict]:
    """The usable photos of a search answer: id, lat, lon, compass, captured (ISO date), creator, url."""
    try:
        data = json.loads(body)["data"]
    except (ValueError, KeyError, TypeError):
        raise Skip("fetch_failed", "the search answer has no 'data' list") from None
    out = []
    for item in data if isinstance(data, list) else []:
        try:
            lon, lat = item["computed_geometry"]["coordinates"][:2]
            compass, url = float(item["compass_angle"]), str(item["thumb_2048_url"])
            lat, lon = float(lat), float(lon)
        except (KeyError, TypeError, ValueError, IndexError):
            continue  # a photo without position, direction or thumbnail cannot be a view
        if item.get("is_pano") or not (math.isfinite(lat) and math.isfinite(lon) and math.isfinite(compass)):
            continue
        creator = item.get("creator") or {}
        captured = item.get("captured_at")
        when = (dt.datetime.fromtimestamp(captured / 1000, dt.timezone.utc).date().isoformat()
                if isinstance(captured, (int, float)) else "")
        out.append({"id": str(item["id"]), "lat": lat, "lon": lon, "compass": compass % 360.0, "url": url,
                    "creator": str(creator.get("username") or creator.get("id") or "unknown"),
                    "captured": when})
    return sorted(out, key=lambda p: p["id"])


def _off(a: float, b: float) -> float:
    """Angle between two headings, degrees in [0, 180]."""
    return abs((a - b + 180.0) % 360.0 - 180.0)


def choose_views(photos: list[dict]) -> dict[int, dict]:
    """Slot heading -> photo: nearest compass angle within ±MAX_OFF_DEG, each photo used once (greedy by
    angle, ties by slot then id, so the choice is deterministic)."""
    pairs = sorted((_off(p["compass"], h), h, p["id"], i) for i, p in enumerate(photos) for h in HEADINGS)
    chosen: dict[int, dict] = {}
    used = set()
    for off, heading, _, i in pairs:
        if off <= MAX_OFF_DEG and heading not in chosen and i not in used:
            chosen[heading] = photos[i]
            used.add(i)
    return chosen


class Mapillary:
    """The Mapillary source.

    Args:
        fetcher: the run's Fetcher. token: the user's access token (sent to Mapillary only, never written).
        radius_m: how far from a sample point a photo may be, metres.
        group_m: photos within this distance of each other form one location, metres.
        min_views: fewest views a kept location has (1-4).
        base: a loopback test server instead of the real endpoint (tests only).
    """

    name = "mapillary"
    requests_per_point = {"searches (free)": 1, "images": len(HEADINGS)}

    def __init__(self, fetcher: Fetcher, token: str, radius_m: float = 50.0, group_m: float = 5.0,
                 min_views: int = 1, base: str | None = None):
        self.fetcher, self.token = fetcher, token
        self.radius_m, self.group_m, self.min_views = radius_m, group_m, min_views
        self.base = base_url("mapillary", base)
        self.test = test_mode(base)

    def locate(self, lat: float, lon: float) -> Candidate:
        """The best group of photos within radius_m of (lat, lon) degrees; Skip if none or too few views."""
        dlat = self.radius_m / 111_320.0
        dlon = dlat / max(math.cos(math.radians(lat)), 1e-6)
        bbox = f"{lon - dlon:.7f},{lat - dlat:.7f},{lon + dlon:.7f},{lat + dlat:.7f}"  # W,S,E,N
        params = {"fields": FIELDS, "bbox": bbox, "limit": str(SEARCH_LIMIT)}
        reply = self.fetcher.get(f"{self.base}/images", params=params,
                                 headers={"Authorization": f"OAuth {self.token}"}, what="Mapillary search")
        if reply.status in (401, 403):
            raise CollectError(f"Mapillary refused the token (HTTP {reply.status}); make a client token at "
                               "https://www.mapillary.com/dashboard/developers and pass it again.")
        if reply.status != 200:
            raise Skip("fetch_failed", f"search HTTP {reply.status}")
        photos = _images(reply.body)
        if photos:
            d = geo.haversine_km(lat, lon, [p["lat"] for p in photos], [p["lon"] for p in photos]) * 1000
            photos = [p for p, m in zip(photos, np.atleast_1d(d)) if m <= self.radius_m]
        if not photos:
            raise Skip("no_imagery")
        return self._group(lat, lon, photos)

    def _group(self, lat: float, lon: float, photos: list[dict]) -> Candidate:
        lats, lons = np.array([p["lat"] for p in photos]), np.array([p["lon"] for p in photos])
        to_point = np.atleast_1d(geo.haversine_km(lat, lon, lats, lons))
        pairwise = geo.haversine_km(lats[:, None], lons[:, None], lats[None, :], lons[None, :]) * 1000
        best, best_score = None, None
        for seed in np.argsort(to_point, kind="stable")[:64]:
            members = [photos[j] for j in np.flatnonzero(pairwise[seed] <= self.group_m)]
            views = choose_views(members)
            score = (len(views), -to_point[seed])
            if best_score is None or score > best_score:
                best, best_score = views, score
        if len(best) < self.min_views:
            raise Skip("too_few_views")
        first = min(best.values(), key=lambda p: p["id"])
        return Candidate(f"mapillary:{first['id']}", float(np.mean([p["lat"] for p in best.values()])),
                         float(np.mean([p["lon"] for p in best.values()])), {"views": best})

    def _allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme == "https" or (self.test and parts.hostname in LOOPBACK)

    def fetch(self, candidate: Candidate) -> dict[int, bytes]:
        """{heading: 640x640 JPEG} of the chosen photos; a photo that fails validation leaves its slot empty.

        Raises:
            Skip: fewer than min_views valid views ("bad_image"), or a download failed ("fetch_failed").
        """
        views, bad = {}, 0
        for heading, photo in sorted(candidate.info["views"].items()):
            if not self._allowed(photo["url"]):
                bad += 1
                continue
            try:  # the CDN URL is signed: no token is sent with it
                reply = self.fetcher.get(photo["url"], what=f"Mapillary image {photo['id']}")
            except FetchFailed:
                raise Skip("fetch_failed", f"image {photo['id']}") from None
            if reply.status != 200:
                raise Skip("fetch_failed", f"image {photo['id']} HTTP {reply.status}")
            try:
                views[heading] = checked_view(reply.body, f"mapillary image {photo['id']}")
            except Skip:
                bad += 1
        if len(views) < self.min_views:
            raise Skip("bad_image" if bad else "too_few_views")
        for heading in list(candidate.info["views"]):
            if heading not in views:
                del candidate.info["views"][heading]
        return views

    @staticmethod
    def sources_row(candidate: Candidate, views: dict[int, bytes]) -> dict:
        """The location's sources.csv fields: image ids, capture dates, creators, licence (attribution)."""
        chosen = candidate.info["views"]
        creators = sorted({p["creator"] for p in chosen.values()})
        dates = sorted({p["captured"] for p in chosen.values() if p["captured"]})
        first = min(chosen.values(), key=lambda p: p["id"])
        return {"source": "mapillary", "source_id": ";".join(chosen[h]["id"] for h in sorted(chosen)),
                "captured": dates[0] if dates else "", "creator": ";".join(creators), "licence": LICENCE,
                "views": ";".join(f"{h}:{p['id']}@{p['compass']:.1f}" for h, p in sorted(chosen.items())),
                "url": f"https://www.mapillary.com/app/?pKey={first['id']}"}
