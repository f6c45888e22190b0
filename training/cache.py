"""Frozen-backbone embedding cache: each view file embedded once, stored in a few memory-mapped arrays.

A key is the sha256 of (backbone name, a hash of the backbone's actual weights, image size, mean/std,
PREPROCESSING_VERSION, sha1 of the view file's bytes), so any change to the weights, the preprocessing or
the image content misses the cache. Hashing the live weights (not the weights *source*) also makes
random-init backbones safe: the same seed gives the same weights and hits; another seed misses.

Layout under the cache root (``store-v2/``):
- ``shards/<name>.npy``: (n, D) float32 rows, written whole (temp file + os.replace), then memory-mapped;
- ``index.csv``: one line ``key,kind,shard,row`` per stored row (kind ``plain`` or ``mirror``, the view
  flipped left-right), appended under a file lock after its shard exists; a line torn by a kill is ignored
  by readers and cut off by the next writer, so a kill -9 loses at most the rows not yet indexed;
- ``files.csv``: ``sha1,size,mtime_ns,path`` of every view file hashed so far: a file whose path, size and
  mtime are unchanged is not read again;
- ``keysets/<slot>.txt``: the cache keys of one list of view files under one key prefix (the slot: sha256 of
  both), below a first line that fingerprints every file's size and mtime: a warm run whose files are
  unchanged reads its keys in one go (``location_keys``); a stale one is recomputed and replaced whole.

Filling the cache (embedding what is missing) is training.fill; reading it back is FeatureBank here.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid as uuidlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from filelock import FileLock
from torch.utils.data import Dataset

from geodemo.data import VIEW_HEADINGS, ImageScan, view_paths
from geodemo.dataset import LocationDataset

PREPROCESSING_VERSION = 2  # bump when geodemo.dataset's eval transform changes (2: centre crop before resize)
MIRROR_VIEWS = [0, 3, 2, 1]  # mirrored panorama: east <-> west (90 <-> 270)
KINDS = ("plain", "mirror")
STORE = "store-v2"


def default_cache_dir() -> Path:
    """``$GEODEMO_CACHE_DIR`` or ``~/.cache/geodemo/embeddings``."""
    env = os.environ.get("GEODEMO_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "geodemo" / "embeddings"


def file_sha1(path: Path) -> str:
    """sha1 hex digest of a file's bytes."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_hash(module: torch.nn.Module) -> str:
    """sha256 over a module's parameter/buffer names and bytes (a few ms for a 5M-parameter backbone)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _key_prefix(backbone: str, weights: str, image_size: int, mean, std) -> str:
    parts = [backbone, weights, str(image_size), repr(tuple(mean)), repr(tuple(std))]
    return "|".join([*parts, f"prep{PREPROCESSING_VERSION}", ""])


def view_key(backbone: str, weights: str, image_size: int, mean, std, content_sha1: str) -> str:
    """Cache key of one view file under one preprocessing + backbone."""
    return hashlib.sha256(
        (_key_prefix(backbone, weights, image_size, mean, std) + content_sha1).encode()
    ).hexdigest()


def _append_lines(path: Path, lines: list[str]) -> None:
    """Append whole lines (caller holds the lock); first cut off a line torn by a killed writer."""
    with open(path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(max(0, size - 65536))
            tail = f.read()
            if not tail.endswith(b"\n"):
                f.truncate(size - len(tail) + tail.rfind(b"\n") + 1)
        f.seek(0, os.SEEK_END)
        f.write("".join(lines).encode())
        f.flush()
        os.fsync(f.fileno())


class _LineLog:
    """An append-only text file of comma-separated lines, read incrementally (only complete lines)."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        return data[:end].decode(errors="replace").splitlines()


