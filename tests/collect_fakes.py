"""A local stand-in for the Street View Static API and Mapillary's Graph API, for tests/test_collect.py.

Answers on 127.0.0.1 in each API's documented formats, with real photos from the LUMEN sample:

- ``/streetview/metadata``: ``{"status": "OK", "pano_id", "location": {"lat", "lng"}, "date", "copyright"}``,
  or ZERO_RESULTS where `no_imagery(lat, lon)` says so; REQUEST_DENIED for a wrong key;
- ``/streetview``: a 640x640 JPEG per pano and heading (404 for an unknown pano, 403 for a wrong key);
- ``/mapillary/images``: ``{"data": [...]}`` photos near the bbox centre (token in the Authorization header);
- ``/cdn/<id>.jpg``: a 1024x768 JPEG (the signed thumbnail URL the search returned).

`faults` maps the n-th request (1-based, all paths) to an error status (429 with Retry-After, or 5xx);
`persistent` makes a path prefix always fail with 500. Every request is logged in `requests`.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from PIL import Image

KEY = "AIzaTEST-very-secret-key-0123456789"
TOKEN = "MLY|4242|very-secret-token-abcdef"
SNAP_DEG = 0.0002  # the pano lies this far north-east of the asked point (data.csv must take the pano's)
# Mapillary photos around a point: (metres north, metres east, compass angle, is_pano)
PHOTOS = [(0.0, 0.0, 3.0, False), (1.0, 0.5, 95.0, False), (-0.5, 1.0, 170.0, False),
          (0.5, -1.0, 260.0, False), (1.5, 0.0, 300.0, False), (0.2, 0.2, 45.0, True),
          (40.0, 0.0, 180.0, False)]


def _digest(*parts) -> int:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def no_imagery(lat: float, lon: float) -> bool:
    """Where the fake APIs have no imagery: a fixed fifth of all points, by their coordinates."""
    return _digest(round(lat, 5), round(lon, 5)) % 5 == 0


def photo_pool(sample_dir: Path, n: int = 6) -> list[Image.Image]:
    """`n` real views from the sample (as PIL images)."""
    files = sorted((sample_dir / "images").glob("*/0.jpg"))[:n]
    return [Image.open(f).convert("RGB") for f in files]


def _jpeg(image: Image.Image, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    image.resize(size).save(buf, format="JPEG", quality=70)
    return buf.getvalue()


class FakeApis:
    """Start with `with FakeApis(sample_dir) as api:`; `api.url` is the base URL to use."""

    def __init__(self, sample_dir: Path, delay_s: float = 0.0):
        pool = photo_pool(sample_dir)
        self.square = [_jpeg(im, (640, 640)) for im in pool]
        self.wide = [_jpeg(im, (1024, 768)) for im in pool]
        self.delay_s = delay_s
        self.faults: dict[int, int] = {}
        self.persistent: tuple[str, ...] = ()
        self.requests: list[dict] = []
        self.statuses: list[tuple[str, str]] = []  # (path, metadata status or HTTP code)
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def count(self, prefix: str) -> int:
        return sum(r["path"].startswith(prefix) for r in self.requests)

    # --- answers -------------------------------------------------------------------------------------
    def _metadata(self, q: dict):
        if q.get("key") != KEY:
            return 200, {"status": "REQUEST_DENIED", "error_message": "The provided API key is invalid."}
        lat, lon = map(float, q["location"].split(","))
        if no_imagery(lat, lon):
            return 200, {"status": "ZERO_RESULTS"}
        pano = f"pano{_digest(round(lat, 5), round(lon, 5)):08x}"
        return 200, {"status": "OK", "pano_id": pano, "copyright": "© Google", "date": "2019-07",
                     "location": {"lat": round(lat + SNAP_DEG, 7), "lng": round(lon + SNAP_DEG, 7)}}

    def _image(self, q: dict):
        if q.get("key") != KEY:
            return 403, b"forbidden"
        if not q.get("pano", "").startswith("pano") or q.get("size") != "640x640" or q.get("fov") != "90":
            return 404, b""
        return 200, self.square[_digest(q["pano"], q["heading"]) % len(self.square)]

    def _search(self, q: dict, headers) -> tuple[int, dict]:
        if headers.get("Authorization") != f"OAuth {TOKEN}":
            return 401, {"error": {"message": "Invalid OAuth access token", "code": 190}}
        w, s, e, n = map(float, q["bbox"].split(","))
        lat, lon = (s + n) / 2, (w + e) / 2
        if no_imagery(lat, lon):
            return 200, {"data": []}
        base = _digest(round(lat, 5), round(lon, 5)) % 10**9 * 10
        data = []
        for i, (north, east, compass, pano) in enumerate(PHOTOS):
            plat, plon = lat + north / 111_320, lon + east / (111_320 * 0.7)
            pid = str(base + i)
            data.append({"id": pid, "computed_geometry": {"type": "Point", "coordinates": [plon, plat]},
                         "compass_angle": compass, "captured_at": 1_563_000_000_000 + i, "is_pano": pano,
                         "creator": {"username": f"mapper{i % 2}", "id": "77"},
                         "thumb_2048_url": f"{self.url}/cdn/{pid}.jpg?sig=abc"})
        return 200, {"data": data}

    def answer(self, path: str, q: dict, headers) -> tuple[int, bytes, dict]:
        """(status, body, extra headers) of one request."""
        n = len(self.requests)
        if n in self.faults:
            status = self.faults[n]
            return status, b"slow down" if status == 429 else b"oops", ({"Retry-After": "1"}
                                                                       if status == 429 else {})
        if any(path.startswith(p) for p in self.persistent):
            return 500, b"down", {}
        if path == "/streetview/metadata":
            status, body = self._metadata(q)
            self.statuses.append((path, body["status"]))
            return status, json.dumps(body).encode(), {"Content-Type": "application/json"}
        if path == "/streetview":
            if self.delay_s:
                time.sleep(self.delay_s)
            status, body = self._image(q)
            return status, body, {"Content-Type": "image/jpeg"}
        if path == "/mapillary/images":
            status, body = self._search(q, headers)
            return status, json.dumps(body).encode(), {"Content-Type": "application/json"}
        if path.startswith("/cdn/"):
            body = self.wide[int(path[5:].split(".")[0]) % len(self.wide)]
            return 200, body, {"Content-Type": "image/jpeg"}
        return 404, b"", {}

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                parts = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(parts.query).items()}
                with api._lock:
                    api.requests.append({"path": parts.path, "query": parts.query, "params": q,
                                         "headers": dict(self.headers)})
                    status, body, headers = api.answer(parts.path, q, self.headers)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # quiet
                pass

        return Handler
