"""The output -> point rule (geodemo.readout) on synthetic distributions over real cells built from real
coordinates: the minimum-expected-distance point, snapping into Croatia, expected error, credible regions."""

import numpy as np
import pytest

from geodemo.cells import build_grid
from geodemo.geo import XYStats, haversine_km, in_croatia, load_points_csv, to_3765
from geodemo.model import POINT_MODES, ModelConfig
from geodemo.readout import CANDIDATE_SPACING_KM, Readout

OSIJEK, DUBROVNIK, SARAJEVO = (45.55, 18.69), (42.65, 18.09), (43.86, 18.41)


@pytest.fixture(scope="module")
def readout(prior_csv) -> Readout:
    lat, lon = load_points_csv(prior_csv)
    config = ModelConfig.for_backbone(
        "test_efficientnet",
        ["geocell", "coords"],
        cells=build_grid(lat, lon, spacing_km=50.0).to_dict(),
        xy_stats=XYStats.fit(lat, lon).to_dict(),
    )
    return Readout(config)


def _cell_near(readout: Readout, point) -> int:
    return int(haversine_km(*point, readout.cell_lat, readout.cell_lon).argmin())


def _bimodal(readout: Readout, heavy: float) -> np.ndarray:
    """All the mass on two cells at Croatia's two ends: `heavy` near Osijek, the rest near Dubrovnik."""
    p = np.zeros((1, len(readout.cell_lat)))
    p[0, _cell_near(readout, OSIJEK)], p[0, _cell_near(readout, DUBROVNIK)] = heavy, 1 - heavy
    return p


@pytest.mark.parametrize("heavy", [0.55, 0.45])
def test_bimodal_gives_the_heavier_mode_not_the_middle(readout, heavy):
    p = _bimodal(readout, heavy)
    lat, lon, _ = readout.points({"geocell": p}, "min_expected_km")
    mode = OSIJEK if heavy > 0.5 else DUBROVNIK
    c = _cell_near(readout, mode)
    assert haversine_km(lat[0], lon[0], readout.cell_lat[c], readout.cell_lon[c]) < 2.0
    # the old rule's weighted mean falls between the modes (in Bosnia, then snapped to the border)
    w_lat, w_lon, _ = readout.points({"geocell": p}, "weighted_mean")
    assert min(haversine_km(w_lat[0], w_lon[0], *m) for m in (OSIJEK, DUBROVNIK)) > 50
    assert in_croatia(w_lat[0], w_lon[0], tolerance_km=0)  # ... but snapped back into Croatia


def test_min_expected_point_beats_every_candidate_and_every_other_mode(readout):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(len(readout.cell_lat), 0.05), size=64)
    r = readout.read({"geocell": p}, "min_expected_km")
    cells = readout.cell_lat[:, None], readout.cell_lon[:, None]
    cand = haversine_km(*cells, readout.cand_lat, readout.cand_lon)
    best = (p @ cand).min(1)
    np.testing.assert_allclose(r.expected_km, best, rtol=1e-9)
    for mode in ("weighted_mean", "argmax"):
        other = readout.read({"geocell": p}, mode)
        # the candidates include a land grid: within its resolution of any other point on land
        assert np.all(r.expected_km <= other.expected_km + CANDIDATE_SPACING_KM / np.sqrt(2))
        assert r.expected_km.mean() < other.expected_km.mean()
    manual = (p * haversine_km(r.lat[:, None], r.lon[:, None], readout.cell_lat, readout.cell_lon)).sum(1)
    np.testing.assert_allclose(r.expected_km, manual, rtol=1e-12)


def test_no_mode_and_no_head_returns_a_point_outside_croatia(readout):
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.full(len(readout.cell_lat), 0.3), size=200)
    for mode in POINT_MODES:
        r = readout.read({"geocell": p}, mode)
        assert in_croatia(r.lat, r.lon, tolerance_km=0).all(), mode
    # a regression output in Sarajevo and one in the Adriatic come back onto Croatian land
    stats = readout.xy_stats
    x, y = to_3765(np.array([SARAJEVO[0], 43.0]), np.array([SARAJEVO[1], 15.5]))
    coords = np.column_stack([(x - stats.mean_x) / stats.std_x, (y - stats.mean_y) / stats.std_y])
    r = readout.read({"coords": coords})
    assert in_croatia(r.lat, r.lon, tolerance_km=0).all()
    assert np.isnan(r.expected_km).all()  # a regression head has no distribution to be uncertain with


def test_credible_sets_are_the_smallest_holding_the_mass():
    p = np.array([[0.5, 0.3, 0.2, 0.0], [0.1, 0.4, 0.4, 0.1], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_array_equal(
        Readout.credible_set(p, 0.5), [[1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 0, 0]]
    )
    np.testing.assert_array_equal(
        Readout.credible_set(p, 0.9), [[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    )


def test_truth_in_region_uses_the_cell_holding_the_truth(readout):
    p = _bimodal(readout, 0.7)
    out = {"geocell": p}
    near_osijek = readout.cells.assign(*OSIJEK)
    assert near_osijek == _cell_near(readout, OSIJEK) or p[0, near_osijek] == 0
    inside = readout.truth_in_region(out, readout.cell_lat[[_cell_near(readout, OSIJEK)]],
                                     readout.cell_lon[[_cell_near(readout, OSIJEK)]], 0.5)
    assert inside.tolist() == [True]
    c = _cell_near(readout, DUBROVNIK)
    assert readout.truth_in_region(out, readout.cell_lat[[c]], readout.cell_lon[[c]], 0.5).tolist() == [False]
    assert readout.truth_in_region(out, readout.cell_lat[[c]], readout.cell_lon[[c]], 0.9).tolist() == [True]
