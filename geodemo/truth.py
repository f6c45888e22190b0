"""Ground truth a user gives for a prediction: typed coordinates (decimal comma too) or a photo's EXIF GPS.

Coordinates are (lat, lon) degrees WGS84. Errors are ValueErrors with one sentence saying what to fix.
"""

from __future__ import annotations

import math

from PIL import Image, UnidentifiedImageError

LAT_RANGE, LON_RANGE = (-90.0, 90.0), (-180.0, 180.0)
_GPS_IFD = 0x8825  # EXIF pointer to the GPS tags
_LAT, _LAT_REF, _LON, _LON_REF = 2, 1, 4, 3  # GPSLatitude, GPSLatitudeRef, GPSLongitude, GPSLongitudeRef


def parse_degrees(text, name: str = "latitude") -> float | None:
    """A typed coordinate -> degrees; '' or None -> None. Accepts '45.81', '45,81' and a trailing '°'.

    Raises:
        ValueError: not a number, or outside -90..90 (latitude) / -180..180 (longitude).
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    raw = str(text).strip().rstrip("°").strip().replace(",", ".")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(
            f"The true {name} {text!r} is not a number; type degrees such as 45.81 or 45,81."
        ) from None
    lo, hi = LAT_RANGE if name == "latitude" else LON_RANGE
    if not math.isfinite(value) or not lo <= value <= hi:
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
        with Image.open(path) as image:
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
