"""train(): datamodule + task + Lightning Trainer -> a geodemo checkpoint directory. Also k-fold CV."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from geodemo.checkpoint import load_checkpoint, save_checkpoint
from geodemo.data import ImageScan, read_locations
from geodemo.dataset import kfold_splits
from geodemo.heads import POINT_TASKS
from geodemo.progress import PROGRESS_PREFIX, Progress
from training.card import write_card
from training.config import TrainConfig
from training.datamodule import GeoDataModule, ImageFolderDataModule
from training.index import write_retrieval_index
from training.report import epoch_bar, report_lines, run_report
from training.sources import combine_datasets, combined_fingerprint, data_fingerprint, is_chunks
from training.tasks import build_task

LOG_EVERY_N_STEPS = 50  # steps between logger writes (each write reads the metrics off the device)


class ProgressFile(L.Callback):
    """Keeps the progress file (geodemo.progress.Progress) up to date (rank 0 only) and the per-epoch
    validation history.

    Stages: prepare, cache, train, validate, done; epochs are 1-based there; ``fraction`` is 0..1 of the
    whole run (the cache fill takes the first ``cache_share`` when it runs). ``path`` None keeps only the
    in-memory history (``val_history``: 0-based Lightning epochs, every val/* metric).
    It also prints short progress lines (``PROGRESS_PREFIX`` ...) that the app's curated log shows.
    """

    cache_share = 0.2  # share of the progress bar for filling the embedding cache
    say_every_s = 5.0  # seconds between progress lines within a stage

    def __init__(self, path=None, every_n_steps: int = 10, max_epochs: int = 1):
        self.path, self.every = (Path(path) if path else None), max(1, every_n_steps)
        self.start_fraction = 0.0  # where training starts on the bar (cache_share after a cache fill)
        self._written_at = self._said_at = 0.0
        self.state = Progress(stage="prepare", max_epochs=max_epochs)
        self.val_history: list[dict] = []  # every val/* metric per epoch (picks the best epoch's metrics)
        self._loss_sum, self._loss_n = 0.0, 0
        self.rank_zero = True

    def write(self, **updates) -> None:
        self.state = dataclasses.replace(self.state, **updates)
        self._written_at = time.monotonic()
        if self.path and self.rank_zero:
            self.state.write(self.path)

    def say(self, text: str, force: bool = True) -> None:
        """Print one progress line for people (rank 0); unforced lines at most every `say_every_s`."""
        now = time.monotonic()
        if self.rank_zero and (force or now - self._said_at >= self.say_every_s):
            self._said_at = now
            print(f"{PROGRESS_PREFIX}{text}", flush=True)

    def cache(self, done: int, total: int) -> None:
        """Progress of the embedding cache fill (locations); the fit's `dm.progress` hook."""
        self.start_fraction = self.cache_share
        fraction = self.cache_share * done / max(1, total)
        self.write(stage="cache", step=done, total_steps=total, fraction=fraction)
        self.say(f"caching embeddings: {done} / {total}", force=done in (0, total))

    def _position(self, trainer) -> dict:
        total = max(1, int(trainer.estimated_stepping_batches)) if trainer.max_epochs else 1
        step = trainer.global_step
        return {
            "epoch": trainer.current_epoch + 1,  # the progress file counts epochs from 1
            "step": step,
            "total_steps": total,
            "fraction": self.start_fraction + (1 - self.start_fraction) * min(1.0, step / total),
        }

    def _where(self, trainer) -> str:
        position = self._position(trainer)
        return (f"epoch {position['epoch']} / {trainer.max_epochs} · "
                f"step {position['step']} / {position['total_steps']}")

    def setup(self, trainer, pl_module, stage) -> None:
        self.rank_zero = trainer.is_global_zero

    def on_train_start(self, trainer, pl_module) -> None:
        self.write(stage="train", **self._position(trainer))
        self.say(f"training: {self._position(trainer)['total_steps']} steps in {trainer.max_epochs} epoch(s)")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._loss_sum, self._loss_n = 0.0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        # a device tensor: float() only when written, so a GPU is not synchronised every step
        self._loss_sum, self._loss_n = self._loss_sum + torch.as_tensor(loss).detach(), self._loss_n + 1
        # every `every` steps, and at least every 2 s: slow steps (a fine-tuned backbone) still move the bar
        if trainer.global_step % self.every == 0 or time.monotonic() - self._written_at >= 2.0:
            mean_loss = float(self._loss_sum) / self._loss_n
            self.write(stage="train", **self._position(trainer), metrics={"train/loss": mean_loss})
            self.say(f"{self._where(trainer)} · train loss {mean_loss:.3f}", force=False)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.limit_val_batches != 0:  # with validation the epoch's entry comes from on_validation_end
            return
        loss = float(self._loss_sum) / self._loss_n if self._loss_n else None  # (issue 21: the recipe has
        entry = {"epoch": trainer.current_epoch + 1, "train/loss": loss, "val/mean_km": None}  # no split)
        self.write(stage="train", **self._position(trainer), history=self.state.history + [entry])
        shown = f" · train loss {loss:.3f}" if loss is not None else ""
        self.say(f"epoch {trainer.current_epoch + 1} / {trainer.max_epochs} done{shown}")

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.write(stage="validate")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.val_history.append({"epoch": trainer.current_epoch, **val})
        entry = {
            "epoch": trainer.current_epoch + 1,
            "train/loss": float(self._loss_sum) / self._loss_n if self._loss_n else None,
            "val/mean_km": val.get("val/mean_km"),
        }
        self.write(
            stage="train", **self._position(trainer), metrics=val, history=self.state.history + [entry]
        )
        shown = " · ".join(
            f"{name} {val[f'val/{key}']:.1f} km"
            for key, name in (("mean_km", "val mean"), ("median_km", "median"))
            if f"val/{key}" in val
        )
        done = f"epoch {trainer.current_epoch + 1} / {trainer.max_epochs} done"
        self.say(done + (f" · {shown}" if shown else ""))

    def state_dict(self) -> dict:
        """Saved in last.ckpt: a resumed run still knows the epochs before the break (best-epoch metrics)."""
        return {"val_history": self.val_history, "history": self.state.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.val_history = list(state_dict.get("val_history", []))
        self.state.history = list(state_dict.get("history", []))

    def on_exception(self, trainer, pl_module, exception) -> None:
        cancelled = isinstance(exception, (SIGTERMException, KeyboardInterrupt))
        self.write(done=True, error="cancelled" if cancelled else f"{type(exception).__name__}: {exception}")


def init_from_checkpoint(model: torch.nn.Module, checkpoint) -> list[str]:
    """Copy a geodemo checkpoint's weights into `model` where names and shapes match (fine-tuning).

    Tensors whose shape changed (e.g. new cells, other heads) keep their fresh initialisation.

    Returns:
        Notes for the log: what was loaded and what was re-initialised.

    Raises:
        ValueError: the checkpoint cannot be read, or was trained with another backbone.
    """
    source, source_config = load_checkpoint(checkpoint)
    target_config = getattr(model, "config", None)
    backbone = getattr(target_config, "backbone", source_config.backbone)
    if source_config.backbone != backbone:
        raise ValueError(
            f"--init-from {Path(checkpoint).name} was trained with backbone {source_config.backbone}, not "
            f"{backbone}; train with --backbone {source_config.backbone} or start without --init-from."
        )
    ours, theirs = model.state_dict(), source.state_dict()
    loaded = {k: v for k, v in theirs.items() if k in ours and ours[k].shape == v.shape}
    changed = [
        f"{k} {tuple(theirs[k].shape)} -> {tuple(ours[k].shape)}"
        for k in ours if k in theirs and k not in loaded
    ]
    fresh = [k for k in ours if k not in theirs]
    model.load_state_dict(loaded, strict=False)
    notes = [f"init from {Path(checkpoint).name}: loaded {len(loaded)} of {len(ours)} weight tensors"]
    if changed:
        notes.append(
            f"re-initialised {len(changed)} tensor(s) whose shape no longer matches (e.g. new cells): "
            + ", ".join(changed[:6]) + (" ..." if len(changed) > 6 else "")
        )
    if fresh:
        notes.append(f"{len(fresh)} new tensor(s) start fresh (heads the checkpoint did not have): "
                     + ", ".join(fresh[:6]) + (" ..." if len(fresh) > 6 else ""))
    return notes


def _lightning_state(path: Path) -> dict:
    # Our own file, written by this function in an earlier run; never a user-supplied path.
    return torch.load(path, map_location="cpu", weights_only=False)


def _best_metrics(history: list[dict], monitor: str, mode: str) -> dict:
    rows = [r for r in history if monitor in r and np.isfinite(r[monitor])]
    if not rows:
        return history[-1] if history else {}
    pick = min if mode == "min" else max
    best = pick(rows, key=lambda r: r[monitor])
    return {k.removeprefix("val/"): v for k, v in best.items()}


def train(
    data_dir,
    out_dir,
    cfg: TrainConfig,
    *,
    prior_csv=None,
    progress_file=None,
    accelerator: str = "cpu",
    devices="auto",
    strategy: str = "auto",
    num_nodes: int = 1,
    limit_train_batches=None,
    limit_val_batches=None,
    train_uuids=None,
    val_uuids=None,
    cache_dir=None,
    enable_progress_bar: bool = True,
    resume: bool = True,
) -> Path:
    """Train one model and write its geodemo checkpoint directory.

    Args:
        data_dir: LUMEN-layout dataset, or a list of them trained as one (``training.sources``); an
            ImageFolder for ``cfg.tasks == ["classify"]``. ``cfg.init_from`` names a checkpoint to start from.
        out_dir: checkpoint directory to write; also holds ``logs/`` (CSV + TensorBoard) and ``lightning/``
            (Lightning .ckpt files for resuming: a rerun with the same recipe resumes from ``last.ckpt``).
        cfg: the training recipe.
        prior_csv: latitude,longitude CSV added to the training points when building cells.
        progress_file: JSON progress file (see ProgressFile) for the app's job view.
        accelerator, devices, strategy, num_nodes: passed straight to ``lightning.Trainer``.
        limit_train_batches, limit_val_batches: int batches or float fraction per epoch (tiny smoke runs).
        train_uuids, val_uuids: explicit split (k-fold); default: seeded ``location_split``.
        cache_dir: embedding cache folder (default $GEODEMO_CACHE_DIR or ~/.cache/geodemo/embeddings).

    Returns:
        ``out_dir`` (written by global rank 0; other DDP ranks return the same path).
    """
    cfg.validate()
    out_dir = Path(out_dir)
    progress = ProgressFile(progress_file, max_epochs=cfg.max_epochs)
    progress.rank_zero = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) == 0
    progress.write(stage="prepare")
    progress.say("preparing the data and the model")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    classify = cfg.tasks == ["classify"]
    dm, model_config = _datamodule(data_dir, out_dir, cfg, progress, prior_csv=prior_csv,
                                   train_uuids=train_uuids, val_uuids=val_uuids, cache_dir=cache_dir)
    task = build_task(model_config, cfg, backbone_weights=cfg.weights)
    if cfg.init_from:
        for note in init_from_checkpoint(task.model, cfg.init_from):
            progress.say(note)
    size_mb = _checked_size_mb(task.model, cfg)
    if not classify:
        dm.embedder = task.model

    ckpt_dir = out_dir / "lightning"
    has_val = len(dm.split["val"] if classify else dm.frames["val"]) > 0
    if not has_val:  # val_fraction 0: every location trains, nothing to validate on
        limit_val_batches = 0
    select_best = cfg.select_best and has_val
    best_cb, callbacks = _checkpointing(task, cfg, ckpt_dir, select_best)
    callbacks += [progress, *([epoch_bar()] if enable_progress_bar else [])]  # epochs counted from 1
    on_gpu = accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    steps_per_epoch = -(-len(dm.split["train"] if classify else dm.frames["train"]) // cfg.batch_size)
    if isinstance(limit_train_batches, int):
        steps_per_epoch = min(steps_per_epoch, limit_train_batches)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        num_nodes=num_nodes,
        precision=cfg.precision if on_gpu else "32-true",
        max_epochs=cfg.max_epochs,
        limit_train_batches=limit_train_batches,
        limit_val_batches=limit_val_batches,
        logger=[CSVLogger(out_dir / "logs", name="csv"), TensorBoardLogger(out_dir / "logs", name="tb")],
        callbacks=callbacks,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(LOG_EVERY_N_STEPS, steps_per_epoch)),
        # frozen epochs read cached features; at --unfreeze-epoch the loaders are rebuilt on images
        reload_dataloaders_every_n_epochs=int(getattr(dm, "switches_to_images", False)),
        deterministic=False,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
    )

    ckpt_path = _resume_path(ckpt_dir / "last.ckpt", model_config) if resume else None
    previous = signal.getsignal(signal.SIGTERM)
    # A cancelled job should end the epoch loop cleanly; Lightning chains this with its own handler.
    signal.signal(signal.SIGTERM, lambda signum, frame: setattr(trainer, "should_stop", True))
    start = time.perf_counter()
    try:
        trainer.fit(task, datamodule=dm, ckpt_path=ckpt_path)
    finally:
        signal.signal(signal.SIGTERM, previous)
    seconds = time.perf_counter() - start

    if trainer.is_global_zero:
        found = _keep_weights(task, best_cb, progress.val_history, select_best)
        found.update(
            train_seconds=round(seconds, 2),
            train_locations=len(dm.datasets["train"]),
            val_locations=len(dm.datasets["val"]),
            model_mb=round(size_mb, 3),
        )
        if not classify:
            found["cache"] = dict(dm.cache_stats, used=dm.use_cache)
            found["report"] = run_report(trainer, task, dm, callbacks, select_best, found)  # training.report
            for line in report_lines(found["report"]):
                progress.say(line)
        model_config.metrics = found
        _write_outputs(task, dm, model_config, out_dir)
        progress.write(stage="done", fraction=1.0, done=True, metrics=found)
        progress.say(f"done: checkpoint written to {out_dir}")
    return out_dir


def _checked_size_mb(model, cfg: TrainConfig) -> float:
    """The model's fp32 weight size in MB; ValueError above ``cfg.max_size_mb`` (0 = no limit)."""
    size_mb = model.size_mb()
    if cfg.max_size_mb and size_mb > cfg.max_size_mb:
        raise ValueError(
            f"the model holds {size_mb:.1f} MB of weights, over the {cfg.max_size_mb:g} MB limit; "
            "pick a smaller backbone or raise --max-size-mb."
        )
    return size_mb


def _keep_weights(task, best_cb, val_history: list[dict], select_best: bool) -> dict:
    """Load the best epoch's weights when the run selects one; return the kept epoch's val metrics."""
    if select_best and best_cb.best_model_path:
        task.load_state_dict(_lightning_state(Path(best_cb.best_model_path))["state_dict"])
    if select_best:
        return _best_metrics(val_history, task.monitor, task.mode)
    last_val = val_history[-1] if val_history else {}
    return {k.removeprefix("val/"): v for k, v in last_val.items()}


def _datamodule(data_dir, out_dir, cfg: TrainConfig, progress: ProgressFile, **kwargs):
    """The DataModule for one or several folders, and the ModelConfig it derives (cells, statistics, the
    training data's fingerprint). ``kwargs``: GeoDataModule's prior_csv, train/val uuids and cache_dir."""
    data_dirs = [data_dir] if isinstance(data_dir, (str, os.PathLike)) else list(data_dir)
    if cfg.tasks == ["classify"]:
        if len(data_dirs) > 1:
            raise ValueError("The classify task trains on one ImageFolder; give one --data folder.")
        dm = ImageFolderDataModule(data_dirs[0], cfg)
        return dm, dm.model_config()
    scans: dict = {}  # folder -> its ImageScan: one walk serves the fingerprint and the cache keys

    def fingerprint(root) -> str:
        scans[root] = None if is_chunks(root) else ImageScan(root)
        return data_fingerprint(root, scans[root])

    data_dir, sources = combine_datasets(data_dirs, out_dir, fingerprint)
    dm = GeoDataModule(data_dir, cfg, scan=scans.get(data_dir), **kwargs)
    dm.progress = progress.cache
    return dm, dm.model_config(data_fingerprint=combined_fingerprint(sources), data_sources=sources)


def _checkpointing(task, cfg: TrainConfig, ckpt_dir: Path, select_best: bool):
    """(the ModelCheckpoint callback, the callback list): best epoch + early stopping, or the last weights."""
    if select_best:
        best_cb = ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best",
            monitor=task.monitor,
            mode=task.mode,
            save_top_k=1,
            save_last=True,
        )
        return best_cb, [best_cb, EarlyStopping(monitor=task.monitor, mode=task.mode, patience=cfg.patience)]
    # fixed max_epochs, last weights (honest when val is a CV fold); last.ckpt still allows resuming
    best_cb = ModelCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=True)
    return best_cb, [best_cb]


def _resume_path(last: Path, model_config) -> str | None:
    """``last.ckpt`` when it holds a run of this very recipe and data (resumed after a crash or a kill)."""
    if not last.is_file():
        return None
    if _lightning_state(last).get("hyper_parameters", {}).get("model_config") == model_config.to_dict():
        print(f"resuming from {last}", flush=True)
        return str(last)
    print(f"not resuming from {last}: it was trained with another recipe or data", flush=True)
    return None


def _write_outputs(task, dm, model_config, out_dir: Path) -> None:
    """The checkpoint (weights + config), the similar-places index of a point model and the model card."""
    save_checkpoint(task.model, model_config, out_dir)
    # a point model: store the training locations' embeddings (not from litdata chunks: no image files)
    if set(model_config.tasks) & set(POINT_TASKS) and not getattr(dm, "chunks", False):
        write_retrieval_index(task.model, dm, out_dir, model_config.data_fingerprint)
    write_card(out_dir)  # README.md, the Hub model card (training.card)


def cross_validate(data_dir, out_root, cfg: TrainConfig, k: int = 5, prior_csv=None, **train_kwargs):
    """K-fold CV by location: train on k-1 folds, evaluate the held-out fold, pool every location.

    The held-out fold also drives early stopping / best-epoch choice (as in ``train``): mildly optimistic.

    Returns:
        (metrics dict over all pooled locations, per-location DataFrame with a ``fold`` column).
    """
    from training.evaluate import evaluate
    from training.metrics import evaluation_results

    frame = read_locations(data_dir)
    tables = []
    for i, (train_ids, val_ids) in enumerate(kfold_splits(frame["uuid"], k=k, seed=cfg.seed)):
        ckpt = train(
            data_dir,
            Path(out_root) / f"fold{i}",
            cfg,
            prior_csv=prior_csv,
            train_uuids=train_ids,
            val_uuids=val_ids,
            **train_kwargs,
        )
        _, table = evaluate(ckpt, data_dir, uuids=val_ids)
        tables.append(table.assign(fold=i))
    table = pd.concat(tables, ignore_index=True)
    return evaluation_results(table), table
