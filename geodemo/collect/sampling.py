"""Where to look: seeded sample points inside Croatia, kept apart from each other and from other datasets.

Three ways to sample (all on land, inside the bundled outline, in EPSG:3765 metres):

- ``prior``: near the bundled coordinate prior (4,732 real Street View locations), so most points have
  imagery close by; each draw is a prior point moved by a Gaussian of `PRIOR_JITTER_KM`;
- ``uniform``: uniformly over Croatian land;
- ``county``: the same number of points in each of the 21 counties (uniform inside each).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import shapely

from geodemo import geo
from geodemo.collect.http import CollectError
from geodemo.collect.vocab import SAMPLINGS

PRIOR_JITTER_KM = 1.5  # sd of the offset from a prior point, km: near known imagery, not on top of it
BATCH = 4096  # candidates drawn per round
MAX_ROUNDS = 200  # then the spacing or exclusion is judged too tight for the number asked


class PointIndex:
    """EPSG:3765 points hashed into square cells, answering "is any point within r km?" as points arrive."""

    def __init__(self, radius_km: float):
        self.radius_m = radius_km * 1000.0
        self.cell = max(self.radius_m, 1.0)
        self.grid: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)

    def add(self, x: float, y: float) -> None:
        self.grid[(math.floor(x / self.cell), math.floor(y / self.cell))].append((x, y))

    def near(self, x: float, y: float) -> bool:
        """True if a stored point lies within the radius of (x, y) metres (radius 0: never)."""
        if self.radius_m <= 0:
            return False
        cx, cy = math.floor(x / self.cell), math.floor(y / self.cell)
        for i in (cx - 1, cx, cx + 1):
            for j in (cy - 1, cy, cy + 1):
                for px, py in self.grid.get((i, j), ()):
                    if (px - x) ** 2 + (py - y) ** 2 <= self.radius_m ** 2:
                        return True
        return False

    def __len__(self) -> int:
        return sum(len(v) for v in self.grid.values())


def exclusion_index(paths, radius_km: float) -> PointIndex:
    """The locations of every `--exclude` dataset folder (its data.csv) or CSV file (latitude,longitude)."""
    from geodemo.data import DatasetError, read_locations

    index = PointIndex(radius_km)
    for path in paths:
        path = Path(path)
        try:
            if path.is_dir():
                frame = read_locations(path)
                lat, lon = frame["latitude"].to_numpy(float), frame["longitude"].to_numpy(float)
            elif path.is_file():
                lat, lon = geo.load_points_csv(path)
            else:
                raise CollectError(f"--exclude {path} does not exist; pass a dataset folder or a CSV of "
                                   "latitude,longitude points.")
        except DatasetError as exc:
            raise CollectError(f"--exclude {path}: {exc}") from None
        for x, y in zip(*geo.to_3765(lat, lon)):
            index.add(float(x), float(y))
    return index


def _uniform_in(rng, geom, n: int) -> np.ndarray:
    """(<= n, 2) EPSG:3765 points uniform in `geom` (a prepared polygon) and on land: rejection sampling."""
    x0, y0, x1, y1 = geom.bounds
    xy = np.column_stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)])
    keep = shapely.contains_xy(geom, xy[:, 0], xy[:, 1]) & shapely.contains_xy(geo.outline_3765(), *xy.T)
    return xy[keep]


def _prior_xy() -> np.ndarray:
    from geodemo.paths import prior_csv

    lat, lon = geo.load_points_csv(prior_csv())
    return np.column_stack(geo.to_3765(lat, lon))


def _candidates(rng, sampling: str, prior_xy, county: int | None) -> np.ndarray:
    if sampling == "prior":
        xy = prior_xy[rng.integers(len(prior_xy), size=BATCH)] + rng.normal(0, PRIOR_JITTER_KM * 1000,
                                                                            (BATCH, 2))
        return xy[shapely.contains_xy(geo.outline_3765(), xy[:, 0], xy[:, 1])]
    if sampling == "county":
        return _uniform_in(rng, geo.county_geoms_3765()[county], BATCH)
    return _uniform_in(rng, geo.outline_3765(), BATCH)


def sample_points(n: int, sampling: str = "prior", seed: int = 0, min_spacing_km: float = 0.0,
                  exclude: PointIndex | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`n` points on Croatian land, the same for the same arguments.

    Args:
        n: how many points.
        sampling: ``prior``, ``uniform`` or ``county`` (equal shares of the 21 counties, in turn).
        seed: the random seed.
        min_spacing_km: no two points closer than this, km.
        exclude: points to stay away from (its own radius).

    Returns:
        (lat, lon) float64 arrays of shape (n,), degrees.

    Raises:
        CollectError: an unknown sampling, or `n` points that do not fit the spacing and exclusions.
    """
    if sampling not in SAMPLINGS:
        raise CollectError(f"sampling {sampling!r} is not one of {', '.join(SAMPLINGS)}.")
    rng = np.random.default_rng(seed)
    prior_xy = _prior_xy() if sampling == "prior" else None
    spacing = PointIndex(min_spacing_km)
    n_groups = len(geo.COUNTY_CODES) if sampling == "county" else 1
    quotas = [n // n_groups + (g < n % n_groups) for g in range(n_groups)]
    taken: list[list[tuple[float, float]]] = [[] for _ in range(n_groups)]
    for group in range(n_groups):
        for _ in range(MAX_ROUNDS):
            if len(taken[group]) >= quotas[group]:
                break
            for x, y in _candidates(rng, sampling, prior_xy, group if sampling == "county" else None):
                x, y = float(x), float(y)
                if spacing.near(x, y) or (exclude is not None and exclude.near(x, y)):
                    continue
                spacing.add(x, y)
                taken[group].append((x, y))
                if len(taken[group]) >= quotas[group]:
                    break
        if len(taken[group]) < quotas[group]:
            where = f" in {geo.county_names()[group]}" if sampling == "county" else ""
            raise CollectError(f"only {len(taken[group])} of {quotas[group]} points fit{where} with "
                               f"--min-spacing-km {min_spacing_km:g} and the exclusions; ask for fewer "
                               "points or lower the spacing.")
    # Round robin over the counties: a run stopped early has still looked everywhere.
    order = [taken[g][i] for i in range(max(quotas, default=0)) for g in range(n_groups) if i < len(taken[g])]
    if not order:
        return np.zeros(0), np.zeros(0)
    xy = np.asarray(order, dtype=np.float64)
    lat, lon = geo.from_3765(xy[:, 0], xy[:, 1])
    return np.asarray(lat, np.float64).reshape(-1), np.asarray(lon, np.float64).reshape(-1)
