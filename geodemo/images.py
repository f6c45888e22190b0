"""The only way an image enters geodemo: decode anything to a safe HxWx3 uint8 RGB array.

Every failure becomes an `ImageError` with one sentence naming the file, the problem and the fix;
PIL tracebacks never reach the user.

Only real photo formats are decoded (`FORMATS`, passed to every `Image.open`): PostScript, PDF, PSD and
PIL's other plugins are refused from the file header, and Ghostscript (which PIL runs for EPS) is switched
off for the whole process, so no external decoder ever runs. The work one request can buy is bounded: its
views share a budget of decoded pixels (`REQUEST_PIXELS`; JPEGs decode at reduced scale first, so a large
photo costs what its reduced copy costs) and a wall-clock deadline (`DECODE_TIMEOUT_S`), see `decode_budget`.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import EpsImagePlugin, Image, ImageOps, UnidentifiedImageError

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")  # PIL plugins that may open a file (JPEG includes MPO)
FORMAT_NAMES = "JPEG, PNG, WebP, BMP or TIFF"
MAX_IMAGE_PIXELS = 64_000_000  # larger images are refused from the header (decompression bombs)
REQUEST_PIXELS = 36_000_000  # decoded pixels, summed over one request's views (an 8192x4096 panorama fits)
DECODE_TIMEOUT_S = 10.0  # wall-clock seconds for decoding one request's views
REDUCE_ABOVE = 4_000_000  # pixels; a larger non-JPEG is box-reduced towards min_side right after decoding
MIN_SIDE = 32  # a view's shorter side, pixels; smaller ones hold no scene (labels and datasets)
MAX_ASPECT = 8.0  # longer side / shorter side; a 1x30000 strip would otherwise be upscaled to gigabytes
MAX_FILE_BYTES = 40 * 1024 * 1024
# Error messages name a file by its whole path (the CLI sets this: a dataset's views are all 0.jpg ... 270.jpg
# and their folder is the location); the app never shows server paths, so its default is the file name.
FULL_PATHS = False
_WHITE = (255, 255, 255)
_REFUSED = {b"%!PS": "PostScript (EPS)", b"\xc5\xd0\xd3\xc6": "PostScript (EPS)", b"%PDF": "PDF",
            b"8BPS": "Photoshop (PSD)"}  # named in the refusal; every other non-photo format too (below)

EpsImagePlugin.gs_binary = False  # PIL would run Ghostscript for EPS: never, for any caller in this process
Image.init()  # registers every plugin, so `formats=FORMATS` and the header check below know them all


class ImageError(ValueError):
    """An image that cannot be used; the message says which file, what is wrong and what to do."""


@dataclass
class _Budget:
    pixels: int  # decoded pixels left
    deadline: float  # time.monotonic() by which decoding must end
    seconds: float
    total: int = REQUEST_PIXELS


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("geodemo_budget", default=None)


@contextlib.contextmanager
def decode_budget(pixels: int = REQUEST_PIXELS, seconds: float = DECODE_TIMEOUT_S):
    """Every image decoded inside shares one budget: `pixels` decoded pixels and `seconds` of wall clock.

    Open one per request (the views of one location); outside any, each image gets a budget of its own.
    """
    token = _BUDGET.set(_Budget(int(pixels), time.monotonic() + float(seconds), float(seconds), int(pixels)))
    try:
        yield
    finally:
        _BUDGET.reset(token)


class _Deadline(io.BytesIO):
    """Encoded bytes whose reads fail once the deadline has passed: PIL decodes in chunks of reads, so a
    decode that runs too long stops within one chunk."""

    def __init__(self, data: bytes, budget: _Budget, name: str):
        super().__init__(data)
        self.budget, self.name = budget, name

    def read(self, size=-1):  # noqa: D102
        if time.monotonic() > self.budget.deadline:
            raise ImageError(f"{self.name} took over {self.budget.seconds:g} s to decode; "
                             "send a smaller JPEG or PNG.")
        return super().read(size)


def _format_of(data: bytes) -> str | None:
    """The name of a refused format that `data` starts with, from its header alone (nothing decoded)."""
    head = data[:16]
    for magic, kind in _REFUSED.items():
        if head.startswith(magic):
            return kind
    for fmt, (_factory, accept) in Image.OPEN.items():
        try:
            if fmt not in FORMATS and accept is not None and accept(head):
                return fmt
        except Exception:  # noqa: BLE001 - a plugin's header test must not decide anything else
            continue
    return None


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


def check_view_side(rgb: np.ndarray, name: str = "the view") -> np.ndarray:
    """`rgb` (H, W, 3) unchanged, or ImageError when its shorter side is under MIN_SIDE pixels (a thumbnail
    or a 1x1 tracking pixel holds no scene to learn or label)."""
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ImageError(f"{name} is {width}x{height} pixels, smaller than the {MIN_SIDE}-pixel minimum side "
                         "of a view; use a real photo.")
    return rgb


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


def _open(source, name: str, budget: _Budget) -> Image.Image:
    """Open `source` lazily (header only) and refuse oversized, unreadable or non-photo input."""
    if isinstance(source, Image.Image):
        if getattr(source, "format", None) not in (None, "MPO", *FORMATS):
            raise _not_a_photo(name, source.format)
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageError(f"{name} is empty (0 bytes); upload or copy the photo again.")
        if len(data) > MAX_FILE_BYTES:
            raise ImageError(f"{name} is {len(data) / 2**20:.0f} MB, over the "
                             f"{MAX_FILE_BYTES // 2**20} MB limit; downscale or recompress it first.")
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
        data = path.read_bytes()  # in memory: no file handle outlives this call
    elif hasattr(source, "read"):
        return _open(source.read(), name, budget)
    else:
        raise ImageError(f"{name} is a {type(source).__name__}, not an image; "
                         "pass a path, bytes or a PIL image.")
    try:
        with warnings.catch_warnings():
            # Our own, lower limit is checked below with the real width x height.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(_Deadline(data, budget, name), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_big(name, f"{int(found.group(1)):,}" if found else "too many") from None
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        kind = _format_of(data)
        if kind:
            raise _not_a_photo(name, kind) from None
        raise ImageError(f"{name} is not a readable image; save it as JPEG or PNG and try again.") from None
    return img


def _not_a_photo(name: str, kind: str) -> ImageError:
    return ImageError(f"{name} is a {kind} file, not a photo; only {FORMAT_NAMES} images are read, "
                      "so export it as JPEG or PNG and try again.")


def _charge(img: Image.Image, budget: _Budget, name: str) -> None:
    """Take the pixels `img` will decode (after any reduced-scale draft) from the request's budget."""
    need = img.size[0] * img.size[1]
    if need > budget.pixels:
        raise ImageError(
            f"{name} needs {need / 1e6:.1f} megapixels decoded, over the {budget.pixels / 1e6:.1f} left of "
            f"the {budget.total / 1e6:g}-megapixel budget of one request's views; downscale the "
            "photos (or send JPEGs) and try again.")
    budget.pixels -= need


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


