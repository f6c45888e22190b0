"""View embedding and location prediction through Lightning's predict loop: one CPU, one GPU, or many ranks.

``Trainer.predict`` shards the inputs over the ranks (for predicting, Lightning wraps the sampler in its
``UnrepeatedDistributedSamplerWrapper``: disjoint shares, no padding). A ``BasePredictionWriter`` on each rank
writes that rank's share as it goes, and rank 0 merges once after a barrier:

- embedding (``embed_datasets``): rank 0 plans the fill (``training.fill.plan_fill``: the missing views,
  repeated content once) and broadcasts the plan; every rank stores its rows with
  ``EmbeddingCache.put_many`` (a shard file per write, index lines appended under a lock); the merge is rank 0
  checking that every planned view is indexed;
- prediction (``predict_locations``): every rank appends its rows to ``part-<rank>.csv``; rank 0 reads the
  parts, drops repeated rows and restores the dataset's order. The read-out is ``Predictor.predict_batch``.

The rank processes must see the same dataset paths and cache/output folders (a shared file system across
nodes). The default flags (one CPU process) take the single-process paths: ``training.fill.fill_cache`` and
``Predictor.predict_dataset``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from geodemo.backbones import get_backbone_spec
from geodemo.checkpoint import CheckpointError, load_checkpoint, read_config
from geodemo.data import VIEW_HEADINGS, read_locations, view_paths
from geodemo.heads import POINT_TASKS
from geodemo.images import center_square, load_rgb
from geodemo.model import GeoModel, ModelConfig
from training import cache as emb
from training import fill

PREDICT_COLUMNS = ["uuid", "latitude", "longitude"]


def single_process(accelerator="cpu", devices="auto", strategy="auto", num_nodes=1) -> bool:
    """True for the default flags (one CPU process): the callers then skip Lightning altogether."""
    return accelerator == "cpu" and str(devices) in ("auto", "1") and strategy == "auto" and num_nodes == 1


def _trainer(callback, accelerator, devices, strategy, num_nodes) -> L.Trainer:
    return L.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        num_nodes=num_nodes,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _loader_workers(requested: int | None, trainer: L.Trainer) -> int:
    """Decode processes per rank: requested, or the cores this node's ranks leave free, shared (at most 8)."""
    if requested is not None:
        return requested
    ranks = max(1, trainer.num_devices)
    return max(0, min(8, (len(os.sched_getaffinity(0)) - ranks) // ranks))


class _RankProgress:
    """Rank 0 reports (done, total) for all ranks, counting its own share times the world size."""

    def __init__(self, progress, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def step(self, trainer: L.Trainer, n: int) -> None:
        self.done += n
        if self.progress and trainer.is_global_zero:
            self.progress(min(self.total, self.done * trainer.world_size), self.total)


# ----------------------------------------------------------------------------------------- embedding
def embedding_model(checkpoint=None, backbone: str | None = None, weights: str = "offline",
                    image_size: int = 0, seed: int = 0) -> tuple[GeoModel, str]:
    """The model whose backbone fills the cache, and the backbone's registry name (part of the cache key).

    Args:
        checkpoint: a checkpoint directory: its backbone weights, input size and normalisation.
        backbone, weights, image_size: otherwise a registry backbone as ``train`` builds it (``weights``:
            offline | none | hub | a weights file; ``image_size`` 0 = the backbone's own, px).
        seed: torch seed before building (random-init weights are then reproducible).
    """
    if checkpoint is not None:
        model, config = load_checkpoint(checkpoint)
        if not isinstance(model, GeoModel):
            raise ValueError(f"{checkpoint} is a classify checkpoint; the embedding cache serves LUMEN "
                             "location models, so pass a geo checkpoint or --backbone.")
        return model, config.backbone
    torch.manual_seed(seed)
    size = image_size or get_backbone_spec(backbone).image_size
    return GeoModel(ModelConfig.for_backbone(backbone, ["region"], image_size=size), weights), backbone


def _plan(model: GeoModel, name: str, roots: list, cache: emb.EmbeddingCache, mirror: bool) -> tuple:
    """(the fill plan over every folder, rows read): the keys training computes (``location_keys``)."""
    config, plan, rows = model.config, fill.FillPlan(), 0
    wkey, hashes = emb.weights_hash(model.backbone), emb.FileHashes(cache.root)
    for root in roots:
        frame = read_locations(root)
        keys = emb.location_keys(root, frame, name, wkey, config.image_size, config.mean, config.std, hashes)
        fill.plan_fill(cache, root, frame, keys, mirror, plan=plan)
        rows += len(frame)
    return plan, rows


class _PlannedViews(Dataset):
    """Position in the plan -> (position, (3, S, S) uint8 crop)."""

    def __init__(self, paths: list[Path], size: int):
        self.crops = fill.ViewCrops(paths, size)

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int):
        return i, self.crops[i]


class _ViewData(L.LightningDataModule):
    """Rank 0 plans the fill and broadcasts it; every rank loads its share of the planned views."""

    def __init__(self, make_plan, image_size: int, batch_size: int | None, workers: int | None):
        super().__init__()
        self.make_plan, self.image_size = make_plan, image_size
        self.batch_size, self.workers = batch_size, workers
        self.plan, self.rows = None, 0

    def setup(self, stage: str) -> None:
        found = self.make_plan() if self.trainer.is_global_zero else None
        self.plan, self.rows = self.trainer.strategy.broadcast(found, src=0)

    def predict_dataloader(self) -> DataLoader:
        task = self.trainer.lightning_module
        workers = _loader_workers(self.workers, self.trainer)
        task.sleeping = workers > 0  # ORT's idle threads leave the cores to the decode workers
        if not self.batch_size:  # per rank, as fill_cache: measured when there is enough to embed
            share = len(self.plan) // max(1, self.trainer.world_size)
            measure = share >= fill.MEASURE_MIN_VIEWS
            self.batch_size = fill.DEFAULT_BATCH
            if measure:
                self.batch_size = fill.measure_batch_size(task.embed, self.image_size)
        return DataLoader(
            _PlannedViews(self.plan.paths, self.image_size),
            batch_size=self.batch_size,
            num_workers=workers,
            prefetch_factor=4 if workers else None,
        )


class _EmbedTask(L.LightningModule):
    """predict_step: a batch of planned views -> {kind: (cache keys, (n, D) features)}."""

    def __init__(self, model: GeoModel, engine: str | None = None):
        super().__init__()
        self.model, self.engine = model, engine
        self._embed, self.sleeping = None, False

    def embed(self, images: torch.Tensor) -> np.ndarray:
        """(N, 3, S, S) normalised -> (N, D): ONNX Runtime on a CPU rank where it can, else the backbone."""
        if self._embed is None:
            self._embed, self.engine = fill.embedder(self.model, str(self.device), self.engine, self.sleeping)
        return self._embed(images)

    def predict_step(self, batch, batch_idx: int) -> dict:
        positions, crops = batch
        plan, config = self.trainer.datamodule.plan, self.model.config
        where = positions.tolist()
        found = fill.embed_crops(
            self.embed, crops, [plan.plain[i] for i in where], [plan.mirror[i] for i in where],
            config.mean, config.std,
        )
        return {kind: ([plan.keys[where[j]] for j in sel], feats) for kind, (sel, feats) in found.items()}


class _CacheWriter(BasePredictionWriter):
    """Each rank stores its rows in the shared cache; rank 0 then checks every planned view is indexed."""

    def __init__(self, cache: emb.EmbeddingCache, progress=None, flush_rows: int | None = None):
        super().__init__(write_interval="batch")
        self.cache, self.progress, self.flush_rows = cache, progress, flush_rows

    def setup(self, trainer, pl_module, stage: str) -> None:  # every rank, even one with nothing to do
        self.start = time.perf_counter()
        self.writer = fill.ShardWriter(self.cache, self.flush_rows)
        self.counter = _RankProgress(self.progress, len(trainer.datamodule.plan))
        if trainer.is_global_zero:
            self.cache.dir.mkdir(parents=True, exist_ok=True)
            self.cache.clean_temporary()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        for kind, (keys, feats) in prediction.items():
            self.writer.add(kind, keys, feats)
        self.counter.step(trainer, len(batch[0]))

    def finish(self, trainer, task: _EmbedTask) -> dict | None:
        """After the loop, on every rank: store the rest, wait for the others; rank 0 checks and sums up."""
        self.writer.close()
        trainer.strategy.barrier("embedded")
        if not trainer.is_global_zero:
            return None
        data, cache = trainer.datamodule, self.cache
        cache.refresh()
        plan = data.plan
        lost = sum(
            (plain and not cache.has(key, "plain")) or (mirror and not cache.has(key, "mirror"))
            for key, plain, mirror in zip(plan.keys, plan.plain, plan.mirror)
        )
        if lost:
            raise ValueError(f"{lost} of the {len(plan)} embedded views are missing from {cache.dir} after "
                             "the fill; every rank must write to one --cache-dir (a shared file system).")
        seconds = time.perf_counter() - self.start
        return {
            "locations": data.rows,
            "embedded": plan.locations,
            "views": len(plan),
            "duplicates": plan.duplicates,
            "seconds": seconds,
            "views_per_s": len(plan) / max(seconds, 1e-9),
            "engine": task.engine if len(plan) else None,
            "batch_size": data.batch_size or 0,
            "ranks": trainer.world_size,
        }


def embed_datasets(
    roots,
    model: GeoModel,
    backbone: str,
    cache_dir=None,
    mirror: bool = False,
    batch_size: int | None = None,
    workers: int | None = None,
    progress=None,
    accelerator: str = "cpu",
    devices="auto",
    strategy: str = "auto",
    num_nodes: int = 1,
) -> dict | None:
    """Fill the embedding cache for every view of LUMEN folder(s), with the keys training computes.

    Args:
        roots: dataset folders; content shared between them is embedded once.
        model, backbone: from ``embedding_model``.
        mirror: also store each view flipped left-right (what a recipe with panorama flips trains on).
        batch_size: images per forward per rank; None = measured (enough views) or 16.
        workers: decode processes per rank (default: the cores the ranks leave free).
        progress: callable(done, total) in views, on rank 0.
        accelerator, devices, strategy, num_nodes: as ``lightning.Trainer``; the defaults run
            ``fill_cache`` in this process.

    Returns:
        On rank 0 {"locations", "embedded", "views", "duplicates", "seconds", "views_per_s", "engine",
        "batch_size", "ranks", "cache"}; None on the other ranks.
    """
    cache = emb.EmbeddingCache(cache_dir)
    roots = [Path(r) for r in (roots if isinstance(roots, (list, tuple)) else [roots])]
    config = model.config
    if single_process(accelerator, devices, strategy, num_nodes):
        plan, rows = _plan(model, backbone, roots, cache, mirror)
        found = fill.fill_cache(
            model, None, None, None, cache, config.image_size, config.mean, config.std, batch_size,
            progress=progress, workers=workers, plan=plan,
        )
        summary = {"locations": rows, **{k: found[k] for k in ("embedded", "views", "duplicates", "seconds")}}
        summary.update(views_per_s=found["views_per_s"], engine=found["engine"],
                       batch_size=found["batch_size"], ranks=1)
        return {**summary, "cache": str(cache.dir)}
    writer = _CacheWriter(cache, progress)
    make_plan = lambda: _plan(model, backbone, roots, cache, mirror)  # noqa: E731 - run by rank 0 only
    data = _ViewData(make_plan, config.image_size, batch_size, workers)
    trainer = _trainer(writer, accelerator, devices, strategy, num_nodes)
    task = _EmbedTask(model)
    trainer.predict(task, datamodule=data, return_predictions=False)
    summary = writer.finish(trainer, task)
    return None if summary is None else {**summary, "cache": str(cache.dir)}


# ----------------------------------------------------------------------------------------- prediction
def _collate(items: list) -> list:
    return items


class _LocationCrops(Dataset):
    """Row i of a dataset -> (i, uuid, {heading: (S, S, 3) uint8 crop}), decoded as the Predictor decodes."""

    def __init__(self, root, uuids: list[str], size: int):
        self.root, self.uuids, self.size = Path(root), uuids, size

    def __len__(self) -> int:
        return len(self.uuids)

    def __getitem__(self, i: int):
        uuid = self.uuids[i]
        views = {
            VIEW_HEADINGS[v]: center_square(load_rgb(path, min_side=self.size), self.size)
            for v, path in view_paths(self.root, uuid).items()
        }
        return i, uuid, views


class _PredictTask(L.LightningModule):
    """predict_step: a batch of locations -> rows (index, uuid, latitude, longitude) via Predictor."""

    def __init__(self, checkpoint, point_mode: str | None = None):
        super().__init__()
        self.checkpoint, self.point_mode = checkpoint, point_mode
        self.predictor = None

    def setup(self, stage: str) -> None:
        from geodemo.predict import Predictor

        self.predictor = Predictor.load(self.checkpoint)  # on its own engine (ONNX Runtime on CPU)

    def predict_step(self, batch: list, batch_idx: int) -> pd.DataFrame:
        present = [item for item in batch if item[2]]
        found = self.predictor.predict_batch(
            [views for _, _, views in present], batch_size=max(1, len(present)), point_mode=self.point_mode
        )
        points = {i: (p.latitude, p.longitude) for (i, _, _), p in zip(present, found)}
        return pd.DataFrame(
            [(i, uuid, *points.get(i, (np.nan, np.nan))) for i, uuid, _ in batch],
            columns=["index", *PREDICT_COLUMNS],
        )


class _PartWriter(BasePredictionWriter):
    """Each rank appends its rows to ``part-<rank>.csv``; rank 0 merges the parts once, in input order."""

    def __init__(self, parts: Path, total: int, progress=None):
        super().__init__(write_interval="batch")
        self.parts, self.total, self.progress = Path(parts), total, progress

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.is_global_zero:  # parts left by a killed run are not this run's
            shutil.rmtree(self.parts, ignore_errors=True)
            self.parts.mkdir(parents=True)
        trainer.strategy.barrier("parts")
        self.file = self.parts / f"part-{trainer.global_rank}.csv"
        pd.DataFrame(columns=["index", *PREDICT_COLUMNS]).to_csv(self.file, index=False)
        self.counter = _RankProgress(self.progress, self.total)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        with open(self.file, "a") as f:
            prediction.to_csv(f, header=False, index=False)
        self.counter.step(trainer, len(prediction))

    def merge(self, trainer) -> pd.DataFrame | None:
        """After the loop, on every rank: wait for the others; rank 0 merges the parts, in input order."""
        trainer.strategy.barrier("predicted")
        if not trainer.is_global_zero:
            return None
        parts = [pd.read_csv(f, dtype={"uuid": str}) for f in sorted(self.parts.glob("part-*.csv"))]
        table = pd.concat(parts, ignore_index=True).drop_duplicates("index").sort_values("index")
        if len(table) != self.total:
            raise ValueError(f"the ranks wrote {len(table)} of {self.total} predictions to {self.parts}; "
                             "every rank must see the same output folder (a shared file system).")
        shutil.rmtree(self.parts, ignore_errors=True)
        return table[PREDICT_COLUMNS].reset_index(drop=True)


def predict_locations(
    checkpoint,
    data_dir,
    parts_dir,
    batch_size: int = 16,
    point_mode: str | None = None,
    workers: int | None = None,
    progress=None,
    accelerator: str = "cpu",
    devices="auto",
    strategy: str = "auto",
    num_nodes: int = 1,
) -> pd.DataFrame | None:
    """Predict every location of a LUMEN folder on Lightning's predict loop (any number of ranks).

    Args:
        checkpoint: a point checkpoint directory (geocell, coords or region head).
        parts_dir: a folder for the ranks' part files (created, then removed after the merge).
        batch_size: locations per forward per rank. workers: decode processes per rank (default: the cores
            the ranks leave free). progress: callable(done, total) in locations, on rank 0.

    Returns:
        On rank 0 a DataFrame uuid, latitude, longitude (degrees; NaN for a location without views) in the
        order of ``data.csv``, as ``training.evaluate.predict_locations``; None on the other ranks.
    """
    config = read_config(checkpoint)  # an unusable checkpoint fails here, before any rank starts
    if not set(config.tasks) & set(POINT_TASKS):
        raise CheckpointError(f"{checkpoint} is a {'+'.join(config.tasks)} checkpoint, which gives no point; "
                              "distributed predict needs a geocell, coords or region checkpoint.")
    uuids = read_locations(data_dir)["uuid"].astype(str).tolist()
    writer = _PartWriter(parts_dir, len(uuids), progress)
    trainer = _trainer(writer, accelerator, devices, strategy, num_nodes)
    loader = DataLoader(
        _LocationCrops(data_dir, uuids, config.image_size),
        batch_size=batch_size,
        collate_fn=_collate,
        num_workers=_loader_workers(workers, trainer),
    )
    trainer.predict(_PredictTask(checkpoint, point_mode), dataloaders=loader, return_predictions=False)
    return writer.merge(trainer)
