"""LUMEN dataset layout: ids, paths and reading data.csv (torch-free: validation is geodemo.validate, the
torch Dataset, splits and transforms are geodemo.dataset).

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
from pathlib import Path

import numpy as np
import pandas as pd

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
