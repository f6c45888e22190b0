"""Panoramas: one equirectangular 360° image -> the four perspective views the model was trained on.

The LUMEN views are 640 x 640 Street View crops with a 90° field of view at pitch 0 (the four views of a
location abut edge to edge: north's right edge continues as east's left edge), so a panorama is cut at the
same field of view and pitch. The spherical maths is py360convert's `e2p`.

Headings are degrees clockwise from north. `centre_heading` is the compass heading the panorama's centre
column faces; Street View panoramas start (at their centre) facing the car's direction, so 0 is right only
for a car driving north — pass the real heading when it is known.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from geodemo.data import VIEW_HEADINGS
from geodemo.images import load_rgb

VIEW_FOV_DEG = 90.0  # horizontal and vertical field of view of a training view, degrees
VIEW_PITCH_DEG = 0.0  # camera pitch of a training view, degrees (0 = horizon through the centre)
VIEW_SIZE = 640  # side of a training view, pixels
ASPECT_TOLERANCE = 0.02  # width / height may differ from 2 by this fraction (odd pixel counts, crops)
MIN_PANORAMA_HEIGHT = 64  # pixels; smaller panoramas hold too little to cut views from


class PanoramaError(ValueError):
    """A panorama that cannot be cut into views; the message names the problem and the fix."""


def check_equirectangular(width: int, height: int, name: str = "the panorama") -> None:
    """Refuse anything that is not a 2:1 equirectangular image, in one sentence.

    Args:
        width, height: image size, pixels.
    """
    if height < MIN_PANORAMA_HEIGHT:
        raise PanoramaError(
            f"{name} is {width}x{height} pixels, too small for a panorama; use one at least "
            f"{2 * MIN_PANORAMA_HEIGHT}x{MIN_PANORAMA_HEIGHT} pixels."
        )
    if abs(width / height - 2.0) > 2.0 * ASPECT_TOLERANCE:
        raise PanoramaError(
            f"{name} is {width}x{height} pixels (aspect {width / height:.2f}:1), not a 2:1 equirectangular "
            "360° panorama; upload the full panorama, or use the four-view tab for ordinary photos."
        )


def check_heading(centre_heading) -> float:
    """The centre heading as degrees, or PanoramaError when it is not a number within -360..360."""
    try:
        value = float(centre_heading)
    except (TypeError, ValueError, OverflowError):
        value = math.nan
    if not math.isfinite(value):
        raise PanoramaError(f"the panorama centre heading {centre_heading!r} is not a number; give 0-360°.")
    if not -360.0 <= value <= 360.0:
        raise PanoramaError(f"the panorama centre heading {value:g}° is outside -360..360°; give the compass "
                            "heading the panorama's centre faces, 0-360°.")
    return value


def view_yaw(heading: float, centre_heading: float) -> float:
    """Yaw of a view relative to the panorama centre, degrees in [-180, 180) (+ = right = clockwise)."""
    return (float(heading) - float(centre_heading) + 180.0) % 360.0 - 180.0


def panorama_views(
    image,
    centre_heading: float = 0.0,
    *,
    size: int = VIEW_SIZE,
    fov_deg: float = VIEW_FOV_DEG,
    pitch_deg: float = VIEW_PITCH_DEG,
    headings: tuple[int, ...] = tuple(VIEW_HEADINGS),
    name: str | None = None,
) -> dict[int, np.ndarray]:
    """Cut an equirectangular panorama into perspective views, one per compass heading.

    Args:
        image: anything geodemo.images.load_rgb takes (path, bytes, PIL image, (H, W, 3) array), 2:1.
        centre_heading: compass heading of the panorama's centre column, degrees clockwise from north.
        size: side of each square view, pixels; fov_deg, pitch_deg: the views' field of view and pitch.
        headings: compass headings to cut, degrees (default the training views 0, 90, 180, 270).
        name: how errors refer to the image.

    Returns:
        {heading: (size, size, 3) uint8 RGB view}, ready for Predictor.predict.
    """
    import py360convert

    check_heading(centre_heading)
    # A 90° view of `size` px needs an equirectangular width of size * 360 / fov: decode no larger.
    need_w = int(math.ceil(size * 360.0 / fov_deg))
    rgb = load_rgb(image, min_side=need_w // 2, name=name)
    height, width = rgb.shape[:2]
    check_equirectangular(width, height, name or "the panorama")
    if width > need_w:  # area-average first: e2p samples bilinearly and would alias a larger image
        rgb = cv2.resize(rgb, (need_w, need_w // 2), interpolation=cv2.INTER_AREA)
    return {
        int(h): np.ascontiguousarray(
            py360convert.e2p(
                rgb, fov_deg, view_yaw(h, centre_heading), pitch_deg, (size, size), mode="bilinear"
            ).astype(np.uint8)
        )
        for h in headings
    }


def views_to_panorama(views: dict[int, np.ndarray], fill: int = 128) -> np.ndarray:
    """Stitch four 90° views into an equirectangular panorama centred on north (the inverse of the above).

    The views are the side faces of a cube map; above and below them the panorama is grey (`fill`).

    Args:
        views: {0, 90, 180, 270: (S, S, 3) uint8 view}, all the same size.

    Returns:
        (2S, 4S, 3) uint8 panorama whose centre column faces north.
    """
    import py360convert

    side = views[0].shape[0]
    grey = np.full((side, side, 3), fill, np.uint8)
    faces = {"F": views[0], "R": views[90], "B": views[180], "L": views[270], "U": grey, "D": grey}
    return py360convert.c2e(faces, 2 * side, 4 * side, cube_format="dict").astype(np.uint8)


def predict_panorama(predictor, image, centre_heading: float = 0.0, name: str | None = None):
    """Cut a panorama into the training views and predict its location: the path the CLI, API and app share.

    Args:
        predictor: a geodemo.predict.Predictor.
        image: the equirectangular panorama (as `panorama_views` takes); centre_heading: degrees.

    Returns:
        (Prediction, {heading: (S, S, 3) uint8 view the model saw}).
    """
    views = panorama_views(image, centre_heading, name=name)
    return predictor.predict(views), views
