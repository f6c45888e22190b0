"""What a source finds near a sample point, why a point is skipped, and how a kept view is checked."""

from __future__ import annotations

from dataclasses import dataclass, field

from geodemo.images import ImageError, center_square, encode_jpeg, load_rgb

VIEW_SIZE = 640  # px: the LUMEN views (and the Street View requests) are 640x640
# Why a point gave no location; `final` reasons are remembered, the others are tried again by a re-run.


class Skip(Exception):
    """This point yields no location; `reason` is a key of SKIP_REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


@dataclass
class Candidate:
    """A location a source found: its id (for de-duplication), position (degrees) and source details."""

    key: str  # e.g. "streetview:<pano id>" or "mapillary:<image id>"
    latitude: float
    longitude: float
    info: dict = field(default_factory=dict)  # source-specific: what fetch() needs and sources.csv keeps


def checked_view(data: bytes, name: str, size: int = VIEW_SIZE) -> bytes:
    """A downloaded image as a `size` x `size` JPEG: validated by `load_rgb`; a square JPEG of that size
    is kept byte for byte, anything else is centre-cropped to a square and resized (INTER_AREA).

    Raises:
        Skip("bad_image"): `load_rgb` refused the bytes (not an image, truncated, oversized...).
    """
    try:
        rgb = load_rgb(data, name=name)
    except ImageError as exc:
        raise Skip("bad_image", str(exc)) from None
    if rgb.shape[:2] == (size, size) and data[:3] == b"\xff\xd8\xff":
        return data
    return encode_jpeg(center_square(rgb, size), quality=92)
