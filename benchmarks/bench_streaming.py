"""Loader throughput per CPU core: litdata chunks (training.streaming) vs JPEG decoding of the 640 px views.

One process, no loader workers, OpenCV and torch on one thread, so images/s is per core. Each
repetition reads every sample location once through the training item builder (decode + random-resized
crop + colour jitter + normalise: what a fine-tuning loader does per image) and, separately, decode only;
chunk and folder runs interleaved, the ratio is the paired median. The chunks are written once by
``optimize_chunks`` (not timed).

    nice -n 10 .venv/bin/python benchmarks/bench_streaming.py --repeats 7 --warmup 1 --threads 1
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from _common import RESULTS_DIR, SAMPLE, interleaved, machine_info, paired_ratio, parse_args, summary

from geodemo.data import read_locations, view_paths
from geodemo.dataset import LocationDataset
from geodemo.images import load_rgb
from training.streaming import _dataset, _decoded, chunk_dataset, optimize_chunks

SIZE, MEAN, STD = 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], repeats=7)
    cv2.setNumThreads(1)
    frame = read_locations(SAMPLE)
    n_images = sum(len(view_paths(SAMPLE, u)) for u in frame["uuid"])
    with tempfile.TemporaryDirectory() as tmp:
        chunks = Path(tmp) / "chunks"
        t0 = time.perf_counter()
        optimize_chunks([SAMPLE], chunks, image_size=SIZE)
        optimize_s = time.perf_counter() - t0
        folder = LocationDataset(SAMPLE, frame, SIZE, MEAN, STD, train=True)
        in_chunks = LocationDataset(chunks, frame, SIZE, MEAN, STD, train=True)  # chunks/data.csv
        streamed = chunk_dataset(chunks, in_chunks, False, 0)
        raw = _dataset(chunks)
        paths = [p for u in frame["uuid"] for p in view_paths(SAMPLE, u).values()]
        subjects = {
            "jpeg_640_train_item": lambda: [folder[i] for i in range(len(folder))],
            "chunks_train_item": lambda: list(streamed),
            "jpeg_640_decode": lambda: [load_rgb(p, min_side=SIZE) for p in paths],
            "chunks_decode": lambda: [_decoded(raw[i], SIZE) for i in range(len(raw))],
        }
        cpu = {name: [] for name in subjects}  # CPU s: per-core rates a loaded machine can't skew

        def on_cpu(name, run):
            def timed():
                t = time.process_time()
                run()
                cpu[name].append(time.process_time() - t)
            return timed

        times = interleaved({n: on_cpu(n, f) for n, f in subjects.items()}, args.repeats, args.warmup)
        chunk_bytes = sum(p.stat().st_size for p in chunks.glob("chunk-*.bin"))
    source_bytes = sum(p.stat().st_size for p in paths)
    rates = {name: n_images / (summary(ms)["p50_ms"] / 1000) for name, ms in times.items()}
    cpu_rates = {name: n_images / float(np.median(s[args.warmup:])) for name, s in cpu.items()}
    result = {
        "command": f"nice -n 10 .venv/bin/python benchmarks/bench_streaming.py --repeats {args.repeats} "
        f"--warmup {args.warmup} --threads {args.threads}",
        "machine": machine_info(),
        "images": n_images,
        "image_size": SIZE,
        "optimize_s": round(optimize_s, 1),
        "bytes_per_image": {"jpeg_640": source_bytes / n_images, "chunks": chunk_bytes / n_images},
        "images_per_wall_s_p50": rates,
        "images_per_cpu_s_median": cpu_rates,
        # chunks' speed-up: paired median of (640 px JPEG time / chunk time)
        "chunks_speedup_train_item": paired_ratio(times["jpeg_640_train_item"], times["chunks_train_item"]),
        "chunks_speedup_decode": paired_ratio(times["jpeg_640_decode"], times["chunks_decode"]),
        "times_ms": {name: summary(ms) for name, ms in times.items()},
    }
    out = RESULTS_DIR / "streaming.json"
    out.write_text(json.dumps(result, indent=1))
    shown = ("images_per_wall_s_p50", "images_per_cpu_s_median", "chunks_speedup_train_item",
             "chunks_speedup_decode", "bytes_per_image", "optimize_s")
    print(json.dumps({k: result[k] for k in shown}, indent=1))


if __name__ == "__main__":
    main()
