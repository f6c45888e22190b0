"""LabelStore: append labelled locations to a LUMEN-layout folder, safely under concurrency and crashes.

Write order, all under one file lock: images first (each via a temporary file + os.replace), then the whole
data.csv rewritten to a temporary file, fsync'd and os.replace'd. A crash therefore leaves at worst an image
folder without a row or a stray temporary file, never a partial or lost row; opening the store removes
such leftovers (and logs them). A client request id makes a retried `add` store nothing new.
"""

from __future__ import annotations

import csv
import errno
import logging
import math
import os
import re
import shutil
import tempfile
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from filelock import FileLock

from geodemo import geo
from geodemo.data import VIEW_HEADINGS, is_safe_id, read_locations
from geodemo.images import ImageError, check_view_side, decode_budget, encode_jpeg, load_rgb

COLUMNS = ("uuid", "latitude", "longitude", "heading", "county")
REQUEST_COLUMN = "request_id"  # added to data.csv the first time a client sends a request id
SOURCE_COLUMN = "source_uuid"  # the location id in the folder a label was made from (traceability)
LOCK_TIMEOUT_S = 60
STORED_SIDE = 640  # JPEG views are decoded at the smallest scale keeping this shorter side (a LUMEN view's)
HEADING_RANGE = (-360.0, 360.0)  # degrees; anything else is a typo, not a direction
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
log = logging.getLogger("geodemo.labels")


class LabelError(ValueError):
    """A label that was refused; nothing was written."""


class LabelConflict(LabelError):
    """A request id already stored with other views or coordinates (HTTP's 409 Conflict)."""


@dataclass
class LabelResult:
    """A stored label: its new `uuid`, the number of labels now in the store, and the store folder."""

    uuid: str
    count: int
    root: str


def _number(value, what: str) -> float:
    if isinstance(value, str) and value.count(",") == 1 and "." not in value:
        value = value.replace(",", ".")  # a decimal comma, as typed in Croatian: "45,8150"
    try:  # True/False are ints to Python, never coordinates; 10**400 overflows float
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise LabelError(f"The {what} {shown} is not a number; enter decimal degrees such as 45.8150.")
    return number


def parse_degrees(value, what: str = "coordinate") -> float:
    """Decimal degrees from a number or text ("45.815", "45,815"); LabelError naming `what` otherwise."""
    return _number(value, what)


def _request_id(value) -> str | None:
    """A client's optional request id (None or empty = none), checked like a location id."""
    if value is None or value == "":
        return None
    if not is_safe_id(str(value)) or not isinstance(value, (str, int)) or isinstance(value, bool):
        raise LabelError("The request id may use only letters, digits, '.', '_' and '-' "
                         "(at most 128); send a fresh UUID per label.")
    return str(value)


def _storage_error(root: Path, exc: OSError) -> LabelError:
    """A failed write (full disk, read-only folder, busy lock) as one sentence for the user."""
    if isinstance(exc, TimeoutError):  # filelock.Timeout: another writer held the lock too long
        reason = f"another save held its lock for over {LOCK_TIMEOUT_S} s"
    else:
        reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                  errno.EROFS: "it is on a read-only file system", errno.EACCES: "permission denied",
                  errno.EPERM: "permission denied"}.get(exc.errno, exc.strerror or type(exc).__name__)
    return LabelError(f"Could not save to the labels folder {root} ({reason}); nothing was stored, so free "
                      "disk space or set GEODEMO_LABELS_DIR to a writable folder and save again.")


