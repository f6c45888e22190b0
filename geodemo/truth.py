"""Ground truth for a prediction: typed coordinates (decimal comma too), a photo's EXIF GPS, and whether a
place was among a checkpoint's training locations (then an error against it is not a test).

Coordinates are (lat, lon) degrees WGS84. Errors are ValueErrors with one sentence saying what to fix.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from PIL import Image, UnidentifiedImageError

from geodemo import labels
from geodemo.geo import to_3765
from geodemo.images import FORMATS

OVERLAP_KM = 0.01  # a location within 10 m of a training location counts as seen in training
LAT_RANGE, LON_RANGE = (-90.0, 90.0), (-180.0, 180.0)
_GPS_IFD = 0x8825  # EXIF pointer to the GPS tags
_LAT, _LAT_REF, _LON, _LON_REF = 2, 1, 4, 3  # GPSLatitude, GPSLatitudeRef, GPSLongitude, GPSLongitudeRef


def parse_degrees(text, name: str = "latitude") -> float | None:
    """A typed coordinate -> degrees; '' or None -> None. Accepts '45.81', '45,81' and a trailing '°'.

    The number itself is read by ``geodemo.labels.parse_degrees`` (the Label tab's rule), so both tabs accept
    the same input.

    Raises:
        ValueError: not a number, or outside -90..90 (latitude) / -180..180 (longitude).
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    raw = text.strip().rstrip("°").strip() if isinstance(text, str) else text
    value = labels.parse_degrees(raw, f"true {name}")
    lo, hi = LAT_RANGE if name == "latitude" else LON_RANGE
    if not lo <= value <= hi:
        raise ValueError(f"The true {name} {value:g} is outside {lo:g}..{hi:g} degrees; check the number.")
    return value


def parse_truth(lat_text, lon_text) -> tuple[float, float] | None:
    """Both fields -> (lat, lon) degrees; None when both are empty; an error when only one is given."""
    lat, lon = parse_degrees(lat_text, "latitude"), parse_degrees(lon_text, "longitude")
    if lat is None and lon is None:
        return None
    if lat is None or lon is None:
        missing = "latitude" if lat is None else "longitude"
        raise ValueError(f"Give the true {missing} too, or clear both fields.")
    return lat, lon


def _dms(value) -> float:
    d, m, s = (float(v) for v in value)
    return d + m / 60.0 + s / 3600.0


def exif_gps(path) -> tuple[float, float] | None:
    """(lat, lon) degrees from a photo's EXIF GPS tags, or None when it has none (or is not readable).

    Only the file header is read (no pixels are decoded), so a huge or broken image costs nothing here;
    geodemo.images refuses it with a clear message when the photo itself is read.
    """
    try:
        with Image.open(path, formats=FORMATS) as image:  # never a non-photo plugin
            gps = image.getexif().get_ifd(_GPS_IFD)
        if not gps or _LAT not in gps or _LON not in gps:
            return None
        lat, lon = _dms(gps[_LAT]), _dms(gps[_LON])
    except (OSError, UnidentifiedImageError, ValueError, TypeError, ZeroDivisionError, SyntaxError):
        return None
    lat = -lat if str(gps.get(_LAT_REF, "N")).upper().startswith("S") else lat
    lon = -lon if str(gps.get(_LON_REF, "E")).upper().startswith("W") else lon
    if not (math.isfinite(lat) and math.isfinite(lon)) or (lat == 0 and lon == 0):
        return None  # (0, 0) is what many cameras write when they had no fix
    return lat, lon


def train_overlap(config, lat, lon, uuids) -> np.ndarray | None:
    """(N,) bool: location used to train the checkpoint (same uuid, or within 10 m of a training location).

    Args:
        config: the checkpoint's ModelConfig (its ``train_locations``); lat, lon: (N,) degrees; uuids: (N,).

    Returns:
        None when the checkpoint does not record its training locations (trained before they were stored).
    """
    train = config.train_locations or {}
    if "uuid" not in train:
        return None
    seen = np.isin(np.asarray(uuids, dtype=str), np.asarray(train["uuid"], dtype=str))
    if train["latitude"]:
        tree = shapely.STRtree(shapely.points(*to_3765(train["latitude"], train["longitude"])))
        query, _ = tree.query(shapely.points(*to_3765(np.atleast_1d(lat), np.atleast_1d(lon))),
                              predicate="dwithin", distance=OVERLAP_KM * 1000.0)
        seen[np.unique(query)] = True
    return seen
