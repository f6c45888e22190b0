"""Training throughput with and without the frozen-backbone embedding cache, and the cost of filling it.

Subject: optimiser steps of the default recipe's heads (multi task, lite0 @ 224, batch 16) served from the
on-disk cache. Reference: the same steps served from the images (decode, augment, frozen backbone forward).
Both alternate within each repetition; throughput = training locations / wall time of the timed batches.
The one-off cache fill (every view embedded as-is and mirrored) is timed separately into a fresh folder.
Run: `python benchmarks/bench_cache.py [--repeats N] [--threads T]`.
"""

from __future__ import annotations

import itertools
import tempfile
import time

from _common import PRIOR, SAMPLE, interleaved, paired_ratio, parse_args, summary, table, write_result

from training.config import TrainConfig
from training.datamodule import GeoDataModule
from training.tasks import build_task

IMAGE_BATCHES, CACHE_BATCHES = 2, 40  # per repetition; the image path is ~1000x slower per batch


def trainer_loop(cache: bool, cache_dir: str):
    """A prepared (datamodule, task, optimiser) and a function running n optimiser steps."""
    heads = ["geocell", "region", "heading"]
    cfg = TrainConfig(tasks=heads, cache=cache, batch_size=16, haversine_tau_km=75.0)
    dm = GeoDataModule(SAMPLE, cfg, prior_csv=PRIOR, cache_dir=cache_dir)
    task = build_task(dm.model_config(), cfg, backbone_weights="offline")
    dm.embedder = task.model
    start = time.perf_counter()
    dm.prepare_data()
    fill_s = time.perf_counter() - start
    dm.setup("fit")
    optimiser = task.configure_optimizers()["optimizer"]
    task.train()
    batches = itertools.cycle(dm.train_dataloader())  # cycle replays batches: the image path re-decodes

    def steps(n: int) -> int:
        seen = 0
        for _ in range(n):
            batch = next(batches)
            loss = sum(task.compute_losses(task.forward_batch(batch), batch).values())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            seen += len(batch["uuid"])
        return seen

    return steps, fill_s


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], repeats=5)
    with tempfile.TemporaryDirectory() as cold:
        # The cached run fills a fresh cache first: that is the one-off cost.
        cached_steps, fill_s = trainer_loop(cache=True, cache_dir=cold)
        image_steps, _ = trainer_loop(cache=False, cache_dir=cold)
        # 80 training locations make 5 full batches of 16.
        seen = {"images": 16 * IMAGE_BATCHES, "cache": 16 * CACHE_BATCHES}
        ms = interleaved(
            {"images": lambda: image_steps(IMAGE_BATCHES), "cache": lambda: cached_steps(CACHE_BATCHES)},
            args.repeats,
            args.warmup,
        )
    rate = {k: seen[k] / (summary(v)["p50_ms"] / 1000) for k, v in ms.items()}
    # Speed-up per location: (time per location on images) / (time per location on the cache).
    per_loc = {k: [t / seen[k] for t in v] for k, v in ms.items()}
    speedup = 1 / paired_ratio(per_loc["cache"], per_loc["images"])
    rows = [
        ["images (reference)", f"{rate['images']:.2f}", "1.0"],
        ["embedding cache", f"{rate['cache']:.0f}", f"{speedup:.0f}x"],
    ]
    print(table(["training steps served from", "train locations/s (p50)", "speed-up (paired median)"], rows))
    print(f"\none-off cache fill, 100 locations x 4 views x (as-is + mirrored): {fill_s:.1f} s")
    write_result(
        "cache_speedup",
        {"ms": ms, "locations_per_s": rate, "speedup_paired_median": speedup, "cache_fill_s": fill_s,
         "batches_per_repeat": {"images": IMAGE_BATCHES, "cache": CACHE_BATCHES}},
    )


if __name__ == "__main__":
    main()
