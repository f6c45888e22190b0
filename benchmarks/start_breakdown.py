"""Where a warm training start spends its time: CPU and wall seconds of each part, up to the first step.

Runs what ``benchmarks/scale.py --stage start`` runs (``training.fit.train``, ``--task multi``, lite0 offline
weights, embedding cache) with timers around its parts, several times in one process after one untimed run
(which also brings the keyset up to date), and reports the median of each part. Parts nest (``prepare_data``
contains the cache keys), so they do not add up; ``first step`` is the whole. Repeats in one process share its
caches (the geography files read for the cells: 0.03 s here, ~0.18 s in a fresh process).
Needs a filled cache: run ``scale.py --stage fill`` with the same ``--work`` first.

Run: ``GEODEMO_CACHE_DIR=... nice -n 10 python benchmarks/start_breakdown.py --data DATA --work WORK``.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import time
from pathlib import Path

from _common import table, write_result


def _timers(totals: dict) -> list[str]:
    """Wrap the parts of a training start: each call adds its (CPU s, wall s) to ``totals``; the labels."""
    import lightning as L

    import geodemo.backbones as backbones
    import geodemo.data as data
    import geodemo.dataset as dataset
    from geodemo.model import GeoModel
    from training import cache, datamodule, fill, fit, sources, tasks

    parts = {
        "read data.csv (read_locations)": (data, "read_locations"),
        "walk the image folder (ImageScan)": (data.ImageScan, "__init__"),
        "data fingerprint": (datamodule, "data_fingerprint"),
        "datamodule: splits, cells, x/y stats": (datamodule.GeoDataModule, "__init__"),
        "  of which cells": (datamodule, "build_cells"),
        "model: GeoModel (backbone + offline weights)": (GeoModel, "__init__"),
        "task (build_task, incl. the model)": (fit, "build_task"),
        "prepare_data (keys + fill check)": (datamodule.GeoDataModule, "prepare_data"),
        "  cache keys (location_keys)": (cache, "location_keys"),
        "  fill plan: what is missing (plan_fill)": (fill, "plan_fill"),
        "  weights hash (x3)": (cache, "weights_hash"),
        "setup: datasets + feature index": (datamodule.GeoDataModule, "setup"),
        "  LocationDataset targets (x2)": (dataset.LocationDataset, "__init__"),
        "  FeatureBank (x2)": (cache.FeatureBank, "__init__"),
        "Trainer(...)": (L.Trainer, "__init__"),
        "Trainer.fit up to the first step": (L.Trainer, "fit"),
        "first batch": (datamodule.GeoDataModule, "train_dataloader"),
    }
    for label, (owner, name) in parts.items():
        original = getattr(owner, name)

        def timed(*args, _original=original, _label=label, **kwargs):
            t, c = time.perf_counter(), time.process_time()
            try:
                return _original(*args, **kwargs)
            finally:
                total = totals.setdefault(_label, [0.0, 0.0])
                total[0] += time.process_time() - c
                total[1] += time.perf_counter() - t

        setattr(owner, name, functools.wraps(original)(timed))
        for module in (fit, datamodule, sources, tasks, cache, backbones):  # `from x import y` names
            if getattr(module, name, None) is original:
                setattr(module, name, getattr(owner, name))
    return list(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="the --work of scale.py's fill stage")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from geodemo.model import GeoModel, ModelConfig

    GeoModel(ModelConfig.for_backbone("tf_efficientnet_lite0", ["region"]), "offline")  # as scale.py does
    from training import fit
    from training.config import TrainConfig, tasks_for

    class FirstStep(Exception):
        """Raised when training is about to take its first step."""

    totals: dict = {}
    order = _timers(totals)

    def mark(self, trainer, pl_module, batch, batch_idx):  # the first batch is loaded
        totals["first step"] = [time.process_time() - start[1], time.perf_counter() - start[0]]
        raise FirstStep

    fit.ProgressFile.on_train_batch_start = mark
    runs = []
    for _ in range(args.repeats + 1):  # the first run is not counted
        totals.clear()
        cfg = TrainConfig(tasks=tasks_for("multi"), max_epochs=1)
        shutil.rmtree(args.work / "ckpt", ignore_errors=True)
        start = (time.perf_counter(), time.process_time())
        try:
            fit.train(args.data, args.work / "ckpt", cfg, cache_dir=args.work / "cache",
                      enable_progress_bar=False, resume=False)
        except FirstStep:
            pass
        runs.append({k: list(v) for k, v in totals.items()})
    timed = runs[1:]
    labels = ["first step", *order]
    rows = [[k, statistics.median(r[k][0] for r in timed), statistics.median(r[k][1] for r in timed)]
            for k in labels if all(k in r for r in timed)]
    load = os.getloadavg()[0]
    print(f"{args.data}: {args.repeats} runs, load average {load:.1f}")
    print(table(["part", "CPU s (median)", "wall s (median)"], rows))
    write_result(f"start_breakdown_{args.data.name}", {
        "data": str(args.data), "repeats": args.repeats, "load_average": load,
        "parts": {r[0]: {"cpu_s": r[1], "wall_s": r[2]} for r in rows},
        "runs": timed,
    })


if __name__ == "__main__":
    main()
