"""Croatia geography: bundled outline/counties/places, EPSG:3765 projection, distances.

Coordinates are (lat, lon) degrees WGS84; projected arrays are EPSG:3765 (HTRS96 / Croatia TM)
metres; distances are km. Every function takes scalars or arrays (broadcast together) and returns
float64 arrays of the broadcast shape (numpy scalars for scalar input). Geometric tests such as
"within 5 km" are measured in EPSG:3765 metres. The geodata is read once and cached.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely

from geodemo.paths import GEO_DIR

COUNTY_CODES: tuple[str, ...] = tuple(f"HR-{i:02d}" for i in range(1, 22))
EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius


# ---------------------------------------------------------------- array plumbing


def _latlon(lat, lon) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Broadcast to flat float64 arrays; also return the shape to restore."""
    lat, lon = np.broadcast_arrays(np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64))
    return lat.ravel(), lon.ravel(), lat.shape


def _shaped(a: np.ndarray, shape: tuple):
    """Restore the input shape; a scalar input gives a numpy scalar back."""
    return a.reshape(shape)[()]


# ---------------------------------------------------------------- CRS


@functools.lru_cache(maxsize=None)
def _transformer(src: int, dst: int) -> pyproj.Transformer:
    # always_xy: pyproj takes (lon, lat) / (x, y) regardless of the CRS's official axis order.
    # Transformers are thread-safe since pyproj 3.1, so one cached instance serves the app.
    return pyproj.Transformer.from_crs(src, dst, always_xy=True)


def to_3765(lat, lon) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 degrees -> EPSG:3765 (x_3765, y_3765) metres, easting and northing."""
    lat, lon, shape = _latlon(lat, lon)
    x, y = _transformer(4326, 3765).transform(lon, lat)
    return _shaped(np.asarray(x, np.float64), shape), _shaped(np.asarray(y, np.float64), shape)


def from_3765(x, y) -> tuple[np.ndarray, np.ndarray]:
    """EPSG:3765 (x, y) metres -> WGS84 (lat, lon) degrees."""
    x, y, shape = _latlon(x, y)
    lon, lat = _transformer(3765, 4326).transform(x, y)
    return _shaped(np.asarray(lat, np.float64), shape), _shaped(np.asarray(lon, np.float64), shape)


def _geom_to_3765(geom):
    t = _transformer(4326, 3765)
    return shapely.transform(geom, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))


# ---------------------------------------------------------------- bundled geodata


@functools.lru_cache(maxsize=None)
def outline() -> shapely.MultiPolygon:
    """Croatian territory (mainland + islands), full-resolution OSM outline, WGS84 (lon, lat)."""
    frame = gpd.read_file(GEO_DIR / "croatia_outline_osm.geojson", engine="pyogrio")
    return shapely.MultiPolygon(list(shapely.get_parts(frame.geometry.values)))


@functools.lru_cache(maxsize=None)
def outline_3765():
    """The outline in EPSG:3765 metres, prepared for fast point-in-polygon tests."""
    geom = _geom_to_3765(outline())
    shapely.prepare(geom)
    return geom


@functools.lru_cache(maxsize=None)
def _outline_parts_tree() -> tuple[np.ndarray, shapely.STRtree]:
    """The outline's ~220 polygons in EPSG:3765 and an STRtree over them (nearest-part queries)."""
    parts = shapely.get_parts(outline_3765())
    return parts, shapely.STRtree(parts)


@functools.lru_cache(maxsize=None)
def _counties() -> gpd.GeoDataFrame:
    frame = gpd.read_file(GEO_DIR / "croatia_counties_osmconformed.geojson", engine="pyogrio")
    frame = frame.rename(columns={"iso_3166_2": "code"}).set_index("code").loc[list(COUNTY_CODES)]
    return frame.reset_index()[["code", "name_hr", "name", "geometry"]]


def counties() -> gpd.GeoDataFrame:
    """The 21 counties (20 + City of Zagreb); row i is COUNTY_CODES[i]. Cols code, name_hr, name, geometry."""
    return _counties().copy()


def county_names() -> list[str]:
    """Croatian county names in COUNTY_CODES order."""
    return _counties()["name_hr"].tolist()


@functools.lru_cache(maxsize=None)
def _counties_3765() -> tuple[np.ndarray, shapely.STRtree]:
    geoms = _geom_to_3765(np.asarray(_counties().geometry.values))
    shapely.prepare(geoms)
    return geoms, shapely.STRtree(geoms)


def county_geoms_3765() -> np.ndarray:
    """(21,) prepared county polygons in EPSG:3765 metres, in COUNTY_CODES order (do not modify)."""
    return _counties_3765()[0]


@functools.lru_cache(maxsize=None)
def _places() -> pd.DataFrame:
    frame = pd.read_csv(GEO_DIR / "croatia_places_geonames.csv")
    return frame[["name", "latitude", "longitude", "population"]]


def places() -> pd.DataFrame:
    """Bundled GeoNames places (population >= 1000): name, latitude, longitude, population."""
    return _places().copy()


@functools.lru_cache(maxsize=None)
def _places_tree() -> shapely.STRtree:
    x, y = to_3765(_places()["latitude"].to_numpy(), _places()["longitude"].to_numpy())
    return shapely.STRtree(shapely.points(x, y))


# ---------------------------------------------------------------- distances


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in km between (lat1, lon1) and (lat2, lon2) degrees; broadcasts, float64."""
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(a, dtype=np.float64)) for a in (lat1, lon1, lat2, lon2))
    # The sin^2 (haversine) form stays accurate for centimetre-scale distances, unlike arccos(dot).
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def haversine_km_torch(lat1, lon1, lat2, lon2):
    """Differentiable haversine in km for torch tensors (degrees); broadcasts.

    Computes in the promoted dtype of the tensor arguments (float64 stays float64); non-tensor
    arguments take the first tensor's dtype and device (float64 if there is no tensor).
    """
    import torch  # kept local so that `import geodemo.geo` stays light (validate-data, UI)

    args = (lat1, lon1, lat2, lon2)
    ref = next((a for a in args if isinstance(a, torch.Tensor)), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float64
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            dtype = torch.promote_types(dtype, a.dtype)
    device = ref.device if ref is not None else None
    lat1, lon1, lat2, lon2 = (torch.deg2rad(torch.as_tensor(a, dtype=dtype, device=device)) for a in args)
    a = (torch.sin((lat2 - lat1) / 2) ** 2
         + torch.cos(lat1) * torch.cos(lat2) * torch.sin((lon2 - lon1) / 2) ** 2)
    # Clamp away from 0: d sqrt(a)/da is infinite there, which would turn zero distances into NaN grads.
    return 2 * EARTH_RADIUS_KM * torch.asin(torch.sqrt(a.clamp(1e-30, 1.0)))


def distance_to_croatia_km(lat, lon) -> np.ndarray:
    """Distance in km (EPSG:3765) from each point to Croatian territory; 0 inside the outline."""
    lat, lon, shape = _latlon(lat, lon)
    x, y = to_3765(lat, lon)
    dist = np.zeros(lat.shape)
    outside = np.flatnonzero(~shapely.contains_xy(outline_3765(), x, y))
    if outside.size:
        _, tree = _outline_parts_tree()
        (src, _), d = tree.query_nearest(shapely.points(x[outside], y[outside]), return_distance=True,
                                         all_matches=False)
        dist[outside[src]] = d / 1000.0
    return _shaped(dist, shape)


def in_croatia(lat, lon, tolerance_km: float = 5.0) -> np.ndarray:
    """True where a point lies in Croatia or within tolerance_km of its territory (e.g. a ferry, a pier)."""
    return distance_to_croatia_km(lat, lon) <= tolerance_km


def county_index(lat, lon, tolerance_km: float = 5.0) -> np.ndarray:
    """County id (index into COUNTY_CODES) of each point, -1 where no county is within tolerance_km.

    Points inside a county polygon get it; points just outside every polygon (coast, border) snap
    to the nearest county within tolerance_km (EPSG:3765). Use tolerance_km=np.inf to always snap.
    """
    lat, lon, shape = _latlon(lat, lon)
    x, y = to_3765(lat, lon)
    geoms, tree = _counties_3765()
    out = np.full(lat.shape, -1, dtype=np.int64)
    for i, geom in enumerate(geoms):  # 21 prepared polygons: vectorised over points
        hit = (out < 0) & shapely.contains_xy(geom, x, y)
        out[hit] = i
    rest = np.flatnonzero(out < 0)
    if rest.size and tolerance_km > 0:
        max_m = None if np.isinf(tolerance_km) else tolerance_km * 1000.0
        src, dst = tree.query_nearest(shapely.points(x[rest], y[rest]), max_distance=max_m, all_matches=False)
        out[rest[src]] = dst
    return _shaped(out, shape)


def nearest_land(lat, lon) -> tuple[np.ndarray, np.ndarray]:
    """Move points at sea or abroad to the nearest point of Croatian land; land points are unchanged.

    Moved points land 1 m inside the coastline where possible, so strict point-in-polygon tests pass.
    """
    lat, lon, shape = _latlon(lat, lon)
    lat, lon = lat.copy(), lon.copy()
    x, y = to_3765(lat, lon)
    outside = np.flatnonzero(~shapely.contains_xy(outline_3765(), x, y))
    if outside.size:
        parts, tree = _outline_parts_tree()
        pts = shapely.points(x[outside], y[outside])
        src, dst = tree.query_nearest(pts, all_matches=False)
        ends = shapely.get_coordinates(shapely.get_point(shapely.shortest_line(pts[src], parts[dst]), 1))
        step = ends - np.column_stack([x[outside[src]], y[outside[src]]])
        step /= np.maximum(np.linalg.norm(step, axis=1, keepdims=True), 1e-9)
        nudged = ends + step  # 1 m further along the way in
        inside = shapely.contains_xy(outline_3765(), nudged[:, 0], nudged[:, 1])
        ends[inside] = nudged[inside]
        lat[outside[src]], lon[outside[src]] = from_3765(ends[:, 0], ends[:, 1])
    return _shaped(lat, shape), _shaped(lon, shape)


@functools.lru_cache(maxsize=None)
def land_grid(spacing_km: float) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) degrees of the points of a square EPSG:3765 grid (spacing_km sides) on Croatian land."""
    (x0, y0, x1, y1), s = outline_3765().bounds, spacing_km * 1000.0
    x, y = np.meshgrid(np.arange(x0 + s / 2, x1, s), np.arange(y0 + s / 2, y1, s))
    keep = shapely.contains_xy(outline_3765(), x.ravel(), y.ravel())
    lat, lon = from_3765(x.ravel()[keep], y.ravel()[keep])
    lat.setflags(write=False)  # cached: shared by every caller
    lon.setflags(write=False)
    return lat, lon


def nearest_place(lat, lon) -> np.ndarray:
    """Name of the nearest bundled place (GeoNames, population >= 1000) to each point."""
    lat, lon, shape = _latlon(lat, lon)
    x, y = to_3765(lat, lon)
    src, dst = _places_tree().query_nearest(shapely.points(x, y), all_matches=False)
    names = np.empty(lat.shape, dtype=object)
    names[src] = _places()["name"].to_numpy()[dst]
    return _shaped(names.astype(str), shape)


def load_points_csv(path) -> tuple[np.ndarray, np.ndarray]:
    """Read (lat, lon) float64 arrays from a CSV with latitude and longitude columns (degrees)."""
    frame = pd.read_csv(path)
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    if not {"latitude", "longitude"} <= set(frame.columns):
        raise ValueError(f"{path} needs 'latitude' and 'longitude' columns; found {list(frame.columns)}.")
    lat = pd.to_numeric(frame["latitude"], errors="coerce").to_numpy(np.float64)
    lon = pd.to_numeric(frame["longitude"], errors="coerce").to_numpy(np.float64)
    bad = ~(np.isfinite(lat) & np.isfinite(lon))
    if bad.any():
        raise ValueError(f"{path} has {bad.sum()} rows without numeric coordinates "
                         f"(first: data row {bad.argmax()}); fix or remove them.")
    return lat, lon


# ---------------------------------------------------------------- coordinate standardisation


@dataclass
class XYStats:
    """Mean and std of EPSG:3765 x/y (metres) of the TRAINING points, for the coordinate head."""

    mean_x: float
    mean_y: float
    std_x: float
    std_y: float

    @classmethod
    def fit(cls, lat, lon) -> XYStats:
        """Fit on training points (degrees). Values are rounded to 0.1 m so to_dict round-trips exactly."""
        x, y = to_3765(lat, lon)
        x, y = np.atleast_1d(x), np.atleast_1d(y)
        # A single point (or a column of identical points) has std 0: fall back to 1 m.
        return cls(*(round(float(v), 1) for v in (x.mean(), y.mean(), max(x.std(), 1.0), max(y.std(), 1.0))))

    def standardise(self, lat, lon) -> np.ndarray:
        """(lat, lon) degrees -> (N, 2) float32 standardised (x, y)."""
        x, y = to_3765(np.atleast_1d(lat), np.atleast_1d(lon))
        xy = np.column_stack([(x - self.mean_x) / self.std_x, (y - self.mean_y) / self.std_y])
        return xy.astype(np.float32)

    def invert(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) standardised (x, y) -> (lat, lon) degrees, each (N,) float64."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return from_3765(xy[:, 0] * self.std_x + self.mean_x, xy[:, 1] * self.std_y + self.mean_y)

    def to_dict(self) -> dict:
        """JSON-able dict (metres, 0.1 m)."""
        return {k: round(float(v), 1) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> XYStats:
        """Inverse of to_dict."""
        return cls(**{k: float(d[k]) for k in ("mean_x", "mean_y", "std_x", "std_y")})
