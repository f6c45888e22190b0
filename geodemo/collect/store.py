"""The collected dataset on disk: the LUMEN layout plus where every location came from, safe to kill.

Layout::

    out/data.csv                 uuid,latitude,longitude  (what validate-data, train and evaluate read)
    out/images/<uuid>/0.jpg ...  the views; a Mapillary location may lack some
    out/sources.csv              uuid,point,key,source,source_id,captured,creator,licence,views,url
    out/README.md, ATTRIBUTION   what was collected, from where, under which licence (per location)
    out/.collect/                settings.json (the run's settings, no secrets), skipped.csv, run.lock

A location is written into a temporary folder and moved into images/ with one os.replace; then sources.csv
and data.csv are rewritten (temporary file, fsync, os.replace), all under the run lock. A killed run
therefore leaves at worst an image folder without a row, which the next run removes and fetches again.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import uuid as uuidlib
from collections import Counter
from pathlib import Path

from filelock import FileLock, Timeout

from geodemo.collect.http import CollectError
from geodemo.collect.vocab import SKIP_REASONS, TRANSIENT
from geodemo.labels import write_atomic

DATA_COLUMNS = ("uuid", "latitude", "longitude")
SOURCE_COLUMNS = ("uuid", "point", "key", "source", "source_id", "captured", "creator", "licence", "views",
                  "url")
NAMESPACE = uuidlib.UUID("5f0c6a52-3d1e-4c39-9a53-2f2b7f0c1e25")  # location uuid = uuid5(NAMESPACE, key)


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` via a temporary file in the same folder, fsync'd, then os.replace (geodemo.labels)."""
    write_atomic(path, text.encode("utf-8"))


def _csv_text(columns, rows) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


