"""Competition-size data on one machine: each stage's time, peak RSS and ratio against the raw ONNX backbone.

Builds synthetic LUMEN datasets of N locations (default 1k, 4k, 16k): the sample's 100 real locations
hard-linked over and over, plus ``--unique`` locations whose views are re-encoded (new content, so the cache
cannot deduplicate them). Every stage runs in its own subprocess, whose peak RSS (ru_maxrss) is reported, and
which times the raw ONNX backbone (lite0, 224 px, random input, best of batch 4/8/16/32) right before and
right after the stage: the ratio uses the mean of the two, so the machine's load hits both.

Stages (the default recipe: ``--task multi``, lite0 offline weights, embedding cache):
- ``fill``: a cold cache. ``keys``: every view file hashed (location_keys), ``fill``: the distinct views
  embedded (fill_cache: ONNX, measured batch size, decode workers) -> views/s vs the raw images/s;
- ``start``: a warm run of ``training.fit.train``: seconds (wall and CPU) from the call to its first optimiser
  step, with its first batch loaded (``import_s``: importing ``training.fit`` before the call, not counted);
- ``features``: location_keys with every fingerprint known, then the memory-mapped FeatureBank;
- ``predict``: ``Predictor.predict_dataset`` (bundled checkpoint) on ``--predict`` locations -> images/s vs
  the raw backbone at the batch predict uses (16 locations = 64 images), alternated PREDICT_ROUNDS times.

Run: ``nice -n 10 python benchmarks/scale.py [--scales 1000 4000 16000] [--unique 500] [--predict 200]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, SAMPLE, table, write_result

STAGES = ("fill", "start", "features", "predict")
PREDICT_ROUNDS = 5  # predict stage: predict_dataset and the raw backbone alternate this many times (medians)


# ----------------------------------------------------------------------------------------- datasets
def _unique_views(pool: Path, i: int, src: Path) -> Path:
    """Location i's re-encoded views (the pictures one brightness step up: new bytes), made once."""
    import numpy as np
    from PIL import Image

    folder = pool / f"u{i:06d}"
    if not folder.is_dir():
        tmp = pool / f".u{i:06d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for view in sorted(src.iterdir()):
            rgb = np.asarray(Image.open(view).convert("RGB")).astype(np.int16) + 1 + i // 100
            Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(tmp / view.name, quality=90)
        os.replace(tmp, folder)
    return folder


def build_dataset(out: Path, n: int, unique: int) -> Path:
    """N locations: the first ``unique`` with re-encoded views, the rest hard links to the sample's views."""
    import numpy as np
    import pandas as pd

    if (out / "data.csv").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    sample = pd.read_csv(SAMPLE / "data.csv")
    rng = np.random.default_rng(n)
    rows = []
    for i in range(n):
        src = sample.iloc[i % len(sample)]
        uid = f"s{i:06d}"
        folder = out / "images" / uid
        folder.mkdir(parents=True)
        views = SAMPLE / "images" / src["uuid"]
        if i < unique:
            views = _unique_views(out.parent / "unique", i, views)
        for view in sorted(views.iterdir()):
            os.link(view, folder / view.name)
        jitter = rng.normal(0, 0.01, 2)
        rows.append(
            {"uuid": uid, "latitude": src["latitude"] + jitter[0], "longitude": src["longitude"] + jitter[1]}
        )
    pd.DataFrame(rows).to_csv(out / "data.csv", index=False)
    return out


