"""Known-answer tests for geodemo.geo: CRS, haversine, territory, counties, places, XYStats."""

import json
import time

import numpy as np
import pytest
import shapely

from geodemo import geo

ZAGREB = (45.8150, 15.9819)
SPLIT = (43.5081, 16.4402)
VIENNA = (48.2082, 16.3738)
OPEN_SEA = (43.0, 15.5)  # mid-Adriatic, ~18 km from the nearest Croatian island


@pytest.fixture(scope="module")
def prior(prior_csv):
    return geo.load_points_csv(prior_csv)


@pytest.fixture(scope="module")
def off_coast():
    """A point exactly 1 km off the coast: 1 km from the nearest land point toward the open sea."""
    land_x, land_y = geo.to_3765(*geo.nearest_land(*OPEN_SEA))
    sea_x, sea_y = geo.to_3765(*OPEN_SEA)
    t = 1000.0 / np.hypot(sea_x - land_x, sea_y - land_y)
    return geo.from_3765(land_x + t * (sea_x - land_x), land_y + t * (sea_y - land_y))


def test_assets_load():
    assert geo.outline().is_valid and len(geo.outline().geoms) > 200
    frame = geo.counties()
    assert frame["code"].tolist() == list(geo.COUNTY_CODES) == [f"HR-{i:02d}" for i in range(1, 22)]
    assert geo.county_names()[20] == "Grad Zagreb" and geo.county_names()[16] == "Splitsko-dalmatinska"
    assert len(geo.places()) > 400 and {"name", "latitude", "longitude", "population"} <= set(geo.places())


def test_crs_known_point_and_round_trip():
    # HTRS96/TM: central meridian 16.5 E, k0 = 0.9999, false easting 500 km; the GRS80 meridian
    # arc to 45 N is 4,984,944.38 m, so (45 N, 16.5 E) -> (500000, 0.9999 * 4984944.38).
    x, y = geo.to_3765(45.0, 16.5)
    assert np.ndim(x) == 0
    assert x == pytest.approx(500_000.0, abs=1e-3)
    assert y == pytest.approx(0.9999 * 4_984_944.378, abs=0.05)
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(42.3, 46.6, 1000), rng.uniform(13.4, 19.5, 1000)
    back_lat, back_lon = geo.from_3765(*geo.to_3765(lat, lon))
    assert np.abs(back_lat - lat).max() < 1e-9 and np.abs(back_lon - lon).max() < 1e-9


def test_broadcasting_shapes():
    x, y = geo.to_3765(np.full((2, 3), 45.0), 16.0)
    assert x.shape == y.shape == (2, 3) and x.dtype == np.float64
    assert geo.county_index([[*ZAGREB[:1]], [SPLIT[0]]], [[ZAGREB[1]], [SPLIT[1]]]).shape == (2, 1)


def test_haversine_known_pairs():
    assert geo.haversine_km(*ZAGREB, *SPLIT) == pytest.approx(259.1, abs=1.0)
    assert geo.haversine_km(*ZAGREB, *VIENNA) == pytest.approx(268.0, abs=3.0)
    assert geo.haversine_km(*ZAGREB, *ZAGREB) == 0.0


def test_haversine_float64_tiny_distances():
    # 1e-7 degree of latitude is ~1.1 cm; the haversine form must keep it to ~1e-6 relative.
    expected = geo.EARTH_RADIUS_KM * np.radians(1e-7)
    assert geo.haversine_km(45.0, 16.0, 45.0 + 1e-7, 16.0) == pytest.approx(expected, rel=1e-6)