def write_atomic(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Write bytes to `path` via a temporary file (in `tmp_dir`, same file system), fsync and os.replace."""
    fd, tmp = tempfile.mkstemp(dir=tmp_dir or path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _encode_views(views: dict) -> dict[int, bytes]:
    """{heading: source} -> {heading: JPEG bytes}; the views share one request's decode budget."""
    encoded = {}
    with decode_budget():
        for key, source in (views or {}).items():
            if source is None:
                continue
            if str(key) not in {str(h) for h in VIEW_HEADINGS}:
                raise LabelError(f"View key {key!r} is not a heading; use 0, 90, 180 or 270.")
            name = f"The {key}° view"
            try:
                rgb = load_rgb(source, min_side=STORED_SIDE, name=name)
                encoded[int(key)] = encode_jpeg(check_view_side(rgb, name))
            except ImageError as exc:
                raise LabelError(str(exc)) from None
    if not encoded:
        raise LabelError("No views were given; add at least one photo.")
    return encoded


class LabelStore:
    """A growing dataset in the LUMEN layout: root/data.csv + root/images/<uuid>/<heading>.jpg."""

    def __init__(self, root, cleanup: bool = True):
        self.root = Path(root)
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        self.csv_path = self.root / "data.csv"
        self.tmp_dir = self.root / ".partial"  # temporary files live apart from images/, which the app serves
        self.tmp_dir.mkdir(exist_ok=True)
        self.lock = FileLock(str(self.root / ".lock"), timeout=LOCK_TIMEOUT_S)
        if cleanup:
            self.remove_leftovers()

    def remove_leftovers(self) -> list[str]:
        """Delete what a crash can leave: temporary files, and image folders no row references.

        Only folders named like the store's own ids (UUIDs) are removed. Runs under the lock, which every
        write holds from its first image to data.csv, so an in-flight label is never touched.

        Returns:
            The removed paths, relative to the store folder (also logged).
        """
        removed = []
        try:
            with self.lock:
                known = {row.get("uuid") for row in self._read_rows()[1]}
                images = self.root / "images"
                for tmp in [*self.tmp_dir.iterdir(), *self.root.glob(".*.tmp"), *images.glob("*/.*.tmp")]:
                    tmp.unlink(missing_ok=True)
                    removed.append(tmp)
                for folder in images.iterdir():
                    if _UUID.fullmatch(folder.name) and folder.name not in known and not folder.is_symlink():
                        shutil.rmtree(folder, ignore_errors=True)
                        removed.append(folder)
        except OSError as exc:  # a read-only or busy store still opens; writes report their own error
            log.warning("could not check %s for crash leftovers: %s", self.root, exc)
            return []
        names = [str(p.relative_to(self.root)) for p in removed]
        if names:
            log.warning("removed %d crash leftover(s) from %s: %s", len(names), self.root, ", ".join(names))
        return names

    # Rows are kept as text so that rewriting the CSV never changes existing values.
    def _read_rows(self) -> tuple[list[str], list[dict]]:
        if not self.csv_path.exists():
            return list(COLUMNS), []
        with open(self.csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            fields = list(reader.fieldnames or [])
        return fields + [c for c in COLUMNS if c not in fields], rows

    def _write_rows(self, fields: list[str], rows: list[dict]) -> None:
        with tempfile.TemporaryFile("w+", newline="", encoding="utf-8") as buf:
            writer = csv.DictWriter(buf, fieldnames=fields, restval="")
            writer.writeheader()
            writer.writerows(rows)
            buf.seek(0)
            write_atomic(self.csv_path, buf.read().encode("utf-8"), self.tmp_dir)

    def add(self, views: dict, latitude, longitude, heading: float | None = None,
            request_id: str | None = None, source_uuid: str | None = None) -> LabelResult:
        """Store one location.

        Args:
            views: {0|90|180|270: image source (as for `load_rgb`) or None}; at least one view.
            latitude, longitude: WGS84 degrees; must lie in Croatia (5 km tolerance).
            heading: optional camera heading of view 0, degrees clockwise from north.
            request_id: optional client id of this request; a retry with an id already stored returns
                that label's result and stores nothing (also after a restart: the id is in data.csv).
            source_uuid: id of the location in the folder the views came from; kept in the `source_uuid`
                column, and used as the label's own uuid when no stored label has it yet.

        Raises:
            LabelError: no views, an unreadable image, a non-numeric or out-of-Croatia point;
                nothing is written then.
        """
        request_id = _request_id(request_id)
        if source_uuid is not None and not is_safe_id(str(source_uuid)):
            raise LabelError(f"The source location id {source_uuid!r} is not a safe folder name.")
        lat, lon = _number(latitude, "latitude"), _number(longitude, "longitude")
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise LabelError(f"The point ({lat}, {lon}) is not a valid coordinate; "
                             f"latitude must lie within -90..90 and longitude within -180..180.")
        if not bool(geo.in_croatia(lat, lon)):
            km = float(geo.distance_to_croatia_km(lat, lon))
            raise LabelError(f"The point ({lat:.4f}, {lon:.4f}) is {km:.0f} km outside Croatia; "
                             f"click inside the country.")
        if heading is not None and heading != "":
            heading = _number(heading, "heading")
            if not HEADING_RANGE[0] <= heading <= HEADING_RANGE[1]:
                raise LabelError(f"The heading {heading:g} is outside -360..360 degrees; give the direction "
                                 "of the north view in degrees clockwise from north (0-360).")
            heading %= 360
        encoded = _encode_views(views)

        county = int(geo.county_index(lat, lon))
        new_id = str(uuidlib.uuid4())
        folder = self.root / "images" / new_id
        row = {"uuid": new_id, "latitude": repr(lat), "longitude": repr(lon),
               "heading": "" if heading is None or heading == "" else repr(heading),
               "county": geo.COUNTY_CODES[county] if county >= 0 else ""}
        try:
            with self.lock:  # re-read inside the lock so a concurrent writer's row is never lost
                fields, rows = self._read_rows()
                if request_id is not None:
                    done = next((r for r in rows if r.get(REQUEST_COLUMN) == request_id), None)
                    if done is not None:
                        self._check_same(done, row, encoded, request_id)
                        return LabelResult(uuid=done["uuid"], count=len(rows), root=str(self.root))
                    fields += [] if REQUEST_COLUMN in fields else [REQUEST_COLUMN]
                    row[REQUEST_COLUMN] = request_id
                if source_uuid is not None:
                    fields += [] if SOURCE_COLUMN in fields else [SOURCE_COLUMN]
                    row[SOURCE_COLUMN] = str(source_uuid)
                    free = all(r.get("uuid") != source_uuid for r in rows)
                    if free and not (self.root / "images" / source_uuid).exists():
                        new_id = row["uuid"] = str(source_uuid)
                        folder = self.root / "images" / new_id
                folder.mkdir(parents=True)
                for key, data in encoded.items():
                    write_atomic(folder / f"{key}.jpg", data, self.tmp_dir)
                rows.append(row)
                self._write_rows(fields, rows)
        except OSError as exc:  # data.csv is replaced last, so the stored rows are untouched
            shutil.rmtree(folder, ignore_errors=True)
            raise _storage_error(self.root, exc) from None
        return LabelResult(uuid=new_id, count=len(rows), root=str(self.root))

    def _check_same(self, done: dict, row: dict, encoded: dict[int, bytes], request_id: str) -> None:
        """A retry must carry what the stored label holds: the same point and the same views."""
        folder = self.root / "images" / done["uuid"]
        stored = {int(p.stem): p for p in folder.glob("*.jpg") if p.stem.isdigit()} if folder.is_dir() else {}
        same = (done.get("latitude") == row["latitude"] and done.get("longitude") == row["longitude"]
                and set(stored) == set(encoded)
                and all(stored[k].read_bytes() == encoded[k] for k in encoded))
        if not same:
            raise LabelConflict(f"The request id {request_id!r} was already used for a different label "
                                "(other views or coordinates); nothing was stored: send a fresh request id.")

    def undo_last(self) -> str | None:
        """Remove the last row and then its images; returns its uuid, or None if the store is empty."""
        try:
            with self.lock:
                fields, rows = self._read_rows()
                if not rows:
                    return None
                last = rows.pop()
                self._write_rows(fields, rows)
        except OSError as exc:
            raise _storage_error(self.root, exc) from None
        if is_safe_id(last["uuid"]):  # never let a hand-edited id delete outside images/
            shutil.rmtree(self.root / "images" / last["uuid"], ignore_errors=True)
        return last["uuid"]

    def count(self) -> int:
        """Number of stored labels."""
        return len(self._read_rows()[1])

    def frame(self) -> pd.DataFrame:
        """The labels as `read_locations` returns them (empty with the label columns if none yet)."""
        if not self.csv_path.exists():
            numeric = ("latitude", "longitude", "heading")
            return pd.DataFrame({c: pd.Series(dtype=float if c in numeric else str) for c in COLUMNS})
        return read_locations(self.root)