def probe(source, name: str = "the image") -> tuple[int, int]:
    """(width, height) of an encoded image from its header, after the format and geometry checks of
    `load_rgb`; nothing is decoded, so a caller can refuse bad input before any expensive step."""
    img = _open(source, name, _Budget(REQUEST_PIXELS, time.monotonic() + DECODE_TIMEOUT_S, DECODE_TIMEOUT_S))
    check_geometry(*img.size, name)
    return img.size


def load_rgb(source, *, min_side: int | None = None, name: str | None = None) -> np.ndarray:
    """Decode an image into RGB.

    Args:
        source: a path, encoded bytes, a file-like object, a PIL image or an array (HxW, HxWx3, HxWx4).
        min_side: if given, JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both
            sides >= min_side pixels, and other formats over REDUCE_ABOVE pixels are box-reduced by a
            whole factor after decoding (same rule), which is much faster; callers still resize afterwards.
        name: how error messages refer to the image (default: the file name; the whole path under
            ``FULL_PATHS``).

    Returns:
        C-contiguous (H, W, 3) uint8 RGB array, EXIF orientation applied.

    Raises:
        ImageError: empty, missing, non-image or not one of FORMATS, truncated/corrupt, oversized
            (> MAX_IMAGE_PIXELS, or over the request's pixel budget), strip-shaped (aspect > MAX_ASPECT),
            or slower to decode than the request's deadline; all but the last checked before decoding.
    """
    if name is None:
        if isinstance(source, (str, Path)):
            name = str(source) if FULL_PATHS else Path(source).name
        else:
            name = "the image"
    if isinstance(source, np.ndarray):
        source = _from_array(source, name)
    budget = _BUDGET.get() or _Budget(REQUEST_PIXELS, time.monotonic() + DECODE_TIMEOUT_S, DECODE_TIMEOUT_S)
    img = _open(source, name, budget)
    try:
        check_geometry(*img.size, name)
        if min_side and img.format in ("JPEG", "MPO"):
            img.draft("RGB", (min_side, min_side))
        _charge(img, budget, name)
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, ImageError):
            raise
        if "truncated" in str(exc) or isinstance(exc, EOFError):
            raise ImageError(f"{name} is truncated (the file ends early); "
                             "copy or download it again.") from None
        raise ImageError(f"{name} is corrupt and cannot be decoded; re-save it as JPEG or PNG.") from None
    factor = min(img.size) // min_side if min_side else 1
    large = img.size[0] * img.size[1] > REDUCE_ABOVE  # ordinary views keep their exact pixels
    if large and factor >= 2 and img.mode in ("L", "LA", "RGB", "RGBA", "I", "F", "CMYK", "YCbCr"):
        img = img.reduce(factor)  # box average: the conversions below then touch factor**2 fewer pixels
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
