"""Latency that retrieval adds to one /predict call: the same 4-view prediction with no index, with the
bundled 100-location index and with a synthetic 20,000-location index (random embeddings, PCA to 128 d as
stored above 5,000 locations), timed interleaved in one run. Target: under 5% of /predict.

Usage: .venv/bin/python benchmarks/retrieval_latency.py [--repeats 15]
"""

from __future__ import annotations

import time

import numpy as np
from _common import (
    SAMPLE,
    checkpoint_path,
    interleaved,
    paired_ratio,
    parse_args,
    sample_uuids,
    summary,
    table,
    write_result,
)

from geodemo.data import VIEW_HEADINGS, view_paths
from geodemo.predict import Predictor
from geodemo.retrieval import build_index, load_index


def synthetic_index(n: int, dim: int, seed: int = 0):
    """n random 'locations' in Croatia's bounding box with dim-d embeddings."""
    rng = np.random.default_rng(seed)
    fused = rng.normal(size=(n, dim)).astype(np.float32)
    lat, lon = rng.uniform(42.5, 46.4, n), rng.uniform(13.6, 19.3, n)
    return build_index(fused, lat, lon, [f"synthetic-{i}" for i in range(n)], "synthetic")


def main() -> None:
    args = parse_args(__doc__, repeats=15, locations=20_000)
    ckpt, note = checkpoint_path()
    predictor = Predictor.load(ckpt)
    bundled = load_index(ckpt)
    uid = sample_uuids(1)[0]
    views = {VIEW_HEADINGS[v]: p for v, p in view_paths(SAMPLE, uid).items()}
    dim = predictor.embed_batch([views]).shape[1]
    t0 = time.perf_counter()
    large = synthetic_index(args.locations, dim)
    build_s = time.perf_counter() - t0
    indexes = {"none": None, f"{len(bundled)}": bundled, f"{len(large)}": large}

    def run(index):
        def call():
            predictor.__dict__["index"] = index  # what Predictor.index would have loaded
            return predictor.predict(views)
        return call

    times = interleaved({name: run(index) for name, index in indexes.items()}, args.repeats, args.warmup)
    query = predictor.embed_batch([views])
    search_ms = {}
    for name, index in indexes.items():
        if index is not None:
            ms = []
            for _ in range(50):
                t = time.perf_counter()
                index.search(query, 5)
                ms.append(1000 * (time.perf_counter() - t))
            search_ms[name] = float(np.median(ms))
    predictor.__dict__.pop("index", None)
    rows, results = [], {}
    for name in indexes:
        if name == "none":
            continue
        ratio = paired_ratio(times[name], times["none"])
        results[name] = {"predict": summary(times[name]), "ratio_vs_no_index": ratio,
                         "search_median_ms": search_ms[name]}
        rows.append([name, summary(times[name])["p50_ms"], search_ms[name], f"{100 * (ratio - 1):+.1f}%",
                     f"{100 * search_ms[name] / summary(times['none'])['p50_ms']:.2f}%"])
    print(table(["stored locations", "/predict p50 ms", "search ms", "paired Δ /predict", "search / predict"],
                rows))
    print(f"reference /predict without an index: p50 {summary(times['none'])['p50_ms']:.0f} ms")
    path = write_result("retrieval_latency", {
        "checkpoint": note, "reference": summary(times["none"]), "indexes": results,
        "synthetic_build_s": build_s, "embedding_dim": int(dim),
        "stored_dim_large": int(large.embeddings.shape[1]),
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