class FileHashes:
    """sha1 of view files, remembered by (path, size, mtime_ns): a file is read only when new or changed."""

    def __init__(self, root=None):
        self.dir = Path(root or default_cache_dir()) / STORE
        self._log = _LineLog(self.dir / "files.csv")
        self._known: dict[str, tuple[int, int, str]] = {}
        self.hashed = 0  # files read and hashed by this object (new or changed since last seen)

    def sha1s(self, paths: list, stats: list[tuple[int, int]] | None = None) -> list[str]:
        """Content sha1 of each file; new or changed files are hashed (in threads) and recorded.

        Args:
            paths: the files. stats: their (size bytes, mtime ns) if already known (e.g. from
                ``geodemo.data.ImageScan``, absolute paths then), else each file is stat-ed here.
        """
        for line in self._log.new_lines():
            parts = line.split(",", 3)
            if len(parts) == 4 and parts[1].isdigit() and parts[2].isdigit():
                self._known[parts[3]] = (int(parts[1]), int(parts[2]), parts[0])
        names = [os.path.abspath(p) for p in paths] if stats is None else paths
        if stats is None:
            stats = [(st.st_size, st.st_mtime_ns) for st in map(os.stat, names)]
        out: list[str | None] = [None] * len(names)
        todo = []
        for i, (name, stat) in enumerate(zip(names, stats)):
            known = self._known.get(name)
            if known and known[:2] == stat:
                out[i] = known[2]
            else:
                todo.append((i, name, *stat))
        self.hashed += len(todo)
        if todo:
            with ThreadPoolExecutor(max(2, os.cpu_count() or 1)) as pool:  # hashlib releases the GIL
                digests = list(pool.map(file_sha1, [t[1] for t in todo]))
            lines = []
            for (i, name, size, mtime), digest in zip(todo, digests):
                out[i] = digest
                self._known[name] = (size, mtime, digest)
                if "\n" not in name:
                    lines.append(f"{digest},{size},{mtime},{name}\n")
            self.dir.mkdir(parents=True, exist_ok=True)
            with FileLock(self.dir / "files.lock"):
                _append_lines(self.dir / "files.csv", lines)
        return out


