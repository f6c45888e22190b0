"""load_rgb: every image mode and every broken input a user can upload."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from geodemo.images import ImageError, encode_jpeg, load_rgb


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels but holds almost no data (a decompression bomb stand-in)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def real_view(sample_dir):
    return next((sample_dir / "images").iterdir()) / "0.jpg"


def test_real_view_and_draft(real_view):
    full = load_rgb(real_view)
    assert full.shape == (640, 640, 3) and full.dtype == np.uint8 and full.flags["C_CONTIGUOUS"]
    small = load_rgb(real_view, min_side=64)
    assert 64 <= min(small.shape[:2]) < 640  # decoded at a reduced DCT scale, never below min_side
    assert load_rgb(real_view, min_side=224).shape[:2] == (320, 320)


def test_exif_orientation_applied():
    stored = np.zeros((20, 40, 3), np.uint8)  # H=20, W=40: left half red, right half blue
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, exif=exif)
    rgb = load_rgb(buf.getvalue())
    assert rgb.shape == (40, 20, 3)
    assert rgb[5, 10, 0] > 200 and rgb[35, 10, 2] > 200  # left (red) became the top


def test_cmyk_jpeg():
    buf = io.BytesIO()
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(buf, format="JPEG")
    r, g, b = load_rgb(buf.getvalue())[8, 8]
    assert r > 200 and g < 60 and b < 60


def test_rgba_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # one opaque red pixel, the rest fully transparent
    rgb = load_rgb(_png_bytes(Image.fromarray(rgba)))
    assert tuple(rgb[0, 0]) == (255, 0, 0) and tuple(rgb[3, 3]) == (255, 255, 255)
    assert tuple(load_rgb(rgba)[3, 3]) == (255, 255, 255)  # same from an array


def test_palette_with_transparency():
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    img.putpixel((1, 1), 1)
    img.info["transparency"] = 0
    rgb = load_rgb(_png_bytes(img))
    assert tuple(rgb[1, 1]) == (0, 255, 0) and tuple(rgb[0, 0]) == (255, 255, 255)


def test_grayscale_and_one_pixel():
    gray = load_rgb(_png_bytes(Image.new("L", (5, 3), 77)))
    assert gray.shape == (3, 5, 3) and (gray == 77).all()
    assert load_rgb(_png_bytes(Image.new("RGB", (1, 1), (1, 2, 3)))).tolist() == [[[1, 2, 3]]]


def test_16bit_png_scaled_by_range():
    ramp = np.linspace(1000, 60000, 64, dtype=np.uint16).reshape(8, 8)
    img = Image.fromarray(ramp)
    assert img.mode.startswith("I;16")
    rgb = load_rgb(_png_bytes(img))
    assert rgb.dtype == np.uint8 and rgb.min() == 0 and rgb.max() == 255
    assert (np.diff(rgb[..., 0].ravel().astype(int)) >= 0).all()


def test_pil_array_and_jpeg_round_trip():
    rgb = np.full((10, 12, 3), (10, 200, 30), np.uint8)
    assert np.array_equal(load_rgb(Image.fromarray(rgb)), rgb)
    back = load_rgb(encode_jpeg(rgb))
    assert back.shape == rgb.shape and np.abs(back.astype(int) - rgb).max() < 8


@pytest.mark.parametrize("content, expected", [
    (b"", "empty"),
    (b"this is a text file, not a photo", "not a readable image"),
    (_png_header_only(30000, 30000), "over the 64-megapixel limit"),
    (_png_header_only(10000, 8000), "10000x8000 pixels, over the 64-megapixel limit"),
])
def test_bad_files_raise_one_sentence(tmp_path, content, expected):
    path = tmp_path / "view.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=expected) as info:
        load_rgb(path)
    assert "view.jpg" in str(info.value) and "Traceback" not in str(info.value)


def test_truncated_jpeg(tmp_path, real_view):
    data = real_view.read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    for min_side in (None, 64):
        with pytest.raises(ImageError, match="cut.jpg is truncated"):
            load_rgb(path, min_side=min_side)
    with pytest.raises(ImageError, match="does not exist"):
        load_rgb(tmp_path / "nope.jpg")
