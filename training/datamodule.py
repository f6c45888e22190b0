"""DataModules: GeoDataModule (LUMEN layout, all geo heads) and ImageFolderDataModule (classify).

The GeoDataModule owns the splits (seeded, by location), the cells and their weighted centroids, the
x/y normalisation statistics (all from TRAINING points only) and the frozen-backbone embedding cache.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from geodemo import geo
from geodemo.backbones import get_backbone_spec
from geodemo.cells import build_cells
from geodemo.data import DatasetError, ImageScan, read_locations
from geodemo.dataset import LocationDataset, build_transform, location_split
from geodemo.images import load_rgb
from geodemo.model import ModelConfig
from training import cache as emb
from training import fill
from training.config import TrainConfig
from training.sources import data_fingerprint, is_chunks

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def train_locations(frame: pd.DataFrame) -> dict:
    """The checkpoint's record of its training locations: uuids and (lat, lon) degrees to 6 decimals."""
    return {
        "uuid": frame["uuid"].astype(str).tolist(),
        "latitude": frame["latitude"].astype(float).round(6).tolist(),
        "longitude": frame["longitude"].astype(float).round(6).tolist(),
    }


def resolve_image_size(cfg: TrainConfig) -> tuple[int, tuple, tuple]:
    """(image size px, mean, std) for the configured backbone; ``cfg.image_size`` 0 = the backbone's own."""
    spec = get_backbone_spec(cfg.backbone)
    return cfg.image_size or spec.image_size, tuple(spec.mean), tuple(spec.std)


