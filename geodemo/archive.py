"""Dataset archives: a LUMEN-layout .zip unpacked safely into a folder of its own, then read as usual.

Refused, each with one sentence and nothing left behind: entries that would land outside the folder
(zip-slip: absolute paths, '..'), symbolic links, more than `MAX_FILES` entries, more than `MAX_BYTES`
uncompressed, any entry (whatever its size) or the whole archive compressed more than `MAX_RATIO` times
(a zip bomb), a data.csv of more than `MAX_LOCATIONS` locations, and a dataset whose views do not validate
(the messages are validate-data's). Only data.csv and the views of the locations it lists are extracted
(images/<uuid>/<heading>.jpg|.jpeg|.png, or data/ in the variant layout); every other entry is skipped
unread. The archive may hold the dataset at its top or inside one folder.

Uploaded datasets expire: `prune_uploads` (run before every unpack) deletes the oldest ones beyond
`UPLOAD_MAX_AGE_S` or `UPLOAD_MAX_BYTES` together, and unpack leftovers of a killed process, and logs each.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import time
import uuid as uuidlib
import zipfile
from pathlib import Path, PurePosixPath

from geodemo.data import VIEW_HEADINGS, VIEW_SUFFIXES, DatasetError, _read_raw
from geodemo.validate import validate_dataset

MAX_FILES = 50_000  # entries in one archive
MAX_BYTES = int(os.environ.get("GEODEMO_UPLOAD_MAX_UNPACKED", 1024**3))  # uncompressed bytes of one archive
MAX_LOCATIONS = int(os.environ.get("GEODEMO_UPLOAD_MAX_LOCATIONS", 3000))  # rows of an archive's data.csv
MAX_CSV_BYTES = 32 * 1024**2  # data.csv of one archive
MAX_RATIO = 200  # uncompressed / compressed size; JPEG views barely compress (about 1.0-1.1)
UPLOAD_MAX_AGE_S = int(os.environ.get("GEODEMO_UPLOAD_MAX_AGE_S", 24 * 3600))  # unpacked uploads kept
UPLOAD_MAX_BYTES = int(os.environ.get("GEODEMO_UPLOAD_MAX_TOTAL", 4 * 1024**3))  # all unpacked uploads
LEFTOVER_AGE_S = 3600  # an unpack folder this old belongs to a process that was killed
CHUNK = 1 << 20
_VIEW_FILES = {f"{h}{s}" for h in VIEW_HEADINGS for s in VIEW_SUFFIXES}
log = logging.getLogger("geodemo.archive")


class ArchiveError(DatasetError):
    """An archive that was refused; nothing of it was kept."""


def _entry_path(info: zipfile.ZipInfo) -> PurePosixPath:
    """The entry's relative path, or ArchiveError when it would escape the folder or is a link."""
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in path.parts:
        raise ArchiveError(f"The archive entry {info.filename!r} points outside the archive's folder "
                           "(zip-slip); refusing the archive, so rebuild it from the dataset folder.")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveError(f"The archive entry {info.filename!r} is a symbolic link; a dataset archive may "
                           "hold only data.csv and image files, so zip the files themselves.")
    return path


def _check_sizes(infos: list[zipfile.ZipInfo], name: str) -> None:
    """Every entry counts, whatever its size and whether or not it is extracted."""
    if len(infos) > MAX_FILES:
        raise ArchiveError(f"{name} holds {len(infos):,} entries, more than the {MAX_FILES:,} allowed; "
                           "split the dataset into smaller archives.")
    total = sum(i.file_size for i in infos)
    if total > MAX_BYTES:
        raise ArchiveError(f"{name} unpacks to {total / 1024**2:,.0f} MB, more than the "
                           f"{MAX_BYTES / 1024**2:,.0f} MB allowed; split the dataset into smaller archives.")
    packed = sum(i.compress_size for i in infos)
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > MAX_RATIO:
            raise ArchiveError(f"The archive entry {info.filename!r} expands {ratio:,.0f} times (more than "
                               f"{MAX_RATIO}), like a zip bomb; refusing the archive.")
    if total > MAX_RATIO * max(packed, 1):
        raise ArchiveError(f"{name} expands {total / max(packed, 1):,.0f} times (more than {MAX_RATIO}), "
                           "like a zip bomb; refusing the archive.")


def _dataset_prefix(paths: list[PurePosixPath], name: str) -> PurePosixPath:
    """Where data.csv sits: the archive's top, or the one folder everything is in."""
    csvs = sorted((p for p in paths if p.name.lower() == "data.csv" and len(p.parts) <= 2),
                  key=lambda p: len(p.parts))
    if not csvs:
        raise ArchiveError(f"{name} has no data.csv at its top (or in one folder); zip a dataset folder in "
                           "the LUMEN layout: data.csv and images/<uuid>/0.jpg, 90.jpg, 180.jpg, 270.jpg.")
    return csvs[0].parent


def _is_view(rel: PurePosixPath, ids: set[str]) -> bool:
    """images/<id>/<heading>.<suffix> (data/ in the variant layout) of a location data.csv lists."""
    return (len(rel.parts) == 3 and rel.parts[0] in ("images", "data") and rel.parts[1] in ids
            and rel.parts[2].lower() in _VIEW_FILES)