class EmbeddingCache:
    """Content-keyed store of view embeddings: memory-mapped (n, D) float32 shards plus an index."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_cache_dir()
        self.dir = self.root / STORE
        self._log = _LineLog(self.dir / "index.csv")
        self._where: dict[tuple[str, str], tuple[str, int]] = {}
        self._arrays: dict[str, np.ndarray] = {}

    def refresh(self) -> None:
        """Read index lines written since the last look (by this or any other process)."""
        for line in self._log.new_lines():
            parts = line.split(",")
            if len(parts) == 4 and parts[1] in KINDS and parts[3].isdigit():
                self._where[(parts[0], parts[1])] = (parts[2], int(parts[3]))

    def has(self, key: str, kind: str = "plain") -> bool:
        if (key, kind) not in self._where:
            self.refresh()
        return (key, kind) in self._where

    def array(self, shard: str) -> np.ndarray:
        """The (n, D) memory map of one shard (opened once per process)."""
        if shard not in self._arrays:
            self._arrays[shard] = np.load(self.dir / "shards" / f"{shard}.npy", mmap_mode="r")
        return self._arrays[shard]

    def locate(self, key: str, kind: str = "plain") -> tuple[str, int]:
        """(shard, row) of a stored embedding; KeyError with a sentence if it was never stored."""
        if not self.has(key, kind):
            raise KeyError(
                f"view {key[:12]}... ({kind}) is not in the embedding cache {self.dir}; fill it first."
            )
        return self._where[(key, kind)]

    def get(self, key: str, kind: str = "plain") -> np.ndarray:
        """(D,) float32 embedding of one view."""
        shard, row = self.locate(key, kind)
        return np.asarray(self.array(shard)[row])

    def put_many(self, keys: list[str], kind: str, values: np.ndarray) -> None:
        """Store (n, D) rows as one new shard, then index them (safe with concurrent writers)."""
        if not keys:
            return
        shards = self.dir / "shards"
        shards.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}-{os.getpid()}-{uuidlib.uuid4().hex[:8]}"
        tmp = shards / f".{name}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(values, dtype=np.float32))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, shards / f"{name}.npy")
        with FileLock(self.dir / "index.lock"):
            _append_lines(self.dir / "index.csv", [f"{k},{kind},{name},{r}\n" for r, k in enumerate(keys)])
        self.refresh()

    def put(self, key: str, value: np.ndarray) -> None:
        """One view: (D,) plain, or (2, D) plain and mirrored."""
        value = np.atleast_2d(value)
        for kind, row in zip(KINDS, value):
            self.put_many([key], kind, row[None])

    def clean_temporary(self) -> int:
        """Remove shard temp files left by killed writers (their pid is gone); returns how many."""
        removed = 0
        for tmp in (self.dir / "shards").glob(".*.tmp"):
            try:
                pid = int(tmp.name.split("-")[1])
                os.kill(pid, 0)
            except ProcessLookupError:
                tmp.unlink(missing_ok=True)
                removed += 1
            except (ValueError, IndexError, PermissionError):
                pass
        return removed


def location_keys(
    root,
    frame: pd.DataFrame,
    backbone: str,
    wkey: str,
    image_size: int,
    mean,
    std,
    hashes: FileHashes | None = None,
    scan: ImageScan | None = None,
) -> list[dict]:
    """Per location, view index -> cache key of its file (only views whose file exists).

    Files are hashed only when new or changed since ``hashes`` last saw them (path, size, mtime).
    ``scan``: the dataset's ``ImageScan``, whose walk already found every file and its size and mtime.
    """
    hashes = hashes or FileHashes()
    prefix = _key_prefix(backbone, wkey, image_size, mean, std)
    if scan is None:
        located = [view_paths(root, uuid) for uuid in frame["uuid"]]
        flat = hashes.sha1s([p for paths in located for p in paths.values()])
        keys = [hashlib.sha256((prefix + digest).encode()).hexdigest() for digest in flat]
    else:
        located = [scan.views(uuid) for uuid in frame["uuid"]]
        keys = _keyset(hashes, prefix, [f for views in located for f in views.values()])
    it = iter(keys)
    return [{v: next(it) for v in paths} for paths in located]


def _keyset(hashes: FileHashes, prefix: str, files: list[tuple[str, int, int]]) -> list[str]:
    """Cache keys of ``files`` ((absolute path, size, mtime ns) each) under ``prefix``: read from their
    keyset when no file changed since it was written, else from ``hashes`` (then the keyset is rewritten)."""
    names = "\n".join(f[0] for f in files)
    slot = hashes.dir / "keysets" / f"{hashlib.sha256((prefix + names).encode()).hexdigest()[:32]}.txt"
    stamp = hashlib.sha256("\n".join(f"{f[1]},{f[2]}" for f in files).encode()).hexdigest()
    try:
        lines = slot.read_text().split("\n")
        if lines[0] == stamp and len(lines) == len(files) + 1:
            return lines[1:]
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    digests = hashes.sha1s([f[0] for f in files], [f[1:] for f in files])
    keys = [hashlib.sha256((prefix + digest).encode()).hexdigest() for digest in digests]
    slot.parent.mkdir(parents=True, exist_ok=True)
    tmp = slot.with_name(f".{slot.name}.{os.getpid()}.{uuidlib.uuid4().hex[:8]}.tmp")
    tmp.write_text("\n".join([stamp, *keys]))
    os.replace(tmp, slot)  # whole or not at all: concurrent writers each leave a consistent file
    return keys


class FeatureBank:
    """Cached features of N locations, read lazily from the memory-mapped shards.

    ``bank[i]`` is (K, V, D) float32 (K = 1: plain; 2: plain, mirrored; zeros for missing views);
    ``mask`` (N, V) bool. Only rows that are read come into memory.
    """

    def __init__(self, keys: list[dict], cache: EmbeddingCache, mirror: bool = False):
        kinds = KINDS[: 2 if mirror else 1]
        cache.refresh()
        n, n_views = len(keys), len(VIEW_HEADINGS)
        self.cache, self.shards = cache, []
        self.shard = np.full((n, len(kinds), n_views), -1, np.int32)
        self.row = np.zeros((n, len(kinds), n_views), np.int64)
        self.mask = torch.zeros(n, n_views, dtype=torch.bool)
        loc, view, flat = [], [], []  # per stored view: location, view index, key
        for i, k in enumerate(keys):
            loc += [i] * len(k)
            view += k.keys()
            flat += k.values()
        loc, view = np.asarray(loc, np.int64), np.asarray(view, np.int64)
        ids: dict[str, int] = {}  # shard name -> its number here
        for j, kind in enumerate(kinds):
            shard_of, row_of = {}, {}
            for key in dict.fromkeys(flat):  # each distinct content looked up once
                shard, row_of[key] = cache.locate(key, kind)
                shard_of[key] = ids.setdefault(shard, len(ids))
            self.shard[loc, j, view] = np.asarray([shard_of[key] for key in flat], np.int32)
            self.row[loc, j, view] = np.asarray([row_of[key] for key in flat], np.int64)
        self.mask[torch.from_numpy(loc), torch.from_numpy(view)] = True
        self.shards = list(ids)
        self.dim = cache.array(self.shards[0]).shape[1] if self.shards else 0
        self.shape = (n, len(kinds), n_views, self.dim)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        out = np.zeros(self.shape[1:], np.float32)
        for j, v in zip(*np.nonzero(self.shard[i] >= 0)):
            out[j, v] = self.cache.array(self.shards[self.shard[i, j, v]])[self.row[i, j, v]]
        return torch.from_numpy(out)

    def materialise(self) -> torch.Tensor:
        """Every location's features in memory: (N, K, V, D) float32."""
        out = np.zeros(self.shape, np.float32)
        for s, name in enumerate(self.shards):
            sel = self.shard == s
            out[sel] = self.cache.array(name)[np.sort(self.row[sel])][np.argsort(np.argsort(self.row[sel]))]
        return torch.from_numpy(out)

    def __getstate__(self) -> dict:  # worker processes reopen the memory maps instead of copying them
        state = dict(self.__dict__)
        state["cache"] = EmbeddingCache(self.cache.root)
        return state


