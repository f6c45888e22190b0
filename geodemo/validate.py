"""Validation of a LUMEN-layout dataset: every problem found, each with its location and the fix."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from geodemo import geo
from geodemo.data import (
    REQUIRED_COLUMNS,
    VIEW_HEADINGS,
    DatasetError,
    _numeric,
    _read_raw,
    images_dir,
    is_safe_id,
    view_paths,
)
from geodemo.images import ImageError, check_view_side, load_rgb


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
                name = f"{path.parent.name}/{path.name}"
                check_view_side(load_rgb(path, min_side=64, name=name), name)
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
