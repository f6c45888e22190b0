"""Tests for geodemo.cells on the real sample + the real 4,732-point prior."""

import json

import numpy as np
import pandas as pd
import pytest

from geodemo import cells, geo


@pytest.fixture(scope="module")
def train(sample_dir):
    frame = pd.read_csv(sample_dir / "data.csv")
    return frame["latitude"].to_numpy(), frame["longitude"].to_numpy()


@pytest.fixture(scope="module")
def prior(prior_csv):
    return geo.load_points_csv(prior_csv)


@pytest.fixture(scope="module")
def grid(train, prior):
    return cells.build_grid(*train, spacing_km=50.0, prior_lat=prior[0], prior_lon=prior[1])


@pytest.fixture(scope="module")
def semantic(train, prior):
    return cells.build_semantic_cells(*train, max_points=40, prior_lat=prior[0], prior_lon=prior[1])


def _squares(lat, lon, spacing_km):
    x, y = geo.to_3765(lat, lon)
    return np.floor(x / (spacing_km * 1000)).astype(int), np.floor(y / (spacing_km * 1000)).astype(int)


def test_grid_shapes_and_counts(grid, train, prior):
    c = len(grid)
    assert 20 < c < 200
    for name in ("center_lat", "center_lon", "centroid_lat", "centroid_lon", "count", "county"):
        assert getattr(grid, name).shape == (c,)
    assert grid.count.min() >= 1 and grid.count.sum() <= len(train[0]) + len(prior[0])
    assert ((grid.county >= 0) & (grid.county < 21)).all()


def test_clipped_centres_are_on_land(grid, semantic):
    for cs in (grid, semantic):
        assert geo.distance_to_croatia_km(cs.center_lat, cs.center_lon).max() < 1e-6


def test_weighted_centroid_is_mean_of_members(train):
    spacing = 30.0
    cs = cells.build_grid(*train, spacing_km=spacing)
    ix, iy = _squares(*train, spacing)
    x, y = geo.to_3765(*train)
    for c in range(len(cs)):
        members = (ix == cs.grid_ix[c]) & (iy == cs.grid_iy[c])
        assert members.sum() == cs.count[c]
        lat, lon = geo.from_3765(x[members].mean(), y[members].mean())
        assert abs(lat - cs.centroid_lat[c]) < 1e-6 and abs(lon - cs.centroid_lon[c]) < 1e-6


def test_assign_members_get_their_cell(grid, prior):
    ix, iy = _squares(*prior, grid.spacing_km)
    cell = grid.assign(*prior)
    kept = {(a, b): c for c, (a, b) in enumerate(zip(grid.grid_ix, grid.grid_iy))}
    expected = np.array([kept.get((a, b), -1) for a, b in zip(ix, iy)])
    inside = expected >= 0
    assert inside.mean() > 0.99
    np.testing.assert_array_equal(cell[inside], expected[inside])


def test_assign_falls_back_to_nearest_centroid(grid):
    vienna = (48.2082, 16.3738)
    cell = grid.assign(*vienna)
    assert np.ndim(cell) == 0 and 0 <= cell < len(grid)
    assert cell == np.argmin(grid.distance_km(*vienna)[0])


def test_min_points_and_prior_create_cells(train, prior):
    alone = cells.build_grid(*train, spacing_km=25.0)
    with_prior = cells.build_grid(*train, spacing_km=25.0, prior_lat=prior[0], prior_lon=prior[1])
    assert len(with_prior) > len(alone)
    dense = cells.build_grid(*train, spacing_km=25.0, prior_lat=prior[0], prior_lon=prior[1], min_points=20)
    assert len(dense) < len(with_prior) and dense.count.min() >= 20
    with pytest.raises(ValueError, match="min_points"):
        cells.build_grid(*train, spacing_km=25.0, min_points=10_000)


def test_round_trip_through_json(grid, semantic, prior):
    for cs in (grid, semantic):
        back = cells.CellSet.from_dict(json.loads(json.dumps(cs.to_dict())))
        assert back.kind == cs.kind and len(back) == len(cs)
        for name in ("center_lat", "center_lon", "centroid_lat", "centroid_lon", "count", "county"):
            np.testing.assert_array_equal(getattr(back, name), getattr(cs, name))
        np.testing.assert_array_equal(back.assign(*prior), cs.assign(*prior))
    with pytest.raises(ValueError, match="Unknown"):
        cells.CellSet.from_dict({**grid.to_dict(), "colour": 1})


def test_distance_km_and_centroids(grid):
    lat, lon = [45.8150, 43.5081], [15.9819, 16.4402]
    d = grid.distance_km(lat, lon, weighted=False)
    assert d.shape == (2, len(grid))
    np.testing.assert_allclose(d[1], geo.haversine_km(lat[1], lon[1], *grid.centroids(weighted=False)))


def test_semantic_cells_follow_county_borders(semantic, prior):
    county = geo.county_index(*prior)
    cell = semantic.assign(*prior)
    known = county >= 0
    np.testing.assert_array_equal(semantic.county[cell[known]], county[known])
    assert set(semantic.county.tolist()) == set(range(21))
    assert len(semantic) > 21  # dense counties were split
    assert np.bincount(semantic.county, minlength=21)[20] == 3  # Grad Zagreb: 112 prior points + sample
    assert (geo.county_index(semantic.center_lat, semantic.center_lon) == semantic.county).mean() > 0.9


def test_semantic_centroids_are_means_of_assigned_points(train):
    cs = cells.build_semantic_cells(*train, max_points=5)
    assert len(cs) > 21
    cell = cs.assign(*train)
    x, y = geo.to_3765(*train)
    for c in range(len(cs)):
        lat, lon = geo.from_3765(x[cell == c].mean(), y[cell == c].mean())
        assert (cell == c).sum() == cs.count[c]
        assert abs(lat - cs.centroid_lat[c]) < 1e-6 and abs(lon - cs.centroid_lon[c]) < 1e-6


def test_build_cells_dispatch(train):
    assert cells.build_cells("grid", *train, spacing_km=40.0).kind == "grid"
    assert cells.build_cells("semantic", *train).kind == "semantic"
    with pytest.raises(ValueError, match="grid"):
        cells.build_cells("hexagons", *train)