def load_features(
    keys: list[dict], cache: EmbeddingCache, mirror: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack cached embeddings into memory.

    Returns:
        feats (N, K, V, D) float32 (K = 2: plain, mirrored; K = 1 with ``mirror=False``; zeros for missing
        views), mask (N, V) bool.
    """
    bank = FeatureBank(keys, cache, mirror=mirror)
    return bank.materialise(), bank.mask


class CachedLocationDataset(Dataset):
    """A LocationDataset that serves ``feats`` (V, D) from the cache instead of decoding ``views``.

    Args:
        base: the LocationDataset of the same rows (only its precomputed targets are read).
        feats: (N, K, V, D) tensor from ``load_features``, or a ``FeatureBank``. mask: (N, V) bool.
        hflip: with p=0.5 serve the mirrored panorama (mirrored features, views 90 <-> 270 swapped);
            needs K = 2.
    """

    def __init__(self, base: LocationDataset, feats, mask: torch.Tensor, hflip: bool = False):
        if hflip and feats.shape[1] < 2:
            raise ValueError("hflip needs mirrored features; fill and load the cache with mirror=True.")
        self.base, self.feats, self.mask, self.hflip = base, feats, mask, hflip

    def __len__(self) -> int:
        return len(self.feats)

    def __getitem__(self, i: int) -> dict:
        item = self.feats[i]
        if self.hflip and torch.rand(()) < 0.5:
            feats, mask = item[1, MIRROR_VIEWS], self.mask[i, MIRROR_VIEWS]
        else:
            feats, mask = item[0], self.mask[i]
        return {"feats": feats, **self.base.targets(i, mask)}
