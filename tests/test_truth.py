"""Ground truth a user gives in the Predict tab: typed degrees (decimal comma) and a photo's EXIF GPS."""

import pytest
from PIL import Image

from geodemo.truth import exif_gps, parse_degrees, parse_truth


@pytest.mark.parametrize("text, value", [("45.815", 45.815), ("45,815", 45.815), (" 45,815° ", 45.815),
                                         ("-12", -12.0), (16, 16.0)])
def test_typed_degrees_accept_a_decimal_comma(text, value):
    assert parse_degrees(text) == pytest.approx(value)


@pytest.mark.parametrize("text, message", [("north", "not a number"), ("95", "outside -90..90"),
                                           ("nan", "not a number"), ("1.2.3", "not a number")])
def test_bad_degrees_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_degrees(text, "latitude")


def test_truth_needs_both_fields_or_none():
    assert parse_truth("", None) is None
    assert parse_truth("45,8", "15,9") == pytest.approx((45.8, 15.9))
    with pytest.raises(ValueError, match="longitude too"):
        parse_truth("45.8", " ")
    with pytest.raises(ValueError, match="outside -180..180"):
        parse_truth("45.8", "200")


def _photo(path, gps: dict | None):
    exif = Image.Exif()
    if gps:
        exif.get_ifd(0x8825).update(gps)
    Image.new("RGB", (32, 32)).save(path, exif=exif)
    return path


def test_exif_gps_is_read_with_its_hemisphere(tmp_path, sample_dir):
    zagreb = _photo(tmp_path / "z.jpg", {1: "N", 2: (45.0, 48.0, 54.0), 3: "E", 4: (15.0, 58.0, 55.0)})
    assert exif_gps(zagreb) == pytest.approx((45.815, 15.98194), abs=1e-5)
    west = _photo(tmp_path / "w.jpg", {1: "S", 2: (10.0, 30.0, 0.0), 3: "W", 4: (20.0, 0.0, 0.0)})
    assert exif_gps(west) == pytest.approx((-10.5, -20.0))
    assert exif_gps(_photo(tmp_path / "none.jpg", None)) is None
    assert exif_gps(_photo(tmp_path / "zero.jpg", {1: "N", 2: (0, 0, 0), 3: "E", 4: (0, 0, 0)})) is None
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    assert exif_gps(tmp_path / "junk.jpg") is None
    first = sorted((sample_dir / "images").iterdir())[0]
    assert exif_gps(first / "0.jpg") is None  # the LUMEN sample carries no GPS
