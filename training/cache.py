"""Frozen-backbone embedding cache: embed each view file once, keep it on disk keyed by content.

A key is the sha256 of (backbone name, a hash of the backbone's actual weights, image size, mean/std,
PREPROCESSING_VERSION, sha1 of the view file's bytes), so any change to the weights, the preprocessing or
the image content misses the cache. Hashing the live weights (not the weights *source*) also makes
random-init backbones safe: the same seed gives the same weights and hits; another seed misses.

Each entry is one ``<key>.npy`` of shape (2, D) float32: row 0 the view as is, row 1 the view mirrored
left-right, so horizontal-flip augmentation still works on cached features.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from geodemo.data import VIEW_HEADINGS, LocationDataset, view_paths

PREPROCESSING_VERSION = 1  # bump when geodemo.data's eval transform changes meaning
MIRROR_VIEWS = [0, 3, 2, 1]  # mirrored panorama: east <-> west (90 <-> 270)


def default_cache_dir() -> Path:
    """``$GEODEMO_CACHE_DIR`` or ``~/.cache/geodemo/embeddings``."""
    env = os.environ.get("GEODEMO_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "geodemo" / "embeddings"


def file_sha1(path: Path) -> str:
    """sha1 hex digest of a file's bytes."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def weights_hash(module: torch.nn.Module) -> str:
    """sha256 over a module's parameter/buffer names and bytes (a few ms for a 5M-parameter backbone)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def view_key(backbone: str, weights: str, image_size: int, mean, std, content_sha1: str) -> str:
    """Cache key of one view file under one preprocessing + backbone."""
    parts = [
        backbone,
        weights,
        str(image_size),
        repr(tuple(mean)),
        repr(tuple(std)),
        f"prep{PREPROCESSING_VERSION}",
        content_sha1,
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


class EmbeddingCache:
    """A directory of ``<key[:2]>/<key>.npy`` arrays (2, D) float32, written atomically."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def get(self, key: str) -> np.ndarray:
        return np.load(self.path(key), allow_pickle=False)

    def put(self, key: str, value: np.ndarray) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(value, dtype=np.float32))
        os.replace(tmp, path)


def location_keys(
    root, frame: pd.DataFrame, backbone: str, wkey: str, image_size: int, mean, std
) -> list[dict]:
    """Per location, view index -> cache key of its file (only views whose file exists)."""
    keys = []
    for uuid in frame["uuid"]:
        paths = view_paths(root, uuid)
        keys.append(
            {v: view_key(backbone, wkey, image_size, mean, std, file_sha1(p)) for v, p in paths.items()}
        )
    return keys


@torch.inference_mode()
def fill_cache(
    model,
    root,
    frame: pd.DataFrame,
    keys: list[dict],
    cache: EmbeddingCache,
    image_size: int,
    mean,
    std,
    batch_size: int = 16,
    device: str = "cpu",
    progress=None,
) -> dict:
    """Embed every location with an uncached view and store each view's (plain, mirrored) embedding.

    Args:
        model: a GeoModel; only ``model.embed`` ((B, V, 3, H, W) -> (B, V, D)) is used, in eval mode.
        progress: optional callable(done, total) in locations.

    Returns:
        {"embedded": locations embedded, "seconds": wall time, "locations_per_s": throughput}.
    """
    todo = [i for i, k in enumerate(keys) if not all(cache.has(key) for key in k.values())]
    start = time.perf_counter()
    if todo:
        was_training = model.training
        model.eval().to(device)
        dataset = LocationDataset(
            root, frame.iloc[todo].reset_index(drop=True), image_size, mean, std, train=False
        )
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        done = 0
        for batch in tqdm(loader, desc="embedding views", unit="batch", leave=False, disable=None):
            views = batch["views"].to(device)
            plain = model.embed(views).float().cpu().numpy()  # (B, V, D)
            mirrored = model.embed(views.flip(-1)).float().cpu().numpy()
            for b in range(views.shape[0]):
                for v, key in keys[todo[done + b]].items():
                    cache.put(key, np.stack([plain[b, v], mirrored[b, v]]))
            done += views.shape[0]
            if progress:
                progress(done, len(todo))
        model.train(was_training)
    seconds = time.perf_counter() - start
    return {"embedded": len(todo), "seconds": seconds, "locations_per_s": len(todo) / max(seconds, 1e-9)}


def load_features(keys: list[dict], cache: EmbeddingCache) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack cached embeddings into memory.

    Returns:
        feats (N, 2, V, D) float32 (axis 1: plain, mirrored; zeros for missing views), mask (N, V) bool.
    """
    first = next(key for k in keys for key in k.values())
    dim = cache.get(first).shape[-1]
    feats = np.zeros((len(keys), 2, len(VIEW_HEADINGS), dim), np.float32)
    mask = np.zeros((len(keys), len(VIEW_HEADINGS)), bool)
    for i, k in enumerate(keys):
        for v, key in k.items():
            feats[i, :, v] = cache.get(key)
            mask[i, v] = True
    return torch.from_numpy(feats), torch.from_numpy(mask)


class CachedLocationDataset(Dataset):
    """A LocationDataset that serves ``feats`` (V, D) from the cache instead of decoding ``views``.

    Args:
        base: the LocationDataset of the same rows (only its precomputed targets are read).
        feats: (N, 2, V, D) from ``load_features``. mask: (N, V) bool.
        hflip: with p=0.5 serve the mirrored panorama (mirrored features, views 90 <-> 270 swapped).
    """

    def __init__(self, base: LocationDataset, feats: torch.Tensor, mask: torch.Tensor, hflip: bool = False):
        self.base, self.feats, self.mask, self.hflip = base, feats, mask, hflip

    def __len__(self) -> int:
        return len(self.feats)

    def __getitem__(self, i: int) -> dict:
        if self.hflip and torch.rand(()) < 0.5:
            feats, mask = self.feats[i, 1, MIRROR_VIEWS], self.mask[i, MIRROR_VIEWS]
        else:
            feats, mask = self.feats[i, 0], self.mask[i]
        return {"feats": feats, **self.base.targets(i, mask)}