def _copy(source, target: Path, limit: int) -> int:
    """Stream an entry to `target`, never writing more than `limit` bytes (a lying header)."""
    written = 0
    with open(target, "wb") as out:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > limit:
                raise ArchiveError(f"The archive entry {target.name!r} is larger than its header says; "
                                   "refusing the archive.")
            out.write(chunk)
    return written


def _listed_ids(tmp: Path, name: str) -> set[str]:
    """The location ids of the extracted data.csv; ArchiveError beyond MAX_LOCATIONS rows."""
    try:
        frame = _read_raw(tmp)
    except DatasetError as exc:  # its message names the unpack folder: name the archive instead
        raise ArchiveError(f"{name}: {str(exc).replace(str(tmp / 'data.csv'), 'its data.csv')}") from None
    if len(frame) > MAX_LOCATIONS:
        raise ArchiveError(f"{name} lists {len(frame):,} locations, more than the {MAX_LOCATIONS:,} one "
                           "upload may hold; split it into smaller archives (or evaluate it with the CLI).")
    return set(frame["uuid"]) if "uuid" in frame else set()


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def prune_uploads(root, max_age_s: float = UPLOAD_MAX_AGE_S, max_bytes: int = UPLOAD_MAX_BYTES,
                  reserve: int = 0) -> list[str]:
    """Delete expired uploads: older than `max_age_s`, then the oldest until all fit `max_bytes - reserve`.

    Also removes unpack folders (``.unpack-*``) older than LEFTOVER_AGE_S, left by a killed process.

    Returns:
        The names of the deleted folders (each also logged).
    """
    root = Path(root)
    if not root.is_dir():
        return []
    now, removed = time.time(), []
    for tmp in root.glob(".unpack-*"):
        if now - tmp.stat().st_mtime > LEFTOVER_AGE_S:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp.name)
    kept = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: d.stat().st_mtime)  # oldest first
    sizes = {d: _folder_bytes(d) for d in kept}
    total = sum(sizes.values())
    for folder in kept:
        expired = now - folder.stat().st_mtime > max_age_s
        if not expired and total + reserve <= max_bytes:
            break
        shutil.rmtree(folder, ignore_errors=True)
        total -= sizes[folder]
        removed.append(folder.name)
        log.info("deleted uploaded dataset %s (%s, %.0f MB)", folder.name,
                 "expired" if expired else "over the uploads' size limit", sizes[folder] / 1024**2)
    return removed


def unpack_dataset(archive, dest_root, name: str | None = None) -> Path:
    """Unpack a LUMEN-layout dataset archive into a new folder under `dest_root` and validate it.

    Args:
        archive: path of the .zip file.
        dest_root: the upload folder; the dataset goes to ``dest_root/<random id>/`` and nothing is
            written anywhere else. Expired uploads there are deleted first (`prune_uploads`).
        name: how messages call the archive (default: its file name).

    Returns:
        The dataset folder (data.csv + images/).

    Raises:
        ArchiveError: a refused archive or a dataset that does not validate; nothing is kept then.
    """
    archive = Path(archive)
    name = name or archive.name
    if not zipfile.is_zipfile(archive):
        raise ArchiveError(f"{name} is not a zip archive; upload a .zip of a dataset folder.")
    dest_root = Path(dest_root)
    dest_root.mkdir(parents=True, exist_ok=True)
    target = dest_root / uuidlib.uuid4().hex
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest_root))
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            paths = [_entry_path(i) for i in infos]
            _check_sizes(infos, name)
            prune_uploads(dest_root, reserve=sum(i.file_size for i in infos))
            prefix = _dataset_prefix(paths, name)
            entries = [(i, p.relative_to(prefix)) for i, p in zip(infos, paths) if p.is_relative_to(prefix)]
            csv_info = next(i for i, rel in entries if len(rel.parts) == 1 and rel.name.lower() == "data.csv")
            if csv_info.file_size > MAX_CSV_BYTES:
                raise ArchiveError(f"{name}'s data.csv is {csv_info.file_size / 1024**2:,.0f} MB, more than "
                                   f"the {MAX_CSV_BYTES // 1024**2} MB allowed; split the dataset.")
            with zf.open(csv_info) as source:
                budget = MAX_BYTES - _copy(source, tmp / "data.csv", min(csv_info.file_size, MAX_CSV_BYTES))
            ids = _listed_ids(tmp, name)
            for info, rel in entries:
                if not _is_view(rel, ids):
                    continue  # not part of the dataset: never extracted
                out = tmp.joinpath(*rel.parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as source:
                    budget -= _copy(source, out, min(info.file_size, budget))
        report = validate_dataset(tmp)
        if not report.ok:
            shown = "; ".join(f"[{p.where}] {p.what}" for p in report.errors[:3])
            more = f" (and {len(report.errors) - 3} more)" if len(report.errors) > 3 else ""
            raise ArchiveError(f"{name} is not a usable dataset: {shown}{more}; fix these and upload again.")
        tmp.rename(target)
        return target
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"{name} is a damaged zip archive ({exc}); create it again.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
