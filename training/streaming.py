"""litdata chunks for multi-node training: `optimize` writes them, `train --data CHUNKS` streams them.

Each item is one location: ``uuid``, ``lat``/``lon`` (degrees), ``view0`` .. ``view3`` (the JPEG of view
slot N/E/S/W, resized so its short side is the training size; ``b""`` where the view is missing) and
``view_mask`` (4,) uint8. Beside litdata's ``index.json`` and chunk files the folder holds ``data.csv``
(one row per item, in item order: splits, cells and targets come from it as from a LUMEN folder) and
``chunks.json`` (stored image size, counts, source folders).
DDP ranks on several machines then stream disjoint shards from local disk, a shared file system or object
storage: ``train --data s3://bucket/chunks`` (also ``gs://``, ``azure://``, ``r2://``, ``hf://``; litdata's
downloaders and their credentials) copies the three small metadata files into a local folder
(``remote_chunks``) and streams the chunk files on demand into a local cache beside them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from geodemo.data import VIEW_HEADINGS, DatasetError, read_locations, view_paths
from geodemo.images import load_rgb

try:  # an optional dependency: the runtime set (requirements.txt, a Space) trains from folders without it
    import litdata
except ImportError:  # a ValueError: the CLI prints it as one sentence
    raise ValueError("litdata chunks need the litdata package: pip install litdata (or requirements-dev.txt, "
                     "or pip install '.[scale]').") from None

META = "chunks.json"
JPEG_QUALITY = 95
REMOTE = "remote.json"  # in a local metadata folder of chunks kept in object storage: {"url": ...}
REMOTE_PREFIXES = ("s3://", "gs://", "azure://", "r2://", "hf://", "local:")  # litdata's downloaders


def is_remote(path) -> bool:
    """True if ``path`` names chunks in object storage (a litdata URL such as ``s3://bucket/chunks``)."""
    return str(path).startswith(REMOTE_PREFIXES)


def remote_chunks(url: str, cache_root) -> Path:
    """A local folder standing for the chunks at ``url``: their index, data.csv and chunks.json, copied once.

    The chunk files themselves stream on demand into ``<folder>-cache`` while training (litdata).

    Raises:
        DatasetError: the metadata cannot be downloaded (no such folder, no credentials, no network).
    """
    from litdata.streaming.downloader import get_downloader

    url = url.rstrip("/")
    local = Path(cache_root) / "remote-chunks" / hashlib.sha256(url.encode()).hexdigest()[:16]
    if (local / REMOTE).is_file():
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{local.name}.", dir=local.parent))
    try:
        downloader = get_downloader(url, str(work), [])
        for name in ("index.json", META, "data.csv"):
            try:
                downloader.download_file(f"{url}/{name}", str(work / name))
            except Exception as exc:  # noqa: BLE001 (each backend raises its own kinds)
                raise DatasetError(f"could not read {url}/{name} ({type(exc).__name__}: {exc}); check the "
                                   "URL, your storage credentials, and that `optimize` wrote it.") from None
        (work / REMOTE).write_text(json.dumps({"url": url}))
        os.replace(work, local)
    except OSError:
        if not (local / REMOTE).is_file():  # another process won the race: its copy is as good
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return local


def _source(chunks) -> dict:
    """litdata's ``input_dir`` (and ``cache_dir`` for chunks in object storage) of a chunks folder."""
    remote = Path(chunks) / REMOTE
    if remote.is_file():
        cache = Path(chunks).with_name(Path(chunks).name + "-cache")  # outside: keeps the fingerprint
        return {"input_dir": json.loads(remote.read_text())["url"], "cache_dir": str(cache)}
    return {"input_dir": str(chunks)}


def resize_short_side(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 with the short side ``size`` px (INTER_AREA, aspect kept; unchanged if already so)."""
    h, w = rgb.shape[:2]
    if min(h, w) == size:
        return rgb
    scale = size / min(h, w)
    shape = (max(size, round(w * scale)), max(size, round(h * scale)))
    return cv2.resize(rgb, shape, interpolation=cv2.INTER_AREA)


def encode_view(path, size: int) -> bytes:
    """One view file decoded, resized to short side ``size`` px and re-encoded as JPEG (quality 95, 4:4:4:
    a mean error of ~1.8 levels of 255 against the resized pixels)."""
    rgb = resize_short_side(load_rgb(path, min_side=size), size)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=0)  # 4:4:4 colour
    return buffer.getvalue()


def location_item(row: tuple, root: str, size: int) -> dict:
    """The chunk item of one (uuid, lat, lon) row of ``root``; litdata's ``optimize`` calls it in workers."""
    uuid, lat, lon = row
    views, mask = [b""] * len(VIEW_HEADINGS), np.zeros(len(VIEW_HEADINGS), np.uint8)
    for v, path in view_paths(root, uuid).items():
        views[v], mask[v] = encode_view(path, size), 1
    return {"uuid": uuid, "lat": float(lat), "lon": float(lon), "view_mask": mask,
            **{f"view{v}": data for v, data in enumerate(views)}}


def optimize_chunks(roots, out, image_size: int = 224, num_workers: int | None = None,
                    chunk_bytes: str = "64MB") -> dict:
    """Write LUMEN folder(s) as litdata chunks of pre-resized views.

    Args:
        roots: one or more LUMEN-layout folders (several are combined as ``train --data A --data B`` does).
        out: the chunks folder to create; it must not exist yet (written beside it, then renamed).
        image_size: short side of the stored views, px (the training size; at least the backbone's input).
        num_workers: litdata worker processes (default: one per usable core).
        chunk_bytes: target chunk file size.

    Returns:
        The ``chunks.json`` record: image size, locations, views and the source folders.

    Raises:
        DatasetError: ``out`` already exists, or a source folder cannot be read.
    """
    from training.sources import combine_datasets, data_fingerprint

    out = Path(out).resolve()
    if out.exists():
        raise DatasetError(f"{out} already exists; pass a new --out folder (or delete the old chunks).")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        root, sources = combine_datasets(roots, work / "combined", data_fingerprint)
        frame = read_locations(root)
        if frame.empty:
            raise DatasetError(f"{root / 'data.csv'} has no locations; add at least one row.")
        rows = list(zip(frame["uuid"].astype(str), frame["latitude"], frame["longitude"]))
        workers = num_workers or min(len(rows), len(os.sched_getaffinity(0)))
        litdata.optimize(
            fn=partial(location_item, root=str(root), size=image_size),
            inputs=rows,
            output_dir=str(work / "chunks"),
            chunk_bytes=chunk_bytes,
            num_workers=workers,
            keep_data_ordered=True,
            reorder_files=False,
            verbose=False,
        )
        order = item_uuids(work / "chunks")  # workers may write chunks in any order: data.csv follows them
        frame = frame.set_index("uuid").loc[order].reset_index()
        frame.to_csv(work / "chunks" / "data.csv", index=False)
        meta = {"image_size": image_size, "locations": len(frame), "sources": sources,
                "views": sum(len(view_paths(root, u)) for u in order)}
        (work / "chunks" / META).write_text(json.dumps(meta, indent=1))
        os.rename(work / "chunks", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return meta


def _dataset(chunks, **kwargs):
    """A plain ``litdata.StreamingDataset`` over ``chunks``, refusing chunk formats that would unpickle."""
    formats = json.loads((Path(chunks) / "index.json").read_text()).get("config", {}).get("data_format", [])
    if any("pickle" in str(f) for f in formats):
        raise DatasetError(f"{chunks} stores pickled items, which geodemo never loads; "
                           "write the chunks with `python -m training optimize`.")
    return litdata.StreamingDataset(**_source(chunks), **kwargs)


def item_uuids(chunks) -> list[str]:
    """The uuid of every item, in litdata's global item order."""
    dataset = _dataset(chunks)
    return [dataset[i]["uuid"] for i in range(len(dataset))]


def chunk_meta(chunks) -> dict:
    """The ``chunks.json`` record; DatasetError if the folder was not written by ``optimize``."""
    path = Path(chunks) / META
    if not path.is_file() or not (Path(chunks) / "data.csv").is_file():
        raise DatasetError(f"{chunks} has litdata chunks but no {META} and data.csv; "
                           "write it with `python -m training optimize --data DIR --out CHUNKS`.")
    return json.loads(path.read_text())


def _decoded(item: dict, size: int) -> dict[int, np.ndarray]:
    """{view index: (H, W, 3) uint8} of a chunk item's present views."""
    return {v: load_rgb(item[f"view{v}"], min_side=size, name=f"{item['uuid']} view {VIEW_HEADINGS[v]}")
            for v in range(len(VIEW_HEADINGS)) if item["view_mask"][v]}


class LocationChunks(litdata.StreamingDataset):
    """A StreamingDataset whose items its ``location_dataset`` (a LocationDataset) assembles from the
    decoded views; ``rows`` maps uuid -> that dataset's row."""

    location_dataset = None
    rows: dict = {}

    def __getitem__(self, index):
        item = super().__getitem__(index)
        base = self.location_dataset
        return base.assemble(self.rows[item["uuid"]], _decoded(item, base.image_size))


def chunk_dataset(chunks, base, shuffle: bool, seed: int):
    """A litdata StreamingDataset of ``base``'s locations (a LocationDataset over ``chunks``/data.csv rows).

    Items come out as ``base`` builds them (``views`` (V, 3, H, W), ``view_mask`` and every target):
    the same transforms, panorama mirror and targets as the image folder path.

    Raises:
        DatasetError: the chunks' views are smaller than ``base.image_size``, or a location is missing.
    """
    stored = chunk_meta(chunks)["image_size"]
    if stored < base.image_size:
        raise DatasetError(f"{chunks} holds {stored} px views but the model trains at {base.image_size} px; "
                           f"rerun `optimize` with --image-size {base.image_size}.")
    order = {u: i for i, u in enumerate(read_locations(chunks)["uuid"].astype(str))}
    missing = [u for u in base.uuids if u not in order]
    if missing:
        raise DatasetError(f"location {missing[0]!r} is not in {chunks}; rerun `optimize`.")
    _dataset(chunks)  # refuses pickled formats before anything is read
    if hasattr(base.transform, "set_random_seed"):  # num_workers 0: seeded here; workers by seed_worker
        base.transform.set_random_seed(seed)
    dataset = LocationChunks(**_source(chunks), shuffle=shuffle, seed=seed)
    dataset.location_dataset, dataset.rows = base, {u: i for i, u in enumerate(base.uuids)}
    return dataset.subset(sorted(order[u] for u in base.uuids))


def chunk_loader(dataset, batch_size: int, num_workers: int, pin_memory: bool, worker_init_fn):
    """The litdata StreamingDataLoader of ``dataset`` (each DDP rank and worker reads its own shard)."""
    return litdata.StreamingDataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        worker_init_fn=worker_init_fn,
    )