def test_haversine_torch_matches_numpy_and_is_differentiable():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    a = rng.uniform([42.3, 13.4], [46.6, 19.5], (64, 2))
    b = rng.uniform([42.3, 13.4], [46.6, 19.5], (64, 2))
    want = geo.haversine_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    got = geo.haversine_km_torch(*(torch.from_numpy(v) for v in (a[:, 0], a[:, 1], b[:, 0], b[:, 1])))
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    tiny = geo.haversine_km_torch(torch.tensor(45.0, dtype=torch.float64), 16.0, 45.0 + 1e-7, 16.0)
    assert tiny.item() == pytest.approx(geo.EARTH_RADIUS_KM * np.radians(1e-7), rel=1e-6)
    # float32 stays float32, and a zero distance must not give NaN gradients.
    lat = torch.tensor([45.0, 44.0], requires_grad=True)
    d = geo.haversine_km_torch(lat, torch.tensor([16.0, 16.0]), torch.tensor([45.0, 45.0]), 16.0)
    assert d.dtype == torch.float32
    d.sum().backward()
    assert torch.isfinite(lat.grad).all()


def test_in_croatia_and_distance(off_coast):
    lat, lon = zip(ZAGREB, VIENNA, OPEN_SEA)
    assert geo.in_croatia(lat, lon).tolist() == [True, False, False]
    assert geo.distance_to_croatia_km(*ZAGREB) == 0.0
    assert geo.distance_to_croatia_km(*off_coast) == pytest.approx(1.0, abs=0.01)
    assert geo.in_croatia(*off_coast) and not geo.in_croatia(*off_coast, tolerance_km=0.5)


def test_county_index_known_and_snapping(off_coast):
    codes = np.array(geo.COUNTY_CODES)
    assert codes[geo.county_index(*ZAGREB)] == "HR-21"
    assert codes[geo.county_index(*SPLIT)] == "HR-17"
    assert geo.county_index(*VIENNA) == -1
    snapped = geo.county_index(*off_coast)
    assert snapped == geo.county_index(*geo.nearest_land(*OPEN_SEA)) and snapped >= 0
    assert geo.county_index(*off_coast, tolerance_km=0.5) == -1


def test_county_index_is_fast_on_the_prior(prior):
    geo.county_index(45.0, 16.0)  # load and prepare the geodata outside the timing
    start = time.perf_counter()
    ids = geo.county_index(*prior)
    assert time.perf_counter() - start < 0.5
    assert ids.shape == (4732,) and (ids >= 0).mean() > 0.99
    assert set(ids[ids >= 0].tolist()) == set(range(21))


def test_nearest_land():
    lat, lon = geo.nearest_land([OPEN_SEA[0], ZAGREB[0]], [OPEN_SEA[1], ZAGREB[1]])
    assert geo.distance_to_croatia_km(lat, lon).tolist() == [0.0, 0.0]
    assert (lat[1], lon[1]) == ZAGREB  # land points are untouched
    assert geo.haversine_km(lat[0], lon[0], *OPEN_SEA) == pytest.approx(
        geo.distance_to_croatia_km(*OPEN_SEA), rel=0.01)
    assert shapely.contains_xy(geo.outline(), lon[0], lat[0])


def test_nearest_place():
    assert geo.nearest_place(*ZAGREB) == "Zagreb"
    assert geo.nearest_place([ZAGREB[0], SPLIT[0]], [ZAGREB[1], SPLIT[1]]).tolist() == ["Zagreb", "Split"]


def test_load_points_csv(prior, tmp_path):
    lat, lon = prior
    assert lat.shape == lon.shape == (4732,) and lat.dtype == np.float64
    bad = tmp_path / "bad.csv"
    bad.write_text("lat,lng\n45,16\n")
    with pytest.raises(ValueError, match="latitude"):
        geo.load_points_csv(bad)
    bad.write_text("latitude,longitude\n45,16\nabc,16\n")
    with pytest.raises(ValueError, match="numeric"):
        geo.load_points_csv(bad)


def test_xystats_round_trip(prior):
    stats = geo.XYStats.fit(*prior)
    xy = stats.standardise(*prior)
    assert xy.shape == (4732, 2) and xy.dtype == np.float32
    np.testing.assert_allclose(xy.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(xy.std(0), 1.0, atol=1e-3)
    lat, lon = stats.invert(xy)
    assert geo.haversine_km(lat, lon, *prior).max() < 0.01  # float32 standardised coords: ~metres
    assert geo.XYStats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats
