"""LUMEN dataset layout: reading, validation, the multi-view torch Dataset, splits and transforms.

Layout (the LUMEN Data Science 2022 competition format)::

    root/data.csv                   uuid,latitude,longitude[,heading][,county]  (WGS84 degrees)
    root/images/<uuid>/0.jpg ...    one view per camera heading 0/90/180/270 (N, E, S, W);
                                    `data/` instead of `images/` is accepted too
"""

from __future__ import annotations

import functools
import io
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import torch
from albumentations.pytorch import ToTensorV2

from geodemo import geo
from geodemo.images import ImageError, center_square, load_rgb

VIEW_HEADINGS = (0, 90, 180, 270)  # view index v <-> file f"{VIEW_HEADINGS[v]}.jpg", degrees from north
VIEW_SUFFIXES = (".jpg", ".jpeg", ".png")
REQUIRED_COLUMNS = ("uuid", "latitude", "longitude")
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class DatasetError(ValueError):
    """A dataset that cannot be read; the message names the column or row and what to do."""


def is_safe_id(s: str) -> bool:
    """True if `s` can be used as a folder name: no path separators, no '..', at most 128 chars."""
    return isinstance(s, str) and _SAFE_ID.fullmatch(s) is not None and ".." not in s


def images_dir(root) -> Path:
    """The folder holding the per-location view folders: root/images, or root/data in the variant layout."""
    root = Path(root)
    if not (root / "images").is_dir() and (root / "data").is_dir():
        return root / "data"
    return root / "images"


def _read_raw(root) -> pd.DataFrame:
    """data.csv as stripped strings; tolerates a BOM, ';' or tab separators and an unnamed index column."""
    path = Path(root) / "data.csv"
    if not path.is_file():
        raise DatasetError(f"{path} does not exist; "
                           "a dataset needs data.csv with columns uuid,latitude,longitude.")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not UTF-8 text; save it as UTF-8 CSV.") from None
    header = text.split("\n", 1)[0]
    sep = max((",", ";", "\t"), key=header.count)  # the competition used ','; spreadsheets often write ';'
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DatasetError(f"{path} is not a valid CSV ({str(exc).strip()}); fix or re-export it.") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    unnamed = [c for c in frame.columns if c == "" or re.fullmatch(r"unnamed: \d+", c)]
    frame = frame.drop(columns=unnamed)
    return frame.apply(lambda col: col.str.strip()).astype(object)


def _numeric(col: pd.Series) -> pd.Series:
    """float64 column; empty and non-numeric cells become NaN."""
    return pd.to_numeric(col.replace("", np.nan), errors="coerce").astype(np.float64)


def read_locations(root) -> pd.DataFrame:
    """Read root/data.csv.

    Returns:
        DataFrame with `uuid` (str), `latitude`, `longitude` (float64 degrees), `heading` (float64 degrees,
        NaN if empty) and `county` (str) when present, plus any extra columns (numeric where they parse).

    Raises:
        DatasetError: missing file or required column, or a coordinate that is not a number.
    """
    frame = _read_raw(root)
    for column in REQUIRED_COLUMNS:
        if column not in frame.columns:
            raise DatasetError(f"data.csv has no '{column}' column (found: {', '.join(frame.columns)}); "
                               f"the header must contain uuid,latitude,longitude.")
    for i, uid in enumerate(frame["uuid"]):
        if not is_safe_id(uid):
            raise DatasetError(f"row {i + 2} of data.csv has id {uid!r}, which is not a safe folder name; "
                               f"use letters, digits, '.', '_' or '-' only.")
    duplicated = frame["uuid"][frame["uuid"].duplicated()]
    if len(duplicated):
        raise DatasetError(f"location {duplicated.iloc[0]!r} appears more than once in data.csv; "
                           f"give every location its own id.")
    out = pd.DataFrame({"uuid": frame["uuid"].astype(str)})
    for column in frame.columns.drop("uuid"):
        raw = frame[column]
        values = _numeric(raw)
        unparsed = values.isna() & (raw != "")
        if column in ("latitude", "longitude", "heading"):
            bad = unparsed if column == "heading" else values.isna()
            bad |= np.isinf(values)  # "inf", "1e400": parse, but are no place
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise DatasetError(f"location {frame['uuid'].iloc[row]!r} has {column} "
                                   f"{raw.iloc[row]!r}, which is not a number; fix data.csv.")
            out[column] = values
        elif column != "county" and (raw != "").any() and not unparsed.any():
            out[column] = values  # numeric extra column, e.g. a tabular feature
        else:
            out[column] = raw.astype(str)
    return out.reset_index(drop=True)


def read_usable(root) -> pd.DataFrame:
    """`read_locations(root)`, refusing a dataset that has no rows or not one view image to work on.

    Raises:
        DatasetError: header-only data.csv, or no location with any view file.
    """
    frame = read_locations(root)
    if frame.empty:
        raise DatasetError(f"{Path(root) / 'data.csv'} has a header but no locations; add at least one row.")
    if not any(view_paths(root, uid) for uid in frame["uuid"]):  # stops at the first location with views
        raise DatasetError(f"none of the {len(frame)} locations in {root} has a view image; put them in "
                           f"{images_dir(root)}/<uuid>/0.jpg, 90.jpg, 180.jpg, 270.jpg.")
    return frame


@functools.lru_cache(maxsize=64)
def _real_root(root: str) -> str:
    return os.path.realpath(root)


def _is_inside(path: str, real_root: str) -> bool:
    """True if ``path``, with every symlink resolved, lies in the folder ``real_root`` (a realpath)."""
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _check_id(uuid) -> None:
    if not is_safe_id(str(uuid)):  # ids may come from a client (a clicked row): stay in images/
        raise DatasetError(f"Location id {uuid!r} is not a safe folder name; "
                           "use letters, digits, '.', '_' or '-'.")


def _pick_views(files: dict) -> dict:
    """View index -> the entry of its file in ``files`` (lower-case file name -> entry): for each heading
    the first of VIEW_SUFFIXES present."""
    found = {}
    for v, heading in enumerate(VIEW_HEADINGS):
        for suffix in VIEW_SUFFIXES:
            if f"{heading}{suffix}" in files:
                found[v] = files[f"{heading}{suffix}"]
                break
    return found


