"""The only way an image enters geodemo: decode anything to a safe HxWx3 uint8 RGB array.

Every failure becomes an `ImageError` with one sentence naming the file, the problem and the fix;
PIL tracebacks never reach the user.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_IMAGE_PIXELS = 64_000_000  # larger images are refused (decompression bombs)
MAX_ASPECT = 8.0  # longer side / shorter side; a 1x30000 strip would otherwise be upscaled to gigabytes
MAX_FILE_BYTES = 40 * 1024 * 1024
_WHITE = (255, 255, 255)


class ImageError(ValueError):
    """An image that cannot be used; the message says which file, what is wrong and what to do."""


def _too_big(name: str, size: str) -> ImageError:
    mp = MAX_IMAGE_PIXELS // 1_000_000
    return ImageError(f"{name} is {size} pixels, over the {mp}-megapixel limit; downscale it first.")


def check_geometry(width: int, height: int, name: str = "the image") -> None:
    """Refuse an image whose size or shape could blow up memory downstream, before any pixel is decoded.

    Args:
        width, height: pixels, as the file header states them.

    Raises:
        ImageError: no pixels, more than MAX_IMAGE_PIXELS, or longer side > MAX_ASPECT x shorter side.
    """
    if width < 1 or height < 1:
        raise ImageError(f"{name} is {width}x{height} pixels, which holds no picture; use a real photo.")
    if width * height > MAX_IMAGE_PIXELS:
        raise _too_big(name, f"{width}x{height}")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(
            f"{name} is {width}x{height} pixels, a strip more than {MAX_ASPECT:g} times longer than it is "
            f"wide; crop it to the scene (at most {MAX_ASPECT:g}:1) and try again."
        )


def center_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """The centred square of side min(H, W), resized to (size, size, 3) with INTER_AREA.

    The crop comes before any resize, so no intermediate array is larger than the input or the output
    (at most 3 MB at size 1024): the eval-time geometry of training, evaluation and serving alike.
    """
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = rgb[top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(square)
    return cv2.resize(np.ascontiguousarray(square), (size, size), interpolation=cv2.INTER_AREA)


def _open(source, name: str) -> Image.Image:
    """Open `source` lazily (header only) and refuse oversized or unreadable input."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageError(f"{name} is empty (0 bytes); upload or copy the photo again.")
        if len(data) > MAX_FILE_BYTES:
            raise ImageError(f"{name} is {len(data) / 2**20:.0f} MB, over the "
                             f"{MAX_FILE_BYTES // 2**20} MB limit; downscale or recompress it first.")
        fp = io.BytesIO(data)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{name} does not exist or is not a file; check the path.")
        nbytes = path.stat().st_size
        if nbytes == 0:
            raise ImageError(f"{name} is empty (0 bytes); copy or download the photo again.")
        if nbytes > MAX_FILE_BYTES:
            raise ImageError(f"{name} is {nbytes / 2**20:.0f} MB, over the "
                             f"{MAX_FILE_BYTES // 2**20} MB limit; downscale or recompress it first.")
        fp = io.BytesIO(path.read_bytes())  # in memory: no file handle outlives this call
    elif hasattr(source, "read"):
        return _open(source.read(), name)
    else:
        raise ImageError(f"{name} is a {type(source).__name__}, not an image; "
                         "pass a path, bytes or a PIL image.")
    try:
        with warnings.catch_warnings():
            # Our own, lower limit is checked below with the real width x height.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_big(name, f"{int(found.group(1)):,}" if found else "too many") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageError(f"{name} is not a readable image; save it as JPEG or PNG and try again.") from None
    return img


def _from_array(arr: np.ndarray, name: str) -> Image.Image:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or arr.size == 0:
        raise ImageError(f"{name} has array shape {arr.shape}; pass an HxW, HxWx3 or HxWx4 array.")
    if arr.dtype != np.uint8:
        if arr.ndim == 2:
            return Image.fromarray(arr.astype(np.float32))  # mode "F": scaled by its range in _to_rgb
        arr = _scale_to_uint8(arr.astype(np.float64))
    return Image.fromarray(np.ascontiguousarray(arr))


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map the actual value range of a high-bit-depth image onto 0..255."""
    finite = arr[np.isfinite(arr)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if hi > lo:
        arr = (arr - lo) * (255.0 / (hi - lo))
    return np.nan_to_num(np.clip(arr, 0, 255)).round().astype(np.uint8)


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode to (H, W, 3) uint8; transparency is composited on white."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        gray = _scale_to_uint8(np.asarray(img).astype(np.float64))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("P", "PA", "LA", "La", "RGBa"):
        img = img.convert("RGBA")  # palette transparency and premultiplied alpha become plain RGBA
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, _WHITE)
        background.paste(img, mask=img.getchannel("A"))
        img = background
    elif img.mode != "RGB":
        img = img.convert("RGB")  # CMYK, YCbCr, L, 1, ...
    return np.asarray(img, dtype=np.uint8)


def load_rgb(source, *, min_side: int | None = None, name: str | None = None) -> np.ndarray:
    """Decode an image into RGB.

    Args:
        source: a path, encoded bytes, a file-like object, a PIL image or an array (HxW, HxWx3, HxWx4).
        min_side: if given, JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both
            sides >= min_side pixels, which is much faster; callers still resize afterwards.
        name: how error messages refer to the image (default: the file name).

    Returns:
        C-contiguous (H, W, 3) uint8 RGB array, EXIF orientation applied.

    Raises:
        ImageError: empty, missing, non-image, truncated/corrupt, oversized (> MAX_IMAGE_PIXELS) or
            strip-shaped (aspect > MAX_ASPECT) input; checked from the header before decoding.
    """
    if name is None:
        name = Path(source).name if isinstance(source, (str, Path)) else "the image"
    if isinstance(source, np.ndarray):
        source = _from_array(source, name)
    img = _open(source, name)
    try:
        check_geometry(*img.size, name)
        if min_side and img.format in ("JPEG", "MPO"):
            img.draft("RGB", (min_side, min_side))
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, ImageError):
            raise
        if "truncated" in str(exc) or isinstance(exc, EOFError):
            raise ImageError(f"{name} is truncated (the file ends early); "
                             "copy or download it again.") from None
        raise ImageError(f"{name} is corrupt and cannot be decoded; re-save it as JPEG or PNG.") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose an otherwise good photo
        pass
    return np.ascontiguousarray(_to_rgb(img))


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    """Encode an (H, W, 3) uint8 RGB array as JPEG bytes (4:4:4 chroma above quality 90)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"cannot encode an array of shape {rgb.shape} and dtype {rgb.dtype}; "
                         "expected HxWx3 uint8.")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality,
                              subsampling=0 if quality >= 90 else 2, optimize=True)
    return buf.getvalue()
