"""Dataset archives: a LUMEN-layout .zip unpacked safely into a folder of its own, then read as usual.

Refused, each with one sentence and nothing left behind: entries that would land outside the folder
(zip-slip: absolute paths, '..'), symbolic links, more than `MAX_FILES` entries, more than `MAX_BYTES`
uncompressed, an entry or a whole archive compressed more than `MAX_RATIO` times (a zip bomb), and a
dataset whose views do not validate (the messages are validate-data's). Only data.csv and the view files
under images/ (or data/) are extracted; the archive may hold them at its top or inside one folder.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import uuid as uuidlib
import zipfile
from pathlib import Path, PurePosixPath

from geodemo.data import VIEW_SUFFIXES, DatasetError, validate_dataset

MAX_FILES = 50_000  # entries in one archive
MAX_BYTES = 2 * 1024**3  # uncompressed bytes in one archive (2 GiB)
MAX_RATIO = 200  # uncompressed / compressed size; JPEG views barely compress (about 1.0-1.1)
CHUNK = 1 << 20


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
    if len(infos) > MAX_FILES:
        raise ArchiveError(f"{name} holds {len(infos):,} entries, more than the {MAX_FILES:,} allowed; "
                           "split the dataset into smaller archives.")
    total = sum(i.file_size for i in infos)
    if total > MAX_BYTES:
        raise ArchiveError(f"{name} unpacks to {total / 1024**3:.1f} GiB, more than the "
                           f"{MAX_BYTES / 1024**3:.0f} GiB allowed; split the dataset into smaller archives.")
    packed = sum(i.compress_size for i in infos)
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > MAX_RATIO and info.file_size > CHUNK:
            raise ArchiveError(f"The archive entry {info.filename!r} expands {ratio:,.0f} times (more than "
                               f"{MAX_RATIO}), like a zip bomb; refusing the archive.")
    if total > MAX_RATIO * max(packed, 1) and total > CHUNK:
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


def _wanted(rel: PurePosixPath) -> bool:
    """data.csv, or a view file images/<id>/<file> (data/ in the variant layout); hidden files never."""
    if any(part.startswith(".") or part == "__MACOSX" for part in rel.parts):
        return False
    if rel.parts == ("data.csv",):
        return True
    return (len(rel.parts) == 3 and rel.parts[0] in ("images", "data")
            and rel.suffix.lower() in VIEW_SUFFIXES)


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


def unpack_dataset(archive, dest_root, name: str | None = None) -> Path:
    """Unpack a LUMEN-layout dataset archive into a new folder under `dest_root` and validate it.

    Args:
        archive: path of the .zip file.
        dest_root: the upload folder; the dataset goes to ``dest_root/<random id>/`` and nothing is
            written anywhere else.
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
            prefix = _dataset_prefix(paths, name)
            budget = MAX_BYTES
            for info, path in zip(infos, paths):
                try:
                    rel = path.relative_to(prefix)
                except ValueError:
                    continue
                if not _wanted(rel):
                    continue
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
