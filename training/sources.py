"""Where training data comes from: content fingerprints, litdata chunk detection, and several LUMEN-layout
folders trained as one dataset (`train --data A --data B ...`).

The folders are combined under the checkpoint directory (``<out>/data-<fingerprint>``): one data.csv with
every row, and each view file hard-linked (copied only across file systems) into ``images/<uuid>/``, so the
rest of training (splits, cells, the embedding cache, evaluation) reads it as one ordinary dataset. Hard
links, not symlinks: readers never follow a link out of a dataset folder (geodemo.data.view_paths).
A uuid already used by an earlier folder gets the prefix ``d<k>-`` (k = the folder's position), so every
location stays distinct; the columns ``dataset`` (k) and ``dataset_uuid`` (its id there) trace it back.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from geodemo.data import (
    DatasetError,
    ImageScan,
    images_dir,
    is_safe_id,
    read_locations,
    view_paths,
    walk_files,
)

MERGED_PREFIX = "data-"  # inside the checkpoint directory, followed by the combined fingerprint


def is_chunks(path) -> bool:
    """True if ``path`` is a folder litdata wrote (it holds ``index.json``)."""
    return (Path(path) / "index.json").is_file()


def data_fingerprint(root, scan: ImageScan | None = None) -> str:
    """sha256 over data.csv bytes and the sorted list of image files (relative path + size).

    ``scan``: the dataset's ``ImageScan`` when one was made already (its walk is reused).
    """
    root = Path(root)
    digest = hashlib.sha256((root / "data.csv").read_bytes())
    if is_chunks(root):  # chunks: every chunk file
        files = walk_files(root)
    else:
        files = scan.files if scan is not None else walk_files(images_dir(root))
    digest.update("".join(f"{'/'.join(f[0])}:{f[2]}\n" for f in files).encode())  # sorted by path
    return digest.hexdigest()


def _distinct(uid: str, k: int, taken: set[str]) -> str:
    """`uid`, or `d<k>-uid` (then `d<k>-<n>-uid`) when an earlier folder already used it."""
    candidate, n = uid, 0
    while candidate in taken:
        n += 1
        candidate = f"d{k}-{uid}" if n == 1 else f"d{k}-{n}-{uid}"
        if not is_safe_id(candidate):  # 128-character ids: shorten the original part
            candidate = f"d{k}-{n}-{hashlib.sha1(uid.encode()).hexdigest()[:16]}"
    return candidate


def combine_datasets(roots, out_dir, fingerprint) -> tuple[Path, list[dict]]:
    """The dataset folder to train on, and one record per source folder.

    Args:
        roots: LUMEN-layout folders (one or more); one folder is used as it is.
        out_dir: the checkpoint directory; the combined view goes to ``out_dir/data-<fingerprint>`` (built
            once per content: DDP ranks and reruns reuse it).
        fingerprint: callable(folder) -> str, the content fingerprint recorded per source.

    Returns:
        (folder, [{"path", "fingerprint", "locations"}, ...]) in the order given.

    Raises:
        DatasetError: a folder given twice, or a folder that cannot be read.
    """
    roots = [Path(r).resolve() for r in roots]
    if len(set(roots)) < len(roots):
        raise DatasetError("The same --data folder is given twice; give each dataset once.")
    frames = [read_locations(root) for root in roots]
    records = [
        {"path": str(root), "fingerprint": fingerprint(root), "locations": len(frame)}
        for root, frame in zip(roots, frames)
    ]
    if len(roots) == 1:
        return roots[0], records
    merged = Path(out_dir) / f"{MERGED_PREFIX}{combined_fingerprint(records)[:16]}"
    if (merged / "data.csv").is_file():
        return merged, records
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{merged.name}.", dir=out_dir))
    try:
        _write_combined(roots, frames, tmp)
        os.rename(tmp, merged)  # atomic; fails if another process (a DDP rank) got there first
    except OSError:
        if not (merged / "data.csv").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return merged, records


def _write_combined(roots: list[Path], frames: list[pd.DataFrame], merged: Path) -> None:
    """data.csv (distinct uuids, `dataset`, `dataset_uuid`) and images/<uuid>/ with the sources' views."""
    (merged / "images").mkdir(parents=True)
    taken: set[str] = set()
    parts = []
    for k, (root, frame) in enumerate(zip(roots, frames)):
        ids = [_distinct(uid, k, taken) for uid in frame["uuid"]]
        taken.update(ids)
        for new, old in zip(ids, frame["uuid"]):
            folder = merged / "images" / new
            folder.mkdir()  # a row without views stays a row: training reports it as usual
            for view in view_paths(root, old).values():
                _link_or_copy(view, folder / view.name)
        parts.append(frame.assign(uuid=ids, dataset=k, dataset_uuid=frame["uuid"]))
    pd.concat(parts, ignore_index=True).to_csv(merged / "data.csv", index=False)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: a copy
        shutil.copyfile(source, target)


def combined_fingerprint(records: list[dict]) -> str:
    """One fingerprint for several datasets: sha256 over their fingerprints, in order."""
    if len(records) == 1:
        return records[0]["fingerprint"]
    return hashlib.sha256("|".join(r["fingerprint"] for r in records).encode()).hexdigest()