# ----------------------------------------------------------------------------------------- stages
def _raw_rate(engine, size: int, batches=(4, 8, 16, 32), clock=time.perf_counter) -> float:
    """Images/s of the raw engine on random input at its best batch size (per CPU second with
    ``clock=_cpu_seconds``)."""
    import torch

    best = 0.0
    for n in batches:
        x = torch.randn(n, 3, size, size)
        engine(x)
        t0 = clock()
        engine(x)
        engine(x)
        best = max(best, 2 * n / max(clock() - t0, 1e-9))
    return best


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _rss_mb() -> float:
    """This process's resident memory now, MB (Linux /proc)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _datamodule(data: Path, cache: Path):
    from training.config import TrainConfig, tasks_for
    from training.datamodule import GeoDataModule
    from training.tasks import build_task

    cfg = TrainConfig(tasks=tasks_for("multi"), max_epochs=1)
    dm = GeoDataModule(data, cfg, cache_dir=cache)
    task = build_task(dm.model_config(), cfg, backbone_weights="offline")
    dm.embedder = task.model
    return cfg, dm


def run_stage(stage: str, data: Path, cache: Path, work: Path, n_predict: int) -> dict:
    """One stage in this process -> its figures (and the raw backbone's images/s before and after)."""
    from geodemo.model import GeoModel, ModelConfig
    from geodemo.onnx_engine import module_backbone
    from training import cache as emb

    model = GeoModel(ModelConfig.for_backbone("tf_efficientnet_lite0", ["region"]), "offline").eval()
    raw_engine = module_backbone(model.backbone, emb.weights_hash(model.backbone), 224)
    raw = [_raw_rate(raw_engine, 224)]
    out: dict = {}
    t0 = time.perf_counter()
    if stage == "fill":
        _, dm = _datamodule(data, cache)
        frame = dm.frames["train"]
        t = time.perf_counter()
        dm.cache_keys(frame)
        out["keys_s"] = time.perf_counter() - t
        t, cpu = time.perf_counter(), _cpu_seconds()
        dm.prepare_data()
        out["fill_s"] = time.perf_counter() - t
        # CPU seconds of this process and its decode workers (joined at the end): steadier than wall time
        # on a shared machine, compared with the raw backbone's images per CPU second at its best batch
        out["fill_cpu_s"] = _cpu_seconds() - cpu
        out["cache"] = {k: v for k, v in dm.cache_stats.items() if k != "seconds"}
        out["views_per_s"] = dm.cache_stats["views_per_s"]
        out["views_per_cpu_s"] = dm.cache_stats["views"] / max(out["fill_cpu_s"], 1e-9)
        out["raw_images_per_cpu_s"] = _raw_rate(raw_engine, 224, clock=_cpu_seconds)
    elif stage == "start":
        from training import fit
        from training.config import TrainConfig, tasks_for

        out["import_s"] = time.perf_counter() - t0

        class FirstStep(Exception):
            """Raised when training is about to take its first step: the rest is not this stage's."""

        def mark(self, trainer, pl_module, batch, batch_idx):  # the first batch is loaded
            out["first_step_s"] = time.perf_counter() - t_call
            out["first_step_cpu_s"] = time.process_time() - cpu_call
            raise FirstStep

        fit.ProgressFile.on_train_batch_start = mark
        cfg = TrainConfig(tasks=tasks_for("multi"), max_epochs=1)
        shutil.rmtree(work / "ckpt", ignore_errors=True)
        t_call, cpu_call = time.perf_counter(), time.process_time()
        try:
            fit.train(data, work / "ckpt", cfg, cache_dir=cache, enable_progress_bar=False, resume=False)
        except FirstStep:
            pass
    elif stage == "features":
        _, dm = _datamodule(data, cache)
        everything = dm.frame
        t = time.perf_counter()
        keys = dm.cache_keys(everything)
        out["keys_warm_s"] = time.perf_counter() - t
        t = time.perf_counter()
        bank = emb.FeatureBank(keys, dm.cache)
        out["bank_s"] = time.perf_counter() - t
        out["views"] = int(bank.mask.sum())
        t = time.perf_counter()
        for i in range(0, len(bank), max(1, len(bank) // 200)):
            bank[i]
        out["bank_read_200_s"] = time.perf_counter() - t
    elif stage == "predict":
        import numpy as np
        import pandas as pd
        import torch

        from geodemo.predict import Predictor

        predictor = Predictor.load()
        frame = pd.read_csv(data / "data.csv").iloc[:: max(1, len(os.listdir(data / "images")) // n_predict)]
        frame = frame.head(n_predict).reset_index(drop=True)
        predictor.predict_dataset(data, frame=frame.head(32), batch_size=16)  # warm-up (both ONNX sessions)
        # The reference: both ONNX sessions (interactive: spinning threads; batch: sleeping) on random input
        # in the batches predict makes (16 locations = 64 images), alternated with it; the faster one counts.
        images = 4 * len(frame)
        batches = [torch.randn(min(64, images - s), 3, 224, 224) for s in range(0, images, 64)]
        engines = {"raw_interactive": predictor._onnx, "raw_batch": predictor._batch_onnx}
        rates: dict[str, list[float]] = {"predict": [], **{name: [] for name in engines}}
        cpu_ms = {name: [] for name in rates}  # process CPU per image: what the work costs, whatever the load
        rss_mb = [_rss_mb()]  # after the warm-up, then after each round: flat if nothing accumulates
        subjects = list({"predict": None, **engines}.items())
        for r in range(PREDICT_ROUNDS):
            for name, engine in subjects[r % 3 :] + subjects[: r % 3]:  # no subject always runs first
                t, cpu = time.perf_counter(), time.process_time()
                if engine is None:
                    predictor.predict_dataset(data, frame=frame, batch_size=16)
                else:
                    for x in batches:
                        engine(x)
                rates[name].append(images / (time.perf_counter() - t))
                cpu_ms[name].append(1000 * (time.process_time() - cpu) / images)
            rss_mb.append(_rss_mb())
        medians = {name: float(np.median(r)) for name, r in rates.items()}
        out["rates_images_per_s"] = rates
        out["cpu_ms_per_image"] = {name: float(np.median(c)) for name, c in cpu_ms.items()}
        out["predict_rss_mb"] = rss_mb
        out["images_per_s"], out["locations_per_s"] = medians["predict"], medians["predict"] / 4
        out["raw_batch64_images_per_s"] = max(medians[name] for name in engines)
        out["predict_ratio_paired"] = float(np.median([p / max(r) for p, *r in zip(*rates.values())]))
    out["stage_s"] = time.perf_counter() - t0
    raw.append(_raw_rate(raw_engine, 224))
    out["raw_images_per_s"] = sum(raw) / 2
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# ----------------------------------------------------------------------------------------- driver
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1000, 4000, 16000], help="locations")
    parser.add_argument("--unique", type=int, default=500, help="locations with re-encoded (unique) views")
    parser.add_argument("--predict", type=int, default=200, help="locations timed in the predict stage")
    parser.add_argument("--work", type=Path, default=Path("/tmp/geodemo-scale"), help="datasets and caches")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--stage", help=argparse.SUPPRESS)  # internal: run one stage, print its JSON
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        work = args.work
        print("RESULT " + json.dumps(run_stage(args.stage, args.data, work / "cache", work, args.predict)))
        return
    results = {}
    for n in args.scales:
        t = time.perf_counter()
        data = build_dataset(args.work / f"data{n}", n, min(args.unique, n))
        print(f"{n} locations ready in {time.perf_counter() - t:.1f} s", flush=True)
        work = args.work / f"run{n}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        results[n] = {}
        for stage in args.stages:
            cmd = [
                sys.executable,
                __file__,
                "--stage",
                stage,
                "--data",
                str(data),
                "--work",
                str(work),
                "--predict",
                str(args.predict),
            ]
            env = dict(os.environ, HF_HUB_OFFLINE="1", GEODEMO_CACHE_DIR=str(work / "engine"))
            r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
            if r.returncode or line is None:
                raise SystemExit(f"stage {stage} at {n} failed:\n{r.stderr[-3000:]}")
            results[n][stage] = json.loads(line[7:])
            print(n, stage, results[n][stage], flush=True)
    rows = []
    for n, res in results.items():
        fill, start = res.get("fill", {}), res.get("start", {})
        feats, pred = res.get("features", {}), res.get("predict", {})
        rows.append(
            [
                n,
                fill.get("keys_s"),
                fill.get("fill_s"),
                fill.get("views_per_s"),
                fill.get("views_per_s", 0) / fill.get("raw_images_per_s", 1),
                start.get("first_step_s"),
                feats.get("keys_warm_s"),
                feats.get("bank_s"),
                pred.get("images_per_s"),
                pred.get("images_per_s", 0) / pred.get("raw_batch64_images_per_s", 1),
                max(r.get("peak_rss_mb", 0) for r in res.values()),
            ]
        )
    header = [
        "locations",
        "keys cold s",
        "fill s",
        "fill views/s",
        "fill / raw",
        "first step s",
        "keys warm s",
        "bank s",
        "predict img/s",
        "predict / raw",
        "peak RSS MB",
    ]
    print(table(header, rows))
    write_result(
        "scale",
        {
            "scales": {str(k): v for k, v in results.items()},
            "unique": args.unique,
            "predict_locations": args.predict,
            "table": [dict(zip(header, r)) for r in rows],
        },
    )


if __name__ == "__main__":
    main()
