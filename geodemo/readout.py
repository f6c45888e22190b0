"""Readout: how a GeoModel's outputs become a point, a county and the model's own uncertainty.

One rule, used by serving (geodemo.predict.Predictor) and by validation during training (training.tasks), so
the km a training run logs are the km `evaluate` reports. Built from a ModelConfig alone.

Point modes (``ModelConfig.point_mode``):
- ``min_expected_km`` (default): the minimum-Bayes-risk point. Among candidate points on Croatian land (every
  cell's weighted centroid, moved onto land, and a 5 km grid over the land), the one with the least expected
  great-circle distance sum_c p(c) * d(point, centroid_c) to the truth. It is the optimum for mean km and
  never lands between two modes of a multi-modal distribution.
- ``weighted_mean``: the probability-weighted mean of the centroids (EPSG:3765); can fall between modes.
- ``argmax``: the centroid of the most probable cell.
Every point, whatever the mode or head (coords regression too), is moved to the nearest point of Croatian
land, so no mode returns a point outside the country.

Temperature (``ModelConfig.temperature`` = T): ``read`` first sharpens (T < 1) or flattens the geocell
probabilities, p ∝ p ** (1 / T) = softmax(logits / T), and everything after it (point, county sums, expected
km, credible regions, ``Reading.cell_p``) uses the tempered ones. T < 1 fixes the haversine-smoothed head's
under-confidence (BENCHMARKS.md, issues 8 and 13).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geodemo.cells import CellSet
from geodemo.geo import (
    COUNTY_CODES,
    XYStats,
    county_index,
    from_3765,
    haversine_km,
    land_grid,
    nearest_land,
    to_3765,
)
from geodemo.model import POINT_MODES, ModelConfig

CANDIDATE_SPACING_KM = 5.0  # min_expected_km also tries a land grid this fine (the point is within ~3.5 km of
# the continuous optimum over land: the expected distance changes by at most the distance moved)
CREDIBLE_MASSES = (0.5, 0.9)  # the credible regions shown and checked: smallest cell sets with this mass


def temper(p: np.ndarray, t: float) -> np.ndarray:
    """(B, C) probabilities at temperature t: p ** (1 / t) renormalised per row (= softmax(logits / t))."""
    z = np.log(np.clip(p, 1e-300, None)) / t
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


@dataclass
class Reading:
    """What a batch of outputs says (B locations, C cells or counties, K counties).

    Attributes:
        lat, lon: (B,) the point, degrees, always on Croatian land.
        county: (B,) column in ``Readout.codes`` of the county containing the point.
        county_p: (B, K) the county distribution: the region head's, else the cells' summed by county.
        cell_p: (B, C) cell probabilities at the config's temperature (None without a geocell head).
        expected_km: (B,) the model's expected distance from its point to the truth, km (NaN for coords).
    """

    lat: np.ndarray
    lon: np.ndarray
    county: np.ndarray
    county_p: np.ndarray
    cell_p: np.ndarray | None
    expected_km: np.ndarray


class Readout:
    """Outputs -> point, county and uncertainty.

    Outputs are numpy arrays keyed like GeoModel's: 'geocell' (B, C) and 'region' (B, K) PROBABILITIES
    (softmax already applied), 'coords' (B, 2) standardised EPSG:3765. ``read`` takes the model's raw
    probabilities and applies the temperature; ``expected_error_km`` and ``truth_in_region`` take read-out
    ones (``Reading.cell_p``, already tempered).
    """

    def __init__(self, config: ModelConfig, with_land_grid: bool = True):
        """``with_land_grid``: min_expected_km also tries the CANDIDATE_SPACING_KM land grid (False: the cell
        centroids alone, as benchmarks/research/point_mode.py compares)."""
        self.config = config
        self.codes = list(config.counties)  # column j of a county-probability vector is county codes[j]
        # COUNTY_CODES index -> column in codes (-1: a county the model does not know)
        self._column = np.array([self.codes.index(c) if c in self.codes else -1 for c in COUNTY_CODES])
        self.cells = CellSet.from_dict(config.cells) if config.cells else None
        self.xy_stats = XYStats.from_dict(config.xy_stats) if config.xy_stats else None
        self._county_centroids = None
        self._support = None  # (lat, lon) of what the distribution is over: cells, else counties
        if self.cells is not None:
            self.cell_lat, self.cell_lon = self.cells.centroids(config.weighted_centroids)
            self.cell_x, self.cell_y = to_3765(self.cell_lat, self.cell_lon)
            known = self.cells.county >= 0
            self.cell_county = np.where(known, self._column[np.where(known, self.cells.county, 0)], -1)
            self._support = (self.cell_lat, self.cell_lon)
            # min_expected_km candidates, all on land: the centroids first (ties go to a mode), then the land
            # grid (adding the training locations too changed no CV error: benchmarks/research/point_mode.py)
            grid_lat, grid_lon = land_grid(CANDIDATE_SPACING_KM) if with_land_grid else ([], [])
            cand_lat, cand_lon = nearest_land(self.cell_lat, self.cell_lon)
            cand_lat, cand_lon = np.concatenate([cand_lat, grid_lat]), np.concatenate([cand_lon, grid_lon])
            self.cand_lat, self.cand_lon = cand_lat, cand_lon
            # (C, M) km from every cell centroid to every candidate, computed once: risk = p @ this
            self._cand_km = haversine_km(self.cell_lat[:, None], self.cell_lon[:, None], cand_lat, cand_lon)

    # ------------------------------------------------------------------ the point
    def read(self, out: dict[str, np.ndarray], point_mode: str | None = None) -> Reading:
        """The point (on land), its county, the county distribution and the expected error of a batch.

        Args:
            point_mode: "min_expected_km" | "weighted_mean" | "argmax" (geocell head); None = the config's.
        """
        mode = point_mode or self.config.point_mode
        if mode not in POINT_MODES:
            raise ValueError(f"unknown point mode {mode!r}; use one of {', '.join(POINT_MODES)}")
        out = self.tempered(out)
        cell_p = out.get("geocell")
        if cell_p is not None:
            if mode == "argmax":
                best = cell_p.argmax(1)
                lat, lon = self.cell_lat[best], self.cell_lon[best]
            elif mode == "weighted_mean":  # in metres (EPSG:3765), not degrees
                lat, lon = from_3765(cell_p @ self.cell_x, cell_p @ self.cell_y)
            else:
                best = (cell_p @ self._cand_km).argmin(1)
                lat, lon = self.cand_lat[best], self.cand_lon[best]
        elif "coords" in out:
            lat, lon = self.xy_stats.invert(out["coords"])
        else:
            x, y = self.county_xy()
            lat, lon = from_3765(out["region"] @ x, out["region"] @ y)
        lat, lon = nearest_land(np.atleast_1d(lat), np.atleast_1d(lon))
        county = self._column[county_index(lat, lon, tolerance_km=np.inf)]
        if "region" in out:
            county_p = out["region"]
        elif cell_p is not None:  # sum the cell probabilities by the county of each cell
            known = self.cell_county >= 0
            county_p = np.stack(
                [np.bincount(self.cell_county[known], weights=row[known], minlength=len(self.codes))
                 for row in cell_p]
            )
            county_p /= county_p.sum(1, keepdims=True).clip(1e-12)
        else:  # coords only: all the mass on the county of the point
            county_p = np.eye(len(self.codes))[county]
        return Reading(lat, lon, county, county_p, cell_p, self.expected_error_km(out, lat, lon))

    def points(self, out: dict[str, np.ndarray], point_mode: str | None = None):
        """(lat, lon) (B,) degrees and county probabilities (B, K); see ``read``."""
        r = self.read(out, point_mode)
        return r.lat, r.lon, r.county_p

    def tempered(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``out`` with its 'geocell' probabilities at the config's temperature (unchanged at T = 1)."""
        if self.config.temperature == 1.0 or "geocell" not in out:
            return out
        return {**out, "geocell": temper(out["geocell"], self.config.temperature)}

    # ------------------------------------------------------------------ uncertainty
    def _distribution(self, out: dict[str, np.ndarray]):
        """((B, N) probabilities, (N,) lat, (N,) lon) of the cells, else the counties; None for coords."""
        if "geocell" in out:
            return out["geocell"], *self._support
        if "region" in out:
            lat, lon = from_3765(*self.county_xy())
            return out["region"], lat, lon
        return None

    def expected_error_km(self, out: dict[str, np.ndarray], lat, lon) -> np.ndarray:
        """(B,) sum_c p(c) * d((lat, lon), centroid_c) km: the model's own expected error; NaN for coords."""
        dist = self._distribution(out)
        if dist is None:
            return np.full(len(np.atleast_1d(lat)), np.nan)
        p, s_lat, s_lon = dist
        d = haversine_km(np.atleast_1d(lat)[:, None], np.atleast_1d(lon)[:, None], s_lat[None], s_lon[None])
        return (p * d).sum(1)

    @staticmethod
    def credible_set(p: np.ndarray, mass: float) -> np.ndarray:
        """(B, N) bool: the smallest set of cells (or counties) whose probabilities add up to ``mass``."""
        p = np.atleast_2d(p)
        order = np.argsort(-p, axis=1, kind="stable")
        cum = np.cumsum(np.take_along_axis(p, order, 1), axis=1)
        k = (cum < mass - 1e-12).sum(1, keepdims=True) + 1  # cells before the one that reaches the mass, +1
        inside = np.zeros(p.shape, dtype=bool)
        np.put_along_axis(inside, order, np.arange(p.shape[1])[None] < k, axis=1)
        return inside

    def truth_in_region(self, out: dict[str, np.ndarray], lat, lon, mass: float) -> np.ndarray:
        """(B,) bool: the truth (lat, lon) is in a cell (county) of the ``mass`` credible set (coords: no)."""
        lat, lon = np.atleast_1d(lat), np.atleast_1d(lon)
        dist = self._distribution(out)
        if dist is None:
            return np.zeros(len(lat), dtype=bool)
        inside = self.credible_set(dist[0], mass)
        if "geocell" in out:
            where = self.cells.assign(lat, lon)
        else:
            where = self._column[county_index(lat, lon, tolerance_km=np.inf)]
        return inside[np.arange(len(lat)), where] & (where >= 0)

    def county_xy(self) -> tuple[np.ndarray, np.ndarray]:
        """EPSG:3765 centroids (metres) of the counties in ``codes`` order (region-only models)."""
        if self._county_centroids is None:
            from geodemo.geo import counties

            centroids = counties().set_index("code").to_crs(3765).loc[self.codes].geometry.centroid
            self._county_centroids = (centroids.x.to_numpy(), centroids.y.to_numpy())
        return self._county_centroids