class CollectStore:
    """One output folder, opened for one run (holds its lock until `close`).

    Args:
        root: the dataset folder (created).
        settings: what makes a run resumable here (source, seed, points, ...; never a key): a different
            set is refused, so a re-run only ever continues the same plan.
    """

    def __init__(self, root, settings: dict, readonly: bool = False):
        self.root = Path(root)
        self.meta = self.root / ".collect"
        if readonly:  # --dry-run: compare the settings and count what is done; no lock, no writes
            self.lock = None
            self._check_settings(settings, write=False)
            self.rows, self.sources = _read_csv(self.root / "data.csv"), _read_csv(self.root / "sources.csv")
            return
        try:
            self.meta.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CollectError(f"cannot create {self.meta} ({exc.strerror}); pass a writable --out.") \
                from None
        self.lock = FileLock(self.meta / "run.lock")
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise CollectError(f"another collect run is writing {self.root}; wait for it to finish.") \
                from None
        try:
            self._check_settings(settings)
            self.rows = _read_csv(self.root / "data.csv")
            self.sources = _read_csv(self.root / "sources.csv")
            self._tidy()
        except BaseException:
            self.lock.release()
            raise

    def _check_settings(self, settings: dict, write: bool = True) -> None:
        path = self.meta / "settings.json"
        if path.is_file():
            old = json.loads(path.read_text(encoding="utf-8"))
            changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            if changed:
                what = ", ".join(f"{k} {old.get(k)!r} -> {settings.get(k)!r}" for k in changed[:3])
                raise CollectError(f"{self.root} was collected with other settings ({what}); re-run with the "
                                   "same settings to resume, or pass a new --out.")
        elif (self.root / "data.csv").exists():
            raise CollectError(f"{self.root} already holds a dataset not made by collect; pass a new --out.")
        elif write:
            _write_atomic(path, json.dumps(settings, indent=1, sort_keys=True))

    def _tidy(self) -> None:
        """Make the files agree after a killed run: only rows of data.csv count; other folders go."""
        kept = {r["uuid"] for r in self.rows}
        if len(self.sources) != len(kept) or any(s["uuid"] not in kept for s in self.sources):
            self.sources = [s for s in self.sources if s["uuid"] in kept]
            _write_atomic(self.root / "sources.csv", _csv_text(SOURCE_COLUMNS, self.sources))
        images = self.root / "images"
        if images.is_dir():
            for folder in images.iterdir():
                if folder.name not in kept:
                    shutil.rmtree(folder, ignore_errors=True)
        for tmp in self.meta.glob("tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)

    # --- what is done --------------------------------------------------------------------------
    def done_points(self) -> dict[int, str]:
        """Sample point index -> "kept" or its final skip reason, for every point a re-run need not redo."""
        done = {}
        path = self.meta / "skipped.csv"
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                point, _, reason = line.partition(",")
                if point.isdigit() and reason in SKIP_REASONS:  # a torn last line is ignored
                    done[int(point)] = reason
        for source in self.sources:
            done[int(source["point"])] = "kept"
        return done

    def keys(self) -> set[str]:
        """The source keys (e.g. streetview:<pano id>) of the kept locations."""
        return {s["key"] for s in self.sources}

    def positions(self) -> list[tuple[float, float]]:
        """(lat, lon) degrees of the kept locations."""
        return [(float(r["latitude"]), float(r["longitude"])) for r in self.rows]

    # --- writing ------------------------------------------------------------------------------
    def skip(self, point: int, reason: str) -> None:
        """Remember a final skip (transient ones are not remembered: a re-run tries them again)."""
        if reason in TRANSIENT:
            return
        with open(self.meta / "skipped.csv", "a", encoding="utf-8") as f:
            f.write(f"{point},{reason}\n")
            f.flush()
            os.fsync(f.fileno())

    def add(self, point: int, key: str, lat: float, lon: float, views: dict[int, bytes], source: dict) -> str:
        """Store one location atomically; returns its uuid (uuid5 of the source key: the same every run)."""
        uid = str(uuidlib.uuid5(NAMESPACE, key))
        tmp = Path(tempfile.mkdtemp(prefix="tmp-", dir=self.meta))
        try:
            for heading, data in views.items():
                (tmp / f"{heading}.jpg").write_bytes(data)
            (self.root / "images").mkdir(exist_ok=True)
            os.replace(tmp, self.root / "images" / uid)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.sources.append({**source, "uuid": uid, "point": str(point), "key": key})
        self.rows.append({"uuid": uid, "latitude": f"{lat:.7f}", "longitude": f"{lon:.7f}"})
        _write_atomic(self.root / "sources.csv", _csv_text(SOURCE_COLUMNS, self.sources))
        _write_atomic(self.root / "data.csv", _csv_text(DATA_COLUMNS, self.rows))
        return uid

    def write_docs(self, summary: dict) -> None:
        """README.md (what, where from, licence, how to use) and ATTRIBUTION (one line per location)."""
        by_source = Counter(s["source"] for s in self.sources)
        lines = ["# Collected with `python -m training collect`", "",
                 f"{len(self.rows)} locations in the LUMEN layout (data.csv + images/<uuid>/<heading>.jpg).",
                 f"Settings: `{json.dumps(summary.get('settings', {}), sort_keys=True)}`", ""]
        if by_source.get("streetview"):
            lines += ["Street View locations: images from the Google Street View Static API, fetched with "
                      "the user's own key under the Google Maps Platform Terms of Service; imagery © Google "
                      "or the contributor named in sources.csv. Check those terms before sharing them.", ""]
        if by_source.get("mapillary"):
            lines += ["Mapillary locations: photos from Mapillary (https://www.mapillary.com), licensed "
                      "CC-BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/). Credit the creators "
                      "listed in ATTRIBUTION and sources.csv, and share derived images alike.", ""]
        skipped = sorted(summary.get("skipped", {}).items())
        lines += ["`sources.csv` records, per location: the sample point, source ids (panorama id or "
                  "Mapillary image ids with their compass angles), capture date, creator, licence, link.",
                  "Skipped points by reason: " + (", ".join(f"{k} {v}" for k, v in skipped) or "none")]
        _write_atomic(self.root / "README.md", "\n".join(lines) + "\n")
        credits = [f"{s['uuid']}: {s['source']} {s['source_id']} by {s['creator']} ({s['licence']}) "
                   f"{s['url']}" for s in self.sources]
        _write_atomic(self.root / "ATTRIBUTION", "\n".join(credits) + ("\n" if credits else ""))

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