def loader_workers(requested: int | None) -> int:
    """DataLoader worker processes: ``requested``, or (None) one per core this process may use, at most 8."""
    return requested if requested is not None else min(8, len(os.sched_getaffinity(0)))


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed this worker's albumentations pipeline, numpy and random from its torch seed.

    PyTorch gives every worker its own torch seed (the loader's base seed + worker id), but albumentations
    keeps a generator inside the transform, which each worker would otherwise inherit unchanged from the
    parent, so every worker would draw the same crops and jitter.
    """
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2**32
    np.random.seed(seed)
    random.seed(seed)
    transform = getattr(getattr(info.dataset, "location_dataset", info.dataset), "transform", None)  # chunks
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


class EpochShuffle(torch.utils.data.Sampler):
    """Shuffles by (seed, epoch) and reseeds the RNGs when an epoch's data starts to flow.

    So epoch k draws the same order, augmentations and dropout masks whether the run got there without
    a break or was killed and resumed from last.ckpt (Lightning restores weights and optimiser, not RNGs).
    Lightning calls `set_epoch` each epoch; `epoch` is where a resumed run starts.
    """

    def __init__(self, dataset: Dataset, seed: int, epoch: int = 0):
        self.dataset, self.seed = dataset, seed
        # the DataLoader's generator: its draw at each epoch's start seeds that epoch's worker processes
        self.generator = torch.Generator()
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.generator.manual_seed(self.seed + 1000 * (epoch + 1) + 1)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        seed = self.seed + 1000 * (self.epoch + 1)
        L.seed_everything(seed, workers=True, verbose=False)
        # albumentations keeps its own generator, untouched by global seeds (unseeded = new every run)
        transform = getattr(self.dataset, "transform", None)
        if hasattr(transform, "set_random_seed"):
            transform.set_random_seed(seed)
        yield from torch.randperm(len(self.dataset)).tolist()


class GeoDataModule(L.LightningDataModule):
    """Splits, cells, statistics and loaders for the geo heads.

    Args:
        data_dir: LUMEN-layout dataset folder.
        cfg: the training recipe.
        prior_csv: optional CSV of latitude,longitude points added to the training points when building cells.
        frame: optional pre-read ``read_locations`` frame (e.g. a subset).
        train_uuids, val_uuids: explicit split (k-fold); default = ``location_split`` by ``cfg.seed``.
        cache_dir: embedding cache folder (default ``$GEODEMO_CACHE_DIR`` or ~/.cache/geodemo/embeddings).
        scan: the dataset's ``ImageScan`` if the caller made one (e.g. for its fingerprint); else made once
            when first needed.
    """

    def __init__(
        self,
        data_dir,
        cfg: TrainConfig,
        prior_csv=None,
        frame: pd.DataFrame | None = None,
        train_uuids=None,
        val_uuids=None,
        cache_dir=None,
        scan: ImageScan | None = None,
    ):
        super().__init__()
        self.data_dir, self.cfg = Path(data_dir), cfg
        self._scan = scan
        self.frame = read_locations(self.data_dir) if frame is None else frame.reset_index(drop=True)
        if train_uuids is None:
            split = location_split(self.frame["uuid"], val_fraction=cfg.val_fraction, seed=cfg.seed)
            train_uuids, val_uuids = split["train"], split["val"]
        self.frames = {"train": self._rows(train_uuids), "val": self._rows(val_uuids)}
        if len(self.frames["train"]) == 0:
            raise DatasetError(f"{self.data_dir} has no training locations after the split; add locations.")
        lat, lon = (self.frames["train"][c].to_numpy(np.float64) for c in ("latitude", "longitude"))
        self.cells = None
        if "geocell" in cfg.tasks:
            prior_lat, prior_lon = geo.load_points_csv(prior_csv) if prior_csv else (None, None)
            self.cells = build_cells(
                cfg.cells, lat, lon, spacing_km=cfg.grid_spacing_km, prior_lat=prior_lat, prior_lon=prior_lon
            )
        self.xy_stats = geo.XYStats.fit(lat, lon)
        self.image_size, self.mean, self.std = resolve_image_size(cfg)
        # frozen epochs (all, or those before unfreeze_epoch) train on cached features, later ones on images
        frozen_epochs = cfg.max_epochs if cfg.frozen_throughout else cfg.unfreeze_epoch
        # litdata chunks (training.streaming) hold no image files to embed: every epoch streams them
        self.chunks = is_chunks(self.data_dir)
        self.cache_epochs = frozen_epochs if cfg.cache and not self.chunks else 0
        self.use_cache = self.cache_epochs > 0
        self.switches_to_images = self.use_cache and self.cache_epochs < cfg.max_epochs  # reload loaders then
        self.image_datasets: dict[str, Dataset] = {}
        self.cache = emb.EmbeddingCache(cache_dir)
        self.embedder = None  # the GeoModel whose .embed fills the cache (set by fit.train before fitting)
        self.cache_stats: dict = {}
        self.progress = None  # optional callable(done, total) while embedding
        self._key_memo: dict = {}  # {"weights": hash, "keys": uuid -> {view: cache key}}
        self.datasets: dict[str, Dataset] = {}

    def _rows(self, uuids) -> pd.DataFrame:
        wanted = set(map(str, uuids or []))
        return self.frame[self.frame["uuid"].isin(wanted)].reset_index(drop=True)

    def scan(self) -> ImageScan:
        """Every image file of the dataset with its size and mtime: one walk per run."""
        if self._scan is None:
            self._scan = ImageScan(self.data_dir)
        return self._scan

    def model_config(self, **overrides) -> ModelConfig:
        """The ModelConfig of a model trained on this data: recipe choices + label-space artefacts.

        ``overrides``: ModelConfig fields to set instead, e.g. a ``data_fingerprint`` already computed.
        """
        c = self.cfg
        if "data_fingerprint" not in overrides:
            scan = None if self.chunks else self.scan()
            overrides["data_fingerprint"] = data_fingerprint(self.data_dir, scan)
        return ModelConfig(
            tasks=list(c.tasks),
            backbone=c.backbone,
            weights_source=c.weights,
            image_size=self.image_size,
            mean=self.mean,
            std=self.std,
            fusion=c.fusion,
            hidden_dim=c.hidden_dim,
            dropout=c.dropout,
            cells=self.cells.to_dict() if self.cells is not None else None,
            xy_stats=self.xy_stats.to_dict(),
            point_mode=c.point_mode,
            weighted_centroids=c.weighted_centroids,
            tta_flip=c.tta_flip,
            temperature=c.temperature,
            train_locations=train_locations(self.frames["train"]),
            training=c.to_dict(),
            **overrides,
        )

    def _hflip(self, split: str) -> bool:
        """Whether ``split``'s items mirror the panorama at random (training, not with the heading head)."""
        return self.cfg.hflip and split == "train" and "heading" not in self.cfg.tasks

    def location_dataset(self, split: str) -> LocationDataset:
        """The image dataset of ``split`` ("train" or "val"): transforms, panorama mirroring, targets."""
        return LocationDataset(
            self.data_dir,
            self.frames[split],
            self.image_size,
            self.mean,
            self.std,
            train=split == "train",
            hflip=self._hflip(split),
            cells=self.cells,
            xy_stats=self.xy_stats,
        )

    def cache_keys(self, frame: pd.DataFrame) -> list[dict]:
        """Cache keys of ``frame``'s rows; each file is stat-ed once per run, read only if new or changed."""
        wkey = emb.weights_hash(self.embedder.backbone)
        if self._key_memo.get("weights") != wkey:
            rows = pd.concat([self.frames["train"], self.frames["val"]], ignore_index=True)
            hashes = emb.FileHashes(self.cache.root)
            keys = emb.location_keys(
                self.data_dir, rows, self.cfg.backbone, wkey, self.image_size, self.mean, self.std, hashes,
                self.scan(),
            )
            self._key_memo = {"weights": wkey, "keys": dict(zip(rows["uuid"], keys))}
        return [self._key_memo["keys"][u] for u in frame["uuid"]]

    def prepare_data(self) -> None:
        """Fill the embedding cache (local rank 0 only; other ranks wait, then read it in ``setup``)."""
        if not self.use_cache:
            return
        frame = pd.concat([self.frames["train"], self.frames["val"]], ignore_index=True)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        # mirrored views only where training flips panoramas: the training rows of a recipe with hflip
        mirror = self._hflip("train")
        self.cache_stats = fill.fill_cache(
            self.embedder,
            self.data_dir,
            frame,
            self.cache_keys(frame),
            self.cache,
            self.image_size,
            self.mean,
            self.std,
            None,  # images per forward: measured
            device,
            progress=self.progress,
            mirror=[mirror] * len(self.frames["train"]) + [False] * len(self.frames["val"]),
        )

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val"):
            base = self.image_datasets[split] = self.location_dataset(split)
            if self.chunks:
                from training import streaming  # litdata: an optional dependency, only for chunks

                self.image_datasets[split] = streaming.chunk_dataset(
                    self.data_dir, base, shuffle=split == "train", seed=self.cfg.seed
                )
            if self.use_cache and len(self.frames[split]):  # val may be empty (val_fraction 0)
                bank = emb.FeatureBank(self.cache_keys(self.frames[split]), self.cache, mirror=base.hflip)
                base = emb.CachedLocationDataset(base, bank, bank.mask, hflip=base.hflip)
            self.datasets[split] = base

    def _loader(self, split: str) -> DataLoader:
        """One factory for every split; Lightning adds the DistributedSampler under DDP."""
        trainer = self.trainer
        epoch = trainer.current_epoch if trainer is not None else 0
        cached = self.use_cache and epoch < self.cache_epochs
        dataset = self.datasets[split] if cached else self.image_datasets[split]
        # cached features are memory-mapped: worker processes would only add start-up cost
        workers = 0 if cached else loader_workers(self.cfg.num_workers)
        pin_memory = trainer is not None and trainer.strategy.root_device.type == "cuda"
        if self.chunks:  # litdata shards by rank and worker and shuffles by (seed, epoch) itself
            from training import streaming

            return streaming.chunk_loader(dataset, self.cfg.batch_size, workers, pin_memory, seed_worker)
        sampler = None
        if split == "train" and (trainer is None or trainer.world_size == 1):
            # DistributedSampler already shuffles by (seed, epoch); alone, EpochShuffle does the same
            sampler = EpochShuffle(dataset, self.cfg.seed, epoch)
        return DataLoader(
            dataset,
            batch_size=self.cfg.batch_size,
            shuffle=split == "train" and sampler is None,
            sampler=sampler,
            num_workers=workers,
            # training workers restart each epoch, seeded by (seed, epoch) through the sampler's generator:
            # so a resumed run draws the same augmentations; persistent ones would carry on their streams
            persistent_workers=workers > 0 and split != "train",
            worker_init_fn=seed_worker,
            generator=sampler.generator if sampler is not None else None,
            pin_memory=pin_memory,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")


# ----------------------------------------------------------------------------------------- classify
class ImageFolderDataset(Dataset):
    """``root/<class>/<image>`` via geodemo.images.load_rgb; items {"image": (3,H,W), "label": ()}."""

    def __init__(self, files: list[Path], labels: list[int], image_size: int, transform):
        self.files, self.labels, self.image_size, self.transform = files, labels, image_size, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        rgb = load_rgb(self.files[i], min_side=self.image_size)
        return {"image": self.transform(image=rgb)["image"], "label": torch.tensor(self.labels[i])}


def scan_image_folder(root) -> tuple[list[str], list[Path], list[int]]:
    """(class names sorted, files, label ids) of an ImageFolder layout; DatasetError if it has no classes."""
    root = Path(root)
    classes = (
        sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if root.is_dir()
        else []
    )
    files, labels = [], []
    for k, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [k] * len(found)
    if len(classes) < 2 or not files:
        raise DatasetError(
            f"{root} is not an ImageFolder with at least two class folders of images; "
            "lay it out as <root>/<class>/<image>.jpg."
        )
    return classes, files, labels


class ImageFolderDataModule(L.LightningDataModule):
    """Stratified seeded split of an ImageFolder, class-balanced sampling for training."""

    def __init__(self, data_dir, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg
        self.class_names, files, labels = scan_image_folder(data_dir)
        self.image_size, self.mean, self.std = resolve_image_size(cfg)
        rng = np.random.default_rng(cfg.seed)
        labels_np = np.array(labels)
        val = np.zeros(len(files), bool)
        for k in range(len(self.class_names)):  # stratified: each class keeps its share in val
            idx = rng.permutation(np.flatnonzero(labels_np == k))
            val[idx[: int(round(len(idx) * cfg.val_fraction))]] = True
        self.split = {"train": np.flatnonzero(~val), "val": np.flatnonzero(val)}
        self.files, self.labels = files, labels

    def model_config(self, **overrides) -> ModelConfig:
        c = self.cfg
        return ModelConfig(
            tasks=["classify"],
            backbone=c.backbone,
            weights_source=c.weights,
            image_size=self.image_size,
            mean=self.mean,
            std=self.std,
            dropout=c.dropout,
            class_names=list(self.class_names),
            cbam=c.cbam,
            training=c.to_dict(),
            **overrides,
        )

    def prepare_data(self) -> None:
        pass

    def setup(self, stage: str | None = None) -> None:
        self.datasets = {}
        for split, idx in self.split.items():
            transform = build_transform(self.image_size, self.mean, self.std, train=split == "train")
            self.datasets[split] = ImageFolderDataset(
                [self.files[i] for i in idx], [self.labels[i] for i in idx], self.image_size, transform
            )

    def _loader(self, split: str) -> DataLoader:
        dataset = self.datasets[split]
        sampler = None
        if split == "train":  # class-balanced: each class drawn equally often
            counts = np.bincount(dataset.labels, minlength=len(self.class_names)).astype(np.float64)
            weights = 1.0 / counts[dataset.labels]
            sampler = WeightedRandomSampler(
                torch.as_tensor(weights), num_samples=len(dataset), replacement=True
            )
        return DataLoader(
            dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            num_workers=loader_workers(self.cfg.num_workers),
            persistent_workers=loader_workers(self.cfg.num_workers) > 0,
            pin_memory=self.trainer is not None and self.trainer.strategy.root_device.type == "cuda",
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")
