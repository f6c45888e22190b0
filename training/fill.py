"""Filling the embedding cache (training.cache): every view not yet cached embedded once, in this process.

``plan_fill`` finds what is missing (each distinct file content once), ``ViewCrops`` decodes the views in
worker processes, ``embedder`` runs the backbone (ONNX Runtime on CPU where it can), ``ShardWriter`` stores
the rows; ``fill_cache`` runs them all. training.distributed runs the same plan through Lightning's predict
loop on many ranks.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from geodemo.data import view_paths
from geodemo.images import center_square, load_rgb
from geodemo.onnx_engine import engine_setting, module_backbone
from training.cache import KINDS, EmbeddingCache, weights_hash

BATCH_CANDIDATES = (4, 8, 16, 32)  # images per forward tried when measuring the batch size
MEASURE_MIN_VIEWS = 1000  # fewer views to embed than this: not worth measuring, use DEFAULT_BATCH
DEFAULT_BATCH = 16
FLUSH_BYTES = 32 << 20  # rows are written as one shard every ~32 MB (what a kill -9 can lose)


def default_workers() -> int:
    """Decode worker processes: every core but one (the backbone uses the rest), at least 1, at most 8."""
    return max(1, min(8, len(os.sched_getaffinity(0)) - 1))


class ViewCrops(Dataset):
    """View files -> (3, S, S) uint8: the geometry of geodemo.dataset's eval transform (``center_square``),
    normalised later per batch. In uint8 throughout: the albumentations pipeline with a pass-through
    normalisation cost ~5x the CPU of the decode itself (20 vs 4 ms a view)."""

    def __init__(self, paths: list[Path], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        rgb = load_rgb(self.paths[i], min_side=self.size)
        return torch.from_numpy(center_square(rgb, self.size)).permute(2, 0, 1)


def _normalise(crops: torch.Tensor, mean, std) -> torch.Tensor:
    """(B, 3, S, S) uint8 -> float32 (x / 255 - mean) / std, on the crops' device."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=crops.device).view(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=crops.device).view(1, 3, 1, 1)
    return crops.float() * scale + shift


def embedder(model, device: str, engine: str | None, sleeping: bool = False):
    """(images (N, 3, S, S) -> (N, D) numpy, engine name): ONNX Runtime on CPU, else the torch backbone.

    sleeping: ORT's idle threads sleep instead of spinning (decode workers share the cores).
    """
    backbone = model.backbone
    if device == "cpu" and (engine or engine_setting()) != "torch":
        onnx = module_backbone(backbone, weights_hash(backbone), model.config.image_size)
        if onnx is not None and sleeping:
            onnx = onnx.sleeping()  # spinning threads took the decode worker's core (BENCHMARKS.md, fill)
        if onnx is not None:
            return (lambda x: onnx(x).numpy()), "onnx"

    def run(x: torch.Tensor) -> np.ndarray:
        return backbone(x.to(device)).float().cpu().numpy()

    return run, "torch"


def measure_batch_size(embed, size: int, candidates=BATCH_CANDIDATES, rounds: int = 2) -> int:
    """The candidate batch size (images per forward) with the most images/s, timed on random input.

    Each candidate's best of ``rounds`` interleaved timings: on a shared machine one timing alone often
    caught another job's burst and picked batch 4.
    """
    inputs = {n: torch.randn(n, 3, size, size) for n in candidates}
    for x in inputs.values():
        embed(x)  # warm-up: allocations for this shape
    seconds = {n: float("inf") for n in candidates}
    for _ in range(rounds):
        for n, x in inputs.items():
            t0 = time.perf_counter()
            embed(x)
            seconds[n] = min(seconds[n], time.perf_counter() - t0)
    return max(candidates, key=lambda n: n / max(seconds[n], 1e-9))


@dataclass
class FillPlan:
    """The views a cache fill has to embed: each missing file content once.

    Attributes:
        keys, paths: per view to embed, its cache key and one file holding that content.
        plain, mirror: per view, whether its plain / mirrored embedding is missing.
        locations: rows with anything to embed. duplicates: missing views skipped as repeated content.
    """

    keys: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    plain: list[bool] = field(default_factory=list)
    mirror: list[bool] = field(default_factory=list)
    locations: int = 0
    duplicates: int = 0

    def __len__(self) -> int:
        return len(self.keys)


def plan_fill(cache: EmbeddingCache, root, frame: pd.DataFrame, keys: list[dict], mirror=True,
              plan: FillPlan | None = None) -> FillPlan:
    """What is missing from ``cache`` for ``frame``'s rows (``keys`` from ``location_keys``).

    Args:
        mirror: also the view flipped left-right: a bool, or one bool per row of ``frame``.
        plan: a plan to extend (several dataset folders filled as one: content shared between them once).
    """
    plan = FillPlan() if plan is None else plan
    cache.refresh()
    mirrors = (
        [bool(mirror)] * len(keys) if isinstance(mirror, (bool, np.bool_)) else [bool(m) for m in mirror]
    )
    where = {key: j for j, key in enumerate(plan.keys)}
    for i, (uuid, k) in enumerate(zip(frame["uuid"], keys)):
        paths, touched = None, False
        for v, key in k.items():
            wanted = [kind for kind, need in zip(KINDS, (True, mirrors[i])) if need]
            missing = [kind for kind in wanted if not cache.has(key, kind)]
            if not missing:
                continue
            touched = True
            if key in where:  # the same content under another path (or view): embedded once
                plan.duplicates += 1
                j = where[key]
                plan.plain[j] |= "plain" in missing
                plan.mirror[j] |= "mirror" in missing
                continue
            paths = paths or view_paths(root, uuid)
            where[key] = len(plan.keys)
            plan.keys.append(key)
            plan.paths.append(paths[v])
            plan.plain.append("plain" in missing)
            plan.mirror.append("mirror" in missing)
        plan.locations += touched
    return plan


