"""Panoramas: known-content synthetic panoramas, a round trip through real views, bad input, the CLI."""

import numpy as np
import pandas as pd
import pytest

from geodemo.data import read_locations, view_paths
from geodemo.images import encode_jpeg, load_rgb
from geodemo.panorama import PanoramaError, panorama_views, predict_panorama, view_yaw, views_to_panorama
from training.__main__ import main

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _azimuth(width: int) -> np.ndarray:
    """Azimuth of each column relative to the panorama centre, degrees in [-180, 180)."""
    return (np.arange(width) + 0.5) / width * 360.0 - 180.0


def quadrant_panorama(height: int = 512) -> np.ndarray:
    """Centre (ahead) red, right green, behind blue, left white: one colour per 90° sector."""
    az = _azimuth(2 * height)
    pano = np.zeros((height, 2 * height, 3), np.uint8)
    sector = ((az + 45.0) % 360.0 // 90.0).astype(int)  # 0 ahead, 1 right, 2 behind, 3 left
    pano[:] = np.array([RED, GREEN, BLUE, WHITE], np.uint8)[sector][None]
    return pano


@pytest.fixture(scope="module")
def real_views(sample_dir):
    """The first sample location's four views, 256 px."""
    import cv2

    uid = read_locations(sample_dir).uuid.iloc[0]
    paths = view_paths(sample_dir, uid)
    return {h: cv2.resize(load_rgb(paths[v]), (256, 256), interpolation=cv2.INTER_AREA)
            for v, h in enumerate((0, 90, 180, 270))}


@pytest.mark.parametrize("centre, expected", [(0, [RED, GREEN, BLUE, WHITE]), (90, [WHITE, RED, GREEN, BLUE]),
                                              (-90, [GREEN, BLUE, WHITE, RED])])
def test_each_heading_sees_its_own_sector(centre, expected):
    views = panorama_views(quadrant_panorama(), centre, size=64)
    assert list(views) == [0, 90, 180, 270]
    for heading, colour in zip(views, expected):
        view = views[heading]
        assert view.shape == (64, 64, 3) and view.dtype == np.uint8
        # all but the edge columns is the one sector, and the edge columns blend into the neighbours:
        # the field of view is exactly 90°
        pure = np.abs(view.astype(int) - colour).max(axis=2) < 8
        assert pure[:, 1:-1].all() and not pure[:, 0].any() and not pure[:, -1].any(), heading


def test_field_of_view_is_90_degrees_and_pitch_is_level():
    """Stripes 44° and 46° right of centre: only the first is in the north view; the horizon is mid-height."""
    height = 1024
    az = _azimuth(2 * height)
    pano = np.full((height, 2 * height, 3), 90, np.uint8)
    pano[height // 2 :] = 30  # ground below the horizon
    pano[:, np.abs(az - 44.0) < 0.4] = RED
    pano[:, np.abs(az - 46.0) < 0.4] = GREEN
    north = panorama_views(pano, 0, size=200)[0]
    red = np.all(north == RED, axis=2) | (np.abs(north.astype(int) - RED).max(2) < 60)
    green = np.abs(north.astype(int) - GREEN).max(2) < 60
    assert red[:, 180:].any() and not green.any()
    column = north[:, 100, 0].astype(int)  # centre column: sky 90 above the middle row, ground 30 below
    assert (column[:99] == 90).all() and (column[101:] == 30).all()


def test_training_views_abut_at_90_degrees(sample_dir):
    """The LUMEN views' own geometry: each view's right edge continues as the next view's left edge."""
    adjacent, opposite = [], []
    for uid in read_locations(sample_dir).uuid.iloc[:15]:
        paths = view_paths(sample_dir, uid)
        v = [load_rgb(paths[k]).astype(int) for k in range(4)]
        adjacent += [np.abs(v[k][:, -1] - v[(k + 1) % 4][:, 0]).mean() for k in range(4)]
        opposite.append(np.abs(v[0][:, -1] - v[2][:, 0]).mean())
    assert np.median(adjacent) < 0.4 * np.median(opposite)


def test_round_trip_of_real_views_through_a_panorama(real_views):
    """Views -> equirectangular (as 90° cube faces) -> panorama_views gives back each view, not another."""
    pano = views_to_panorama(real_views)
    cut = panorama_views(pano, 0, size=256)
    for heading, view in cut.items():
        errors = {h: np.abs(view.astype(int) - real_views[h]).mean() for h in real_views}
        assert errors[heading] < 15 and errors[heading] < 0.4 * min(
            e for h, e in errors.items() if h != heading
        ), (heading, errors)


def test_large_panorama_is_downscaled_to_the_view_resolution():
    views = panorama_views(quadrant_panorama(2048), 0)  # 4096 x 2048 in, 640 x 640 views out
    assert all(v.shape == (640, 640, 3) for v in views.values())


def test_encoded_file_is_accepted(tmp_path):
    path = tmp_path / "pano.jpg"
    path.write_bytes(encode_jpeg(quadrant_panorama(256)))
    views = panorama_views(path, 180, size=32)
    assert np.abs(views[0][16, 16].astype(int) - BLUE).max() < 30  # north looks behind the centre


@pytest.mark.parametrize("shape, match", [((480, 640, 3), "not a 2:1"), ((512, 512, 3), "not a 2:1"),
                                          ((20, 40, 3), "too small")])
def test_non_panoramas_are_refused_in_one_sentence(shape, match):
    with pytest.raises(PanoramaError, match=match) as info:
        panorama_views(np.zeros(shape, np.uint8))
    assert str(info.value).count(".") <= 2 and "\n" not in str(info.value)


def test_bad_heading_is_refused():
    with pytest.raises(PanoramaError, match="heading"):
        panorama_views(quadrant_panorama(128), float("nan"))


def test_view_yaw_wraps():
    assert view_yaw(0, 0) == 0 and view_yaw(270, 0) == -90 and view_yaw(0, 270) == 90
    assert view_yaw(180, 0) == -180 and view_yaw(10, 350) == 20


def test_predict_panorama_equals_predicting_its_views(real_views):
    from geodemo.predict import Predictor

    predictor = Predictor.load()
    pano = views_to_panorama(real_views)
    prediction, views = predict_panorama(predictor, pano, 0)
    direct = predictor.predict(views)
    assert sorted(views) == [0, 90, 180, 270]
    assert (prediction.latitude, prediction.longitude) == pytest.approx((direct.latitude, direct.longitude))
    turned, _ = predict_panorama(predictor, pano, 90)  # a different heading is a different input
    assert turned.headings != prediction.headings


def test_cli_predict_panorama(real_views, tmp_path, capsys):
    pano = tmp_path / "street.jpg"
    pano.write_bytes(encode_jpeg(views_to_panorama(real_views)))
    out, crops = tmp_path / "preds.csv", tmp_path / "crops"
    assert main(["predict", "--panorama", str(pano), "--heading", "0", "--out", str(out),
                 "--views-dir", str(crops)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["uuid", "latitude", "longitude"] and table.uuid.tolist() == ["street"]
    assert 42.3 < table.latitude[0] < 46.6 and 13.4 < table.longitude[0] < 19.5
    assert sorted(p.name for p in crops.iterdir()) == [f"street_{h}.jpg" for h in (0, 180, 270, 90)]
    square = tmp_path / "square.jpg"
    square.write_bytes(encode_jpeg(real_views[0]))
    assert main(["predict", "--panorama", str(square), "--out", str(out)]) != 0
    assert "2:1" in capsys.readouterr().err
    assert main(["predict", "--out", str(out)]) == 2
    assert "--panorama" in capsys.readouterr().err
