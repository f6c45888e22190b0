"""train(): datamodule + task + Lightning Trainer -> a geodemo checkpoint directory. Also k-fold CV."""

from __future__ import annotations

import json
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

from geodemo.checkpoint import save_checkpoint
from geodemo.data import kfold_splits, read_locations
from training.config import TrainConfig
from training.datamodule import GeoDataModule, ImageFolderDataModule
from training.tasks import build_task


def write_json_atomic(path, data: dict) -> None:
    """Write JSON via a temp file + os.replace, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    os.replace(tmp, path)


class ProgressFile(L.Callback):
    """Keeps the spec's progress JSON up to date (rank 0 only) and the per-epoch validation history.

    JSON: {stage, epoch, max_epochs, step, total_steps, fraction 0..1, metrics, history: [{epoch,
    "train/loss", "val/mean_km"}], done, error}. ``path`` None keeps only the in-memory history.
    """

    def __init__(self, path=None, every_n_steps: int = 10, max_epochs: int = 1):
        self.path, self.every = (Path(path) if path else None), max(1, every_n_steps)
        self.state = {
            "stage": "prepare",
            "epoch": 0,
            "max_epochs": max_epochs,
            "step": 0,
            "total_steps": 0,
            "fraction": 0.0,
            "metrics": {},
            "history": [],
            "done": False,
            "error": None,
        }
        self.val_history: list[dict] = []  # every val/* metric per epoch (picks the best epoch's metrics)
        self._loss_sum, self._loss_n = 0.0, 0
        self.rank_zero = True

    def write(self, **updates) -> None:
        self.state.update(updates)
        if self.path and self.rank_zero:
            write_json_atomic(self.path, self.state)

    def _position(self, trainer) -> dict:
        total = max(1, int(trainer.estimated_stepping_batches)) if trainer.max_epochs else 1
        step = trainer.global_step
        return {
            "epoch": trainer.current_epoch,
            "step": step,
            "total_steps": total,
            "fraction": min(1.0, step / total),
        }

    def setup(self, trainer, pl_module, stage) -> None:
        self.rank_zero = trainer.is_global_zero

    def on_train_start(self, trainer, pl_module) -> None:
        self.write(stage="train", **self._position(trainer))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._loss_sum, self._loss_n = 0.0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._loss_sum, self._loss_n = self._loss_sum + float(loss), self._loss_n + 1
        if trainer.global_step % self.every == 0:
            self.write(**self._position(trainer), metrics={"train/loss": self._loss_sum / self._loss_n})

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.val_history.append({"epoch": trainer.current_epoch, **val})
        entry = {
            "epoch": trainer.current_epoch,
            "train/loss": self._loss_sum / self._loss_n if self._loss_n else None,
            "val/mean_km": val.get("val/mean_km"),
        }
        self.write(**self._position(trainer), metrics=val, history=self.state["history"] + [entry])

    def state_dict(self) -> dict:
        """Saved in last.ckpt: a resumed run still knows the epochs before the break (best-epoch metrics)."""
        return {"val_history": self.val_history, "history": self.state["history"]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.val_history = list(state_dict.get("val_history", []))
        self.state["history"] = list(state_dict.get("history", []))

    def on_exception(self, trainer, pl_module, exception) -> None:
        cancelled = isinstance(exception, (SIGTERMException, KeyboardInterrupt))
        self.write(done=True, error="cancelled" if cancelled else f"{type(exception).__name__}: {exception}")


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
        data_dir: LUMEN-layout dataset (or an ImageFolder for ``cfg.tasks == ["classify"]``).
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
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    classify = cfg.tasks == ["classify"]
    if classify:
        dm = ImageFolderDataModule(data_dir, cfg)
    else:
        dm = GeoDataModule(
            data_dir,
            cfg,
            prior_csv=prior_csv,
            train_uuids=train_uuids,
            val_uuids=val_uuids,
            cache_dir=cache_dir,
        )
        dm.progress = lambda done, total: progress.write(stage="cache", fraction=done / max(1, total))
    model_config = dm.model_config()
    task = build_task(model_config, cfg, backbone_weights=cfg.weights)
    size_mb = task.model.size_mb()
    if cfg.max_size_mb and size_mb > cfg.max_size_mb:
        raise ValueError(
            f"the model holds {size_mb:.1f} MB of weights, over the {cfg.max_size_mb:g} MB limit; "
            "pick a smaller backbone or raise --max-size-mb."
        )
    if not classify:
        dm.embedder = task.model

    ckpt_dir = out_dir / "lightning"
    has_val = len(dm.split["val"] if classify else dm.frames["val"]) > 0
    if not has_val:  # val_fraction 0: every location trains, nothing to validate on
        limit_val_batches = 0
    select_best = cfg.select_best and has_val
    if select_best:
        best_cb = ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best",
            monitor=task.monitor,
            mode=task.mode,
            save_top_k=1,
            save_last=True,
        )
        callbacks = [best_cb, EarlyStopping(monitor=task.monitor, mode=task.mode, patience=cfg.patience)]
    else:  # fixed max_epochs, last weights (honest when val is a CV fold); last.ckpt still allows resuming
        best_cb = ModelCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=True)
        callbacks = [best_cb]
    callbacks.append(progress)
    on_gpu = accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
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
        log_every_n_steps=1,
        deterministic=False,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
    )

    last = ckpt_dir / "last.ckpt"
    ckpt_path = None
    if resume and last.is_file():
        if _lightning_state(last).get("hyper_parameters", {}).get("model_config") == model_config.to_dict():
            ckpt_path = str(last)
            print(f"resuming from {last}", flush=True)
        else:
            print(f"not resuming from {last}: it was trained with another recipe or data", flush=True)

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
        if select_best and best_cb.best_model_path:
            task.load_state_dict(_lightning_state(Path(best_cb.best_model_path))["state_dict"])
        if select_best:
            found = _best_metrics(progress.val_history, task.monitor, task.mode)
        else:
            last_val = progress.val_history[-1] if progress.val_history else {}
            found = {k.removeprefix("val/"): v for k, v in last_val.items()}
        found.update(
            train_seconds=round(seconds, 2),
            train_locations=len(dm.datasets["train"]),
            val_locations=len(dm.datasets["val"]),
            model_mb=round(size_mb, 3),
        )
        if not classify:
            found["cache"] = dict(dm.cache_stats, used=dm.use_cache)
        model_config.metrics = found
        save_checkpoint(task.model, model_config, out_dir)
        progress.write(stage="done", fraction=1.0, done=True, metrics=found)
    return out_dir


def cross_validate(data_dir, out_root, cfg: TrainConfig, k: int = 5, prior_csv=None, **train_kwargs):
    """K-fold CV by location: train on k-1 folds, evaluate the held-out fold, pool every location.

    The held-out fold also drives early stopping / best-epoch choice (as in ``train``): mildly optimistic.

    Returns:
        (metrics dict over all pooled locations, per-location DataFrame with a ``fold`` column).
    """
    from training.evaluate import evaluate, summarise_table

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
    return summarise_table(table), table
