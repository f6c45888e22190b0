"""Readout: how a GeoModel's outputs become a point and county probabilities.

One rule, used by serving (geodemo.predict.Predictor) and by validation during training (training.tasks), so
the km a training run logs are the km `evaluate` reports. Built from a ModelConfig alone.
"""

from __future__ import annotations

import numpy as np

from geodemo.cells import CellSet
from geodemo.geo import COUNTY_CODES, XYStats, county_index, from_3765, to_3765
from geodemo.model import ModelConfig


class Readout:
    """Outputs -> (lat, lon) degrees and county probabilities (B, K) in ``config.counties`` order.

    Outputs are numpy arrays keyed like GeoModel's: 'geocell' (B, C) and 'region' (B, K) PROBABILITIES
    (softmax already applied), 'coords' (B, 2) standardised EPSG:3765.
    """

    def __init__(self, config: ModelConfig):
        self.config = config
        self.codes = list(config.counties)  # column j of a county-probability vector is county codes[j]
        self.cells = CellSet.from_dict(config.cells) if config.cells else None
        self.xy_stats = XYStats.from_dict(config.xy_stats) if config.xy_stats else None
        if self.cells is not None:
            self.cell_lat, self.cell_lon = self.cells.centroids(config.weighted_centroids)
            self.cell_x, self.cell_y = to_3765(self.cell_lat, self.cell_lon)
            # each cell's column in the county vector (-1: a cell outside every county)
            self.cell_county = np.array(
                [
                    self.codes.index(COUNTY_CODES[c]) if c >= 0 and COUNTY_CODES[c] in self.codes else -1
                    for c in self.cells.county
                ],
                dtype=np.int64,
            )
        self._county_centroids = None

    def points(self, out: dict[str, np.ndarray], point_mode: str | None = None):
        """(lat, lon) (B,) degrees and county probabilities (B, K).

        Args:
            point_mode: "weighted_mean" | "argmax" for a geocell head; None = the config's.
        """
        n_counties = len(self.codes)
        if "geocell" in out:
            p = out["geocell"]
            if (point_mode or self.config.point_mode) == "argmax":
                best = p.argmax(1)
                lat, lon = self.cell_lat[best], self.cell_lon[best]
            else:  # probability-weighted mean of the centroids, in metres (EPSG:3765), not degrees
                lat, lon = from_3765(p @ self.cell_x, p @ self.cell_y)
        elif "coords" in out:
            lat, lon = self.xy_stats.invert(out["coords"])
        else:
            x, y = self.county_xy()
            lat, lon = from_3765(out["region"] @ x, out["region"] @ y)
        lat, lon = np.atleast_1d(lat), np.atleast_1d(lon)
        if "region" in out:
            county_p = out["region"]
        elif "geocell" in out:  # sum the cell probabilities by the county of each cell
            known = self.cell_county >= 0
            county_p = np.stack(
                [
                    np.bincount(self.cell_county[known], weights=row[known], minlength=n_counties)
                    for row in out["geocell"]
                ]
            )
            county_p /= county_p.sum(1, keepdims=True).clip(1e-12)
        else:  # coords only: all the mass on the county of the point
            ids = county_index(lat, lon, tolerance_km=np.inf)
            county_p = np.eye(n_counties)[[self.codes.index(COUNTY_CODES[i]) for i in ids]]
        return lat, lon, county_p

    def county_xy(self) -> tuple[np.ndarray, np.ndarray]:
        """EPSG:3765 centroids (metres) of the counties in ``codes`` order (region-only models)."""
        if self._county_centroids is None:
            from geodemo.geo import counties

            centroids = counties().set_index("code").to_crs(3765).loc[self.codes].geometry.centroid
            self._county_centroids = (centroids.x.to_numpy(), centroids.y.to_numpy())
        return self._county_centroids