def embed_crops(embed, crops: torch.Tensor, plain, mirror, mean, std) -> dict[str, tuple[list, np.ndarray]]:
    """One batch of crops -> {kind: (positions in the batch, (n, D) features)} for the kinds wanted.

    Args:
        embed: images (N, 3, S, S) float -> (N, D) numpy (``embedder``).
        crops: (B, 3, S, S) uint8 (``ViewCrops``). plain, mirror: B bools, which rows need which kind.
    """
    out = {}
    for kind, wanted in (("plain", plain), ("mirror", mirror)):
        sel = [j for j, need in enumerate(wanted) if need]
        if sel:
            images = crops[sel].flip(-1) if kind == "mirror" else crops[sel]  # flip = left-right
            out[kind] = (sel, embed(_normalise(images, mean, std)))
    return out


class ShardWriter:
    """Collects embedded rows per kind and stores them with ``EmbeddingCache.put_many`` every ~32 MB."""

    def __init__(self, cache: EmbeddingCache, flush_rows: int | None = None):
        self.cache, self.flush_rows = cache, flush_rows
        self.pending = {kind: ([], []) for kind in KINDS}  # kind -> (keys, arrays)
        self.written = 0  # rows stored so far

    def add(self, kind: str, keys: list[str], feats: np.ndarray) -> None:
        ks, arrays = self.pending[kind]
        ks.extend(keys)
        arrays.append(feats)
        if len(ks) >= (self.flush_rows or max(256, FLUSH_BYTES // (4 * feats.shape[1]))):
            self._flush(kind)

    def _flush(self, kind: str) -> None:
        ks, arrays = self.pending[kind]
        if ks:
            self.cache.put_many(ks, kind, np.concatenate(arrays))
            self.written += len(ks)
        self.pending[kind] = ([], [])

    def close(self) -> None:
        """Store whatever is still pending."""
        for kind in KINDS:
            self._flush(kind)


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
    batch_size: int | None = None,
    device: str = "cpu",
    progress=None,
    mirror=True,
    workers: int | None = None,
    engine: str | None = None,
    flush_rows: int | None = None,
    plan: FillPlan | None = None,
) -> dict:
    """Embed every view not yet cached, each distinct file content once, in this process.

    (``training.distributed.embed_datasets`` runs the same plan through Lightning's predict loop.)

    Args:
        model: a GeoModel; only ``model.backbone`` runs (in eval mode), on ONNX Runtime on CPU where it can.
        keys: ``location_keys`` of ``frame``'s rows.
        batch_size: images per forward; None = measured on this machine (when there is enough to embed).
        progress: optional callable(done, total) in views to embed.
        mirror: also store the view flipped left-right (for panorama-flip augmentation): a bool, or one bool
            per row of ``frame``.
        workers: decode processes (default: all cores but one); 0 decodes in this process.
        engine: "onnx" | "torch" | None (= GEODEMO_ENGINE).
        flush_rows: rows per written shard (default ~32 MB).
        plan: a ready ``plan_fill`` (then ``root``, ``frame`` and ``keys`` are not read).

    Returns:
        {"embedded": locations with anything embedded, "views": files embedded, "duplicates": cached views
        skipped as repeated content, "seconds", "views_per_s", "locations_per_s", "engine", "batch_size"}.
    """
    start = time.perf_counter()
    plan = plan_fill(cache, root, frame, keys, mirror) if plan is None else plan
    stats = {
        "embedded": plan.locations,
        "views": len(plan),
        "duplicates": plan.duplicates,
        "engine": None,
        "batch_size": 0,
    }
    if len(plan):
        was_training = model.training
        model.eval().to(device)
        workers = default_workers() if workers is None else workers
        embed, stats["engine"] = embedder(model, device, engine, sleeping=workers > 0)
        if not batch_size:
            big = len(plan) >= MEASURE_MIN_VIEWS
            batch_size = measure_batch_size(embed, image_size) if big else DEFAULT_BATCH
        stats["batch_size"] = batch_size
        cache.dir.mkdir(parents=True, exist_ok=True)
        cache.clean_temporary()
        loader = DataLoader(
            ViewCrops(plan.paths, image_size),
            batch_size=batch_size,
            num_workers=workers,
            prefetch_factor=4 if workers else None,
        )
        writer, done = ShardWriter(cache, flush_rows), 0
        for crops in loader:
            part = slice(done, done + len(crops))
            for kind, (sel, feats) in embed_crops(
                embed, crops, plan.plain[part], plan.mirror[part], mean, std
            ).items():
                writer.add(kind, [plan.keys[done + j] for j in sel], feats)
            done += len(crops)
            if progress:
                progress(done, len(plan))
        writer.close()
        model.train(was_training)
    seconds = time.perf_counter() - start
    stats.update(
        seconds=seconds,
        views_per_s=len(plan) / max(seconds, 1e-9),
        locations_per_s=plan.locations / max(seconds, 1e-9),
    )
    return stats