def view_paths(root, uuid: str) -> dict[int, Path]:
    """View index -> existing image file of location `uuid` (accepts .jpg, .jpeg, .png in any case)."""
    _check_id(uuid)
    base = images_dir(root)
    folder = base / uuid
    inside = _real_root(os.path.abspath(root))
    try:
        # A symlink is never followed out of the dataset root (a data root must not expose other files).
        # realpath only where a link is (two lstat otherwise): one per file made 16k locations take ~40 s.
        linked = os.path.islink(base) or os.path.islink(folder)
        folder_inside = not linked or _is_inside(os.fspath(folder), inside)
        with os.scandir(folder) as entries:
            files = {e.name.lower(): folder / e.name for e in entries
                     if (_is_inside(e.path, inside) if e.is_symlink() else folder_inside) and e.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return _pick_views(files)


def walk_files(folder) -> list[tuple[tuple[str, ...], str, int, int, bool]]:
    """Every file under ``folder`` in one walk (one directory read per folder, one stat per file).

    Returns:
        (path parts relative to ``folder``, absolute path, size bytes, mtime ns, is a symlink) per file,
        sorted by parts. As ``os.walk`` + ``os.path.isfile``: symlinked folders are not entered, a symlinked
        file counts as its target, broken links and unreadable folders are skipped.
    """
    out = []

    def walk(top: str, rel: tuple[str, ...]) -> None:  # entries in name order: `out` comes out sorted
        try:
            with os.scandir(top) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    walk(e.path, (*rel, e.name))
                elif e.is_file():  # a link to a folder is neither
                    st = e.stat()
                    out.append(((*rel, e.name), e.path, st.st_size, st.st_mtime_ns, e.is_symlink()))
            except OSError:  # vanished or broken meanwhile
                continue

    walk(os.path.abspath(folder), ())
    return out


class ImageScan:
    """The files of a dataset's image folder, read once: its fingerprint list and every location's views.

    ``files`` is ``walk_files(images_dir(root))``; ``views(uuid)`` picks the same files as ``view_paths``
    (as absolute path strings with their size and mtime), without reading the folder again.
    """

    def __init__(self, root):
        self.root = Path(root)
        base = images_dir(root)
        self.files = walk_files(base)
        self._linked = os.path.islink(base)  # every location then takes view_paths's checked path
        self._inside = _real_root(os.path.abspath(root))
        self._folders: dict[str, dict[str, tuple[str, int, int]]] = {}  # uuid -> lower name -> file
        for parts, path, size, mtime, link in self.files:
            if len(parts) == 2 and (not link or _is_inside(path, self._inside)):
                folder = self._folders.get(parts[0])
                if folder is None:
                    folder = self._folders[parts[0]] = {}
                folder[parts[1].lower()] = (path, size, mtime)

    def views(self, uuid: str) -> dict[int, tuple[str, int, int]]:
        """View index -> (absolute path, size bytes, mtime ns) of location ``uuid``'s files."""
        _check_id(uuid)
        if self._linked or uuid not in self._folders and os.path.islink(images_dir(self.root) / uuid):
            found = {}
            for v, path in view_paths(self.root, uuid).items():
                st = os.stat(path)
                found[v] = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
            return found
        return _pick_views(self._folders.get(uuid, {}))


def view_headings(frame: pd.DataFrame) -> np.ndarray:
    """(N, V) true camera heading of every view slot, degrees clockwise from north: the view's file angle
    plus the location's optional ``heading`` column (the heading of its 0.jpg; empty = 0)."""
    offset = frame["heading"].to_numpy(np.float64) if "heading" in frame else np.zeros(len(frame))
    return (np.nan_to_num(offset)[:, None] + np.array(VIEW_HEADINGS)) % 360.0

# ----------------------------------------------------------------------------------------- validation
@dataclass
class Problem:
    """One thing wrong with a dataset: `where` (location id, column or file), `what`, and the `fix`."""

    where: str
    what: str
    fix: str
    severity: str = "error"  # "error" fails validation; "warning" is only reported


@dataclass
class ValidationReport:
    """Result of `validate_dataset`: a summary plus every problem found."""

    root: str
    n_locations: int = 0
    n_views: int = 0
    problems: list[Problem] = field(default_factory=list)
    county_counts: dict[str, int] = field(default_factory=dict)  # name_hr -> locations
    bbox: tuple[float, float, float, float] | None = None  # (lat_min, lon_min, lat_max, lon_max) degrees

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity != "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self, max_problems: int = 200) -> str:
        """Human-readable summary followed by one line per problem (the first `max_problems` of them)."""
        lines = [f"Dataset {self.root}: {self.n_locations} locations, {self.n_views} views"]
        if self.bbox:
            lines.append("Bounding box: lat {:.4f}..{:.4f}, lon {:.4f}..{:.4f}".format(
                self.bbox[0], self.bbox[2], self.bbox[1], self.bbox[3]))
        if self.county_counts:
            lines.append("Counties:")
            lines += [f"  {name:<32} {n}" for name, n in self.county_counts.items()]
        lines.append("OK" if self.ok else "NOT OK")
        lines.append(f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        shown = (self.errors + self.warnings)[:max_problems]
        for p in shown:
            lines.append(f"  {p.severity.upper()} [{p.where}] {p.what}; {p.fix}")
        if len(self.problems) > len(shown):  # a 200k-row CSV must not print 200k lines
            lines.append(f"  ... and {len(self.problems) - len(shown)} more problem(s) not shown; "
                         "fix the ones above first")
        return "\n".join(lines)


def _check_rows(frame: pd.DataFrame, tolerance_km: float, report: ValidationReport) -> np.ndarray:
    """Check ids and coordinates row by row; returns a bool mask of rows whose images should be checked."""
    add = report.problems.append
    ids = frame["uuid"]
    lat, lon = _numeric(frame["latitude"]), _numeric(frame["longitude"])
    heading = _numeric(frame["heading"]) if "heading" in frame else None
    good = np.ones(len(frame), bool)
    # Plain numpy/list lookups in the loop: pandas .iloc per row made a 200k-row CSV take a minute.
    numbers = [("latitude", lat.to_numpy(), frame["latitude"].to_numpy())]
    numbers.append(("longitude", lon.to_numpy(), frame["longitude"].to_numpy()))
    if heading is not None:
        numbers.append(("heading", heading.to_numpy(), frame["heading"].to_numpy()))
    for i, uid in enumerate(ids.tolist()):
        where = uid or f"row {i + 2}"
        if not is_safe_id(uid):
            add(Problem(where, f"id {uid!r} is not a safe folder name",
                        "use letters, digits, '.', '_' or '-' only (no '/', no '..', not empty)"))
            good[i] = False
        for column, values, texts in numbers:
            if np.isnan(values[i]) and (column != "heading" or texts[i]):
                fix = ("write degrees clockwise from north, or leave it empty" if column == "heading"
                       else "write decimal degrees such as 45.8150")
                add(Problem(where, f"{column} {texts[i]!r} is not a number", fix))
    for uid, n in Counter(ids).items():
        if n > 1 and uid:
            add(Problem(uid, f"id appears {n} times in data.csv", "give every location its own id"))
    good[(ids.duplicated(keep=False) & (ids != "")).to_numpy()] = False  # one pass: linear in the rows
    valid = (~lat.isna() & ~lon.isna()).to_numpy().copy()
    out_of_range = valid & ((lat.abs() > 90) | (lon.abs() > 180)).to_numpy()
    for i in np.flatnonzero(out_of_range):
        add(Problem(ids.iloc[i] or f"row {i + 2}",
                    f"point ({lat.iloc[i]}, {lon.iloc[i]}) is not a valid coordinate",
                    "latitude must lie within -90..90 and longitude within -180..180"))
    valid &= ~out_of_range
    if valid.any():
        lat_v, lon_v = lat[valid].to_numpy(), lon[valid].to_numpy()
        dist = np.full(len(frame), 0.0)
        dist[valid] = geo.distance_to_croatia_km(lat_v, lon_v)
        for i in np.flatnonzero(valid & (dist > tolerance_km)):
            add(Problem(ids.iloc[i] or f"row {i + 2}",
                        f"point ({lat.iloc[i]:.4f}, {lon.iloc[i]:.4f}) is {dist[i]:.0f} km outside Croatia",
                        "check that latitude and longitude are not swapped or mistyped"))
        inside = valid & (dist <= tolerance_km)
        counties = geo.county_index(lat[inside].to_numpy(), lon[inside].to_numpy(), tolerance_km=tolerance_km)
        names = geo.county_names()
        counts = Counter(names[c] if c >= 0 else "(unknown)" for c in counties)
        report.county_counts = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        report.bbox = (float(lat_v.min()), float(lon_v.min()), float(lat_v.max()), float(lon_v.max()))
    if "county" in frame:
        known = {c.lower() for c in (*geo.COUNTY_CODES, *geo.county_names())}
        for i, value in enumerate(frame["county"]):
            if value and value.lower() not in known:
                add(Problem(ids.iloc[i] or f"row {i + 2}", f"county {value!r} is unknown",
                            "use an ISO code HR-01..HR-21, a Croatian county name, or leave it empty"))
    return good


def _check_views(root: Path, base: Path, uid: str, check_images: bool, report: ValidationReport) -> None:
    add = report.problems.append
    folder = base / uid
    if not folder.is_dir():
        add(Problem(uid, f"has no image folder {folder}", "add the folder with its views or remove the row"))
        return
    paths = view_paths(root, uid)
    if not paths:
        add(Problem(uid, "has no views (0.jpg, 90.jpg, 180.jpg, 270.jpg)",
                    "add at least one view or remove the row"))
        return
    if len(paths) < len(VIEW_HEADINGS):
        missing = ", ".join(f"{VIEW_HEADINGS[v]}.jpg" for v in range(len(VIEW_HEADINGS)) if v not in paths)
        add(Problem(uid, f"is missing view(s) {missing}",
                    "add them if you have them; missing views are masked", severity="warning"))
    for path in paths.values():
        if check_images:
            try:
                load_rgb(path, min_side=64, name=f"{path.parent.name}/{path.name}")
            except ImageError as exc:
                what, _, fix = str(exc).rstrip(".").partition("; ")
                add(Problem(uid, what, fix or "replace or delete the file"))
                continue
        report.n_views += 1


def validate_dataset(root, tolerance_km: float = 5.0, check_images: bool = True,
                     progress=None) -> ValidationReport:
    """Check a dataset and collect every problem; never raises for data problems.

    Args:
        root: dataset folder holding data.csv and images/ (or data/).
        tolerance_km: how far outside the Croatian border a point may lie, km.
        check_images: decode every view (at a reduced scale) to catch truncated or non-image files.
        progress: optional callable(i, n) called after each location.
    """
    root = Path(root)
    report = ValidationReport(root=str(root))
    try:
        frame = _read_raw(root)
    except DatasetError as exc:
        what, _, fix = str(exc).rstrip(".").partition("; ")
        report.problems.append(Problem("data.csv", what, fix))
        return report
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    for column in missing:
        report.problems.append(Problem(f"column {column}", f"data.csv has no '{column}' column "
                                       f"(found: {', '.join(frame.columns) or 'none'})",
                                       "the header must contain uuid,latitude,longitude"))
    if missing:
        return report
    report.n_locations = len(frame)
    if not len(frame):
        report.problems.append(Problem("data.csv", "has no locations", "add at least one row"))
        return report
    if not images_dir(root).is_dir():
        report.problems.append(Problem("images/", f"{images_dir(root)} does not exist",
                                       "put the views in images/<uuid>/0.jpg, 90.jpg, 180.jpg, 270.jpg"))
        return report
    good = _check_rows(frame, tolerance_km, report)
    base = images_dir(root)
    for i, uid in enumerate(frame["uuid"]):
        if good[i]:
            _check_views(root, base, uid, check_images, report)
        if progress is not None:
            progress(i + 1, len(frame))
    return report


# ----------------------------------------------------------------------------------------- splits
def location_split(uuids, val_fraction: float = 0.2, test_fraction: float = 0.0,
                   seed: int = 0) -> dict[str, list[str]]:
    """Split location ids into train/val/test, deterministic by `seed` (a permutation of the sorted ids).

    Returns:
        {"train": [...], "val": [...], "test": [...]}, each list sorted.
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction {val_fraction} + test_fraction {test_fraction} must be in [0, 1).")
    ids = np.array(sorted(set(map(str, uuids))), dtype=object)
    order = ids[np.random.default_rng(seed).permutation(len(ids))]

    def size(fraction: float) -> int:
        return max(1, round(len(ids) * fraction)) if fraction > 0 and len(ids) > 2 else 0

    n_test, n_val = size(test_fraction), size(val_fraction)
    return {"train": sorted(order[n_test + n_val:]), "val": sorted(order[n_test:n_test + n_val]),
            "test": sorted(order[:n_test])}


def kfold_splits(uuids, k: int = 5, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """K location folds: [(train_ids, val_ids), ...]; every id is in exactly one val fold."""
    ids = np.array(sorted(set(map(str, uuids))), dtype=object)
    if not 2 <= k <= len(ids):
        raise ValueError(f"k={k} folds need 2 <= k <= {len(ids)} (the number of locations).")
    folds = np.array_split(ids[np.random.default_rng(seed).permutation(len(ids))], k)
    return [(sorted(np.concatenate(folds[:i] + folds[i + 1:])), sorted(fold)) for i, fold in enumerate(folds)]


# ----------------------------------------------------------------------------------------- transforms
def _center_square(image: np.ndarray, size: int, **_) -> np.ndarray:
    return center_square(image, size)  # module level: the transform pickles into DataLoader workers


def build_transform(image_size: int, mean, std, train: bool) -> A.Compose:
    """Albumentations pipeline: (H, W, 3) uint8 RGB -> (3, image_size, image_size) float tensor.

    No horizontal flip here: `LocationDataset` mirrors whole panoramas (views swapped too).
    """
    if train:
        geometry = [A.RandomResizedCrop(size=(image_size, image_size), scale=(0.6, 1.0), ratio=(0.9, 1.1),
                                        area_for_downscale="image"),
                    A.ColorJitter(0.2, 0.2, 0.2, 0.02, p=0.5)]
    else:
        geometry = [A.Lambda(image=partial(_center_square, size=image_size), name="center_square")]
    return A.Compose([*geometry, A.Normalize(mean=mean, std=std, max_pixel_value=255.0), ToTensorV2()])


# ----------------------------------------------------------------------------------------- dataset
def _county_ids(frame: pd.DataFrame, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """County id per row from the `county` column (ISO code or name_hr), else from the coordinates."""
    ids = geo.county_index(lat, lon).astype(np.int64)
    if "county" in frame:
        lookup = {c.lower(): i for i, c in enumerate(geo.COUNTY_CODES)}
        lookup.update({n.lower(): i for i, n in enumerate(geo.county_names())})
        given = np.array([lookup.get(str(c).strip().lower(), -1) for c in frame["county"]], dtype=np.int64)
        ids = np.where(given >= 0, given, ids)
    return ids


class LocationDataset(torch.utils.data.Dataset):
    """One item per location: its (up to) four views plus every target.

    Args:
        root: dataset folder; frame: rows of `read_locations(root)` to use.
        image_size: output side in pixels; mean/std: normalisation per channel (0..1 scale).
        train: random crops and colour jitter; hflip: with train, mirror the panorama with p=0.5
            (every view flipped and views 90 <-> 270 swapped; not for the heading task).
        cells: gives `cell` targets; xy_stats: gives standardised EPSG:3765 `xy` targets.
        tabular: numeric columns of `frame` returned as `tabular` (NaN -> 0).
    """

    def __init__(self, root, frame: pd.DataFrame, image_size: int, mean, std, train: bool = False,
                 hflip: bool = False, cells=None, xy_stats=None, tabular: list[str] = ()):
        self.root = Path(root)
        self.frame = frame.reset_index(drop=True)
        self.image_size, self.train, self.hflip = image_size, train, hflip and train
        self.transform = build_transform(image_size, mean, std, train)
        self.uuids = self.frame["uuid"].astype(str).tolist()
        self.lat = self.frame["latitude"].to_numpy(np.float64)
        self.lon = self.frame["longitude"].to_numpy(np.float64)
        n = len(self.frame)
        self.heading = view_headings(self.frame)  # (N, V) degrees
        self.county = _county_ids(self.frame, self.lat, self.lon)
        self.cell = cells.assign(self.lat, self.lon).astype(np.int64) if cells is not None else np.full(n, -1)
        self.xy = (xy_stats.standardise(self.lat, self.lon).astype(np.float32) if xy_stats is not None
                   else np.zeros((n, 2), np.float32))
        missing = [c for c in tabular if c not in self.frame]
        if missing:
            raise DatasetError(f"tabular column(s) {', '.join(missing)} are not in data.csv; "
                               "add them or drop them.")
        columns = [pd.to_numeric(self.frame[c], errors="coerce").to_numpy(np.float64) for c in tabular]
        self.tabular = np.nan_to_num(np.stack(columns, 1) if columns else np.zeros((n, 0))).astype(np.float32)

    def __len__(self) -> int:
        return len(self.uuids)

    def __getitem__(self, i: int) -> dict:
        """views (V, 3, H, W) float32, view_mask (V,) bool, cell/county int64 (), xy (2,), heading (V,)
        degrees (NaN where missing), tabular (T,), lat/lon float64 () degrees, uuid str."""
        paths = view_paths(self.root, self.uuids[i])
        return self.assemble(i, {v: load_rgb(path, min_side=self.image_size) for v, path in paths.items()})

    def assemble(self, i: int, rgbs: dict) -> dict:
        """The item of location i from its decoded views {view index: (H, W, 3) uint8 RGB}: transforms,
        panorama mirror and targets (shared by the image folders and litdata chunks, training.streaming)."""
        size, n_views = self.image_size, len(VIEW_HEADINGS)
        views = torch.zeros(n_views, 3, size, size)
        mask = torch.zeros(n_views, dtype=torch.bool)
        mirror = self.hflip and bool(torch.rand(()) < 0.5)
        for v, rgb in rgbs.items():
            if mirror:
                rgb = np.ascontiguousarray(rgb[:, ::-1])
                v = (n_views - v) % n_views  # east <-> west: 90 <-> 270, 0 and 180 stay
            views[v] = self.transform(image=rgb)["image"]
            mask[v] = True
        return {"views": views, **self.targets(i, mask)}

    def targets(self, i: int, view_mask: torch.Tensor) -> dict:
        """Every target of location i for the views present in ``view_mask`` (V,) bool; also the
        embedding cache's dataset serves these beside cached features."""
        heading = torch.from_numpy(self.heading[i].astype(np.float32))
        heading[~view_mask] = float("nan")
        return {
            "view_mask": view_mask,
            "cell": torch.tensor(self.cell[i], dtype=torch.int64),
            "xy": torch.from_numpy(self.xy[i]),
            "county": torch.tensor(self.county[i], dtype=torch.int64),
            "heading": heading,
            "tabular": torch.from_numpy(self.tabular[i]),
            "lat": torch.tensor(self.lat[i], dtype=torch.float64),
            "lon": torch.tensor(self.lon[i], dtype=torch.float64),
            "uuid": self.uuids[i],
        }
