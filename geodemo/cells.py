"""Geocells over Croatia: a square grid, or cells that follow county borders (semantic).

A CellSet is the label space of the geocell head. Each cell has a geometric centre clipped to
Croatian land and a weighted centroid: the mean of the points that built the cell, computed in
EPSG:3765, usually the better point prediction. "Points" are the training points plus optional
prior points (e.g. the 4,732 LUMEN Street View coordinates), so cells sit where imagery exists.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import shapely

from geodemo.geo import (
    _latlon,
    _shaped,
    county_geoms_3765,
    county_index,
    from_3765,
    haversine_km,
    nearest_land,
    outline_3765,
    to_3765,
)

KINDS = ("grid", "semantic")
_FLOATS = ("center_lat", "center_lon", "centroid_lat", "centroid_lon")
_INTS = ("count", "county", "grid_ix", "grid_iy")


def _all_points(lat, lon, prior_lat=None, prior_lon=None) -> tuple[np.ndarray, np.ndarray]:
    """Training points plus the optional prior, as flat (lat, lon) degree arrays."""
    lat, lon, _ = _latlon(lat, lon)
    if prior_lat is not None:
        plat, plon, _ = _latlon(prior_lat, prior_lon)
        lat, lon = np.concatenate([lat, plat]), np.concatenate([lon, plon])
    return lat, lon


def _grid_key(ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """One int64 per grid square (injective while |iy| < 2**31)."""
    return ix.astype(np.int64) * 2**32 + iy.astype(np.int64)


def _kmeans(xy: np.ndarray, k: int, seed: int = 0, iters: int = 100) -> np.ndarray:
    """Deterministic k-means (k-means++ seeding, Lloyd): xy (N, 2) metres -> labels (N,) in 0..k-1."""
    rng = np.random.default_rng(seed)
    xy = xy - xy.mean(0)  # small numbers keep squared distances exact
    centres = xy[[rng.integers(len(xy))]]
    while len(centres) < k:
        d2 = ((xy[:, None] - centres[None]) ** 2).sum(-1).min(1)
        if d2.sum() == 0:  # fewer distinct points than k
            break
        centres = np.vstack([centres, xy[rng.choice(len(xy), p=d2 / d2.sum())]])
    for _ in range(iters):
        labels = ((xy[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        new = np.array([xy[labels == j].mean(0) if (labels == j).any() else c for j, c in enumerate(centres)])
        if np.allclose(new, centres, atol=1e-3):
            break
        centres = new
    return ((xy[:, None] - centres[None]) ** 2).sum(-1).argmin(1)


@dataclass(eq=False)
class CellSet:
    """C geocells with their centres, weighted centroids and what assign() needs.

    Attributes:
        kind: "grid" or "semantic".
        center_lat, center_lon: (C,) degrees, geometric centre moved onto Croatian land.
        centroid_lat, centroid_lon: (C,) degrees, mean of the cell's points (EPSG:3765).
        count: (C,) points that built the cell (training + prior).
        county: (C,) county id: of the weighted centroid (grid), of the parent county (semantic).
        spacing_km: grid square side in EPSG:3765 km (grid only).
        grid_ix, grid_iy: (C,) grid square indices floor(x_3765 / spacing), floor(y_3765 / spacing).
    """

    kind: str
    center_lat: np.ndarray
    center_lon: np.ndarray
    centroid_lat: np.ndarray
    centroid_lon: np.ndarray
    count: np.ndarray
    county: np.ndarray
    spacing_km: float = 0.0
    grid_ix: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    grid_iy: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Unknown cell kind {self.kind!r}; use one of {KINDS}.")
        # Rounding here, not only in to_dict, makes the JSON round trip exact: a checkpoint's cells
        # are bit-identical to the ones the model was trained with (1e-6 degree is ~0.1 m).
        for name in _FLOATS:
            setattr(self, name, np.round(np.asarray(getattr(self, name), dtype=np.float64), 6))
        for name in _INTS:
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        self.spacing_km = float(self.spacing_km)

    def __len__(self) -> int:
        return len(self.center_lat)

    def __repr__(self) -> str:
        grid = f", spacing_km={self.spacing_km:g}" if self.kind == "grid" else ""
        return f"CellSet(kind={self.kind!r}, cells={len(self)}{grid})"

    @functools.cached_property
    def _centroid_tree(self) -> shapely.STRtree:
        return shapely.STRtree(shapely.points(*to_3765(self.centroid_lat, self.centroid_lon)))

    @functools.cached_property
    def _sorted_keys(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(_grid_key(self.grid_ix, self.grid_iy))
        return _grid_key(self.grid_ix, self.grid_iy)[order], order

    def assign(self, lat, lon) -> np.ndarray:
        """Cell id 0..C-1 of each point (degrees).

        Grid: the square holding the point if kept, else the nearest weighted centroid. Semantic:
        the point's county, then the nearest weighted centroid of that county's cells; points
        outside Croatia or in a county without cells take the nearest weighted centroid overall.
        """
        lat, lon, shape = _latlon(lat, lon)
        x, y = to_3765(lat, lon)
        _, cell = self._centroid_tree.query_nearest(shapely.points(x, y), all_matches=False)
        if self.kind == "grid":
            s = self.spacing_km * 1000.0
            keys = _grid_key(np.floor(x / s), np.floor(y / s))
            sorted_keys, order = self._sorted_keys
            pos = np.clip(np.searchsorted(sorted_keys, keys), 0, len(sorted_keys) - 1)
            hit = sorted_keys[pos] == keys
            cell[hit] = order[pos[hit]]
        else:
            cx, cy = to_3765(self.centroid_lat, self.centroid_lon)
            county = county_index(lat, lon)
            for k in np.unique(county[county >= 0]):
                mine = np.flatnonzero(self.county == k)
                if mine.size:
                    pts = np.flatnonzero(county == k)
                    d2 = (x[pts, None] - cx[mine]) ** 2 + (y[pts, None] - cy[mine]) ** 2
                    cell[pts] = mine[d2.argmin(1)]
        return _shaped(cell.astype(np.int64), shape)

    def centroids(self, weighted: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(lat, lon) (C,) degrees of the weighted centroids, or of the land-clipped centres."""
        return (self.centroid_lat, self.centroid_lon) if weighted else (self.center_lat, self.center_lon)

    def distance_km(self, lat, lon, weighted: bool = True) -> np.ndarray:
        """(N, C) km from each point to each cell's centroid (or centre); for label smoothing."""
        lat, lon, _ = _latlon(lat, lon)
        clat, clon = self.centroids(weighted)
        return haversine_km(lat[:, None], lon[:, None], clat[None], clon[None])

    def to_dict(self) -> dict:
        """JSON-able dict of lists (degrees to 6 decimals)."""
        d = {"kind": self.kind}
        d.update({name: getattr(self, name).tolist() for name in _FLOATS + ("count", "county")})
        if self.kind == "grid":
            d.update(spacing_km=self.spacing_km, grid_ix=self.grid_ix.tolist(), grid_iy=self.grid_iy.tolist())
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CellSet:
        """Inverse of to_dict; unknown keys raise ValueError."""
        unknown = set(d) - {"kind", "spacing_km", *_FLOATS, *_INTS}
        if unknown:
            raise ValueError(f"Unknown CellSet keys {sorted(unknown)}; "
                             "the cells dict comes from another geodemo version.")
        return cls(**d)


def build_grid(lat, lon, spacing_km: float = 50.0, prior_lat=None, prior_lon=None,
               min_points: int = 1) -> CellSet:
    """Square EPSG:3765 grid of spacing_km sides over the points (training + prior).

    Keeps the squares that touch Croatian territory and hold >= min_points points. Squares are
    aligned to multiples of the spacing, so the same spacing always gives the same squares.
    """
    if spacing_km <= 0 or min_points < 1:
        raise ValueError(f"Grid needs spacing_km > 0 and min_points >= 1, got {spacing_km} and {min_points}.")
    x, y = to_3765(*_all_points(lat, lon, prior_lat, prior_lon))
    s = spacing_km * 1000.0
    squares, inverse, count = np.unique(np.column_stack([np.floor(x / s), np.floor(y / s)]).astype(np.int64),
                                        axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    ix, iy = squares[:, 0], squares[:, 1]
    boxes = shapely.box(ix * s, iy * s, (ix + 1) * s, (iy + 1) * s)
    keep = (count >= min_points) & shapely.intersects(outline_3765(), boxes)
    if not keep.any():
        raise ValueError(f"No {spacing_km:g} km grid square in Croatia holds {min_points}+ points; "
                         "check the coordinates or lower min_points.")
    mean_x = np.bincount(inverse, weights=x) / count
    mean_y = np.bincount(inverse, weights=y) / count
    centroid_lat, centroid_lon = from_3765(mean_x[keep], mean_y[keep])
    center_lat, center_lon = nearest_land(*from_3765((ix[keep] + 0.5) * s, (iy[keep] + 0.5) * s))
    return CellSet("grid", center_lat, center_lon, centroid_lat, centroid_lon, count[keep],
                   county_index(centroid_lat, centroid_lon, tolerance_km=np.inf),
                   spacing_km=spacing_km, grid_ix=ix[keep], grid_iy=iy[keep])


def build_semantic_cells(lat, lon, max_points: int = 40, prior_lat=None, prior_lon=None) -> CellSet:
    """One cell per county holding points; dense counties split by k-means in EPSG:3765.

    A county with n > max_points points (training + prior) becomes ceil(n / max_points) cells.
    Points more than 5 km outside Croatia are ignored. A sub-cell's centre is the centre of its
    Voronoi region within the county, moved onto land.
    """
    if max_points < 1:
        raise ValueError(f"Semantic cells need max_points >= 1, got {max_points}.")
    lat, lon = _all_points(lat, lon, prior_lat, prior_lon)
    x, y = to_3765(lat, lon)
    point_county = county_index(lat, lon)
    centre_xy, centroid_xy, counts, cell_county = [], [], [], []
    for k, geom in enumerate(county_geoms_3765()):
        members = np.flatnonzero(point_county == k)
        if members.size == 0:
            continue
        xy = np.column_stack([x[members], y[members]])
        labels = np.zeros(len(xy), dtype=int)
        if len(xy) > max_points:
            labels = _kmeans(xy, math.ceil(len(xy) / max_points))
        means = np.array([xy[labels == j].mean(0) for j in np.unique(labels)])
        if len(means) == 1:
            regions = [geom]
        else:  # the region of a sub-cell is what assign() gives it: the county's Voronoi share
            cells = shapely.voronoi_polygons(shapely.multipoints(means), extend_to=geom, ordered=True)
            regions = shapely.intersection(shapely.get_parts(cells), geom)
        for mean, region, n in zip(means, regions, np.bincount(labels)[np.unique(labels)]):
            centre = shapely.centroid(region)
            centre_xy.append(mean if shapely.is_empty(centre) else shapely.get_coordinates(centre)[0])
            centroid_xy.append(mean)
            counts.append(n)
            cell_county.append(k)
    if not counts:
        raise ValueError("No point lies in a Croatian county; check that coordinates are (lat, lon) degrees.")
    centre_xy, centroid_xy = np.array(centre_xy), np.array(centroid_xy)
    center_lat, center_lon = nearest_land(*from_3765(centre_xy[:, 0], centre_xy[:, 1]))
    centroid_lat, centroid_lon = from_3765(centroid_xy[:, 0], centroid_xy[:, 1])
    return CellSet("semantic", center_lat, center_lon, centroid_lat, centroid_lon, counts, cell_county)


def build_cells(kind: str, lat, lon, spacing_km: float = 50.0, prior_lat=None, prior_lon=None, *,
                min_points: int = 1, max_points: int = 40) -> CellSet:
    """Build "grid" (spacing_km, min_points) or "semantic" (max_points) cells from training + prior points."""
    if kind == "grid":
        return build_grid(lat, lon, spacing_km, prior_lat, prior_lon, min_points=min_points)
    if kind == "semantic":
        return build_semantic_cells(lat, lon, max_points, prior_lat, prior_lon)
    raise ValueError(f"Unknown cell kind {kind!r}; use one of {KINDS}.")
