"""Single-location latency: `Predictor.predict` vs the raw backbone forward of the same number of views.

Subject: `Predictor.predict({0: path, 90: path, ...})` on the real JPEG views of one sample location
(decode + resize + normalise + one batched forward + post-processing). Reference: the same backbone module
called on a pre-made (V, 3, S, S) tensor under `torch.inference_mode`, once NCHW-contiguous ("backbone")
and once channels_last ("backbone_cl": the layout predict's HWC->CHW permute hands the model, and faster
on CPU). The three alternate within each repetition; the ratio is p50(predict) / p50(reference) (target
<= 1.5 for 4 views), plus the median of per-repetition ratios.
The backbone inside predict runs on the engine GEODEMO_ENGINE picks (--engine sets it; default auto: ONNX
Runtime where installed); the references are always eager PyTorch.
Run: `python benchmarks/bench_predict.py [--repeats N] [--threads N] [--engine auto|onnx|torch]`.
"""

from __future__ import annotations

import os

import numpy as np
import torch
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


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], repeats=15, engine="auto")
    os.environ["GEODEMO_ENGINE"] = args.engine
    path, note = checkpoint_path()
    predictor = Predictor.load(path)
    backbone, size = predictor.model.backbone, predictor.config.image_size
    paths = view_paths(SAMPLE, sample_uuids(1)[0])

    results, rows = {}, []
    for n_views in (4, 2, 1):
        views = {VIEW_HEADINGS[v]: paths[v] for v in sorted(paths)[:n_views]}
        images = torch.randn(n_views, 3, size, size)
        images_cl = images.contiguous(memory_format=torch.channels_last)
        breakdown = []

        def predict():
            breakdown.append(predictor.predict(views).timings_ms)

        def raw(x):
            def call():
                with torch.inference_mode():
                    backbone(x)
            return call

        subjects = {"backbone": raw(images), "backbone_cl": raw(images_cl), "predict": predict}
        times = interleaved(subjects, args.repeats, args.warmup)
        stats = {name: summary(t) for name, t in times.items()}
        pred, ref, ref_cl = stats["predict"], stats["backbone"], stats["backbone_cl"]
        parts = {k: float(np.median([b[k] for b in breakdown[args.warmup:]])) for k in breakdown[0]}
        ratio, ratio_cl = pred["p50_ms"] / ref["p50_ms"], pred["p50_ms"] / ref_cl["p50_ms"]
        results[f"{n_views}_views"] = {
            **stats, "ratio_p50": ratio, "ratio_p50_vs_channels_last": ratio_cl,
            "ratio_paired_median": paired_ratio(times["predict"], times["backbone"]),
            "ratio_paired_median_vs_channels_last": paired_ratio(times["predict"], times["backbone_cl"]),
            "breakdown_p50_ms": parts,
        }
        rows.append([n_views, pred["p50_ms"], pred["p95_ms"], ref["p50_ms"], ref["p95_ms"], ref_cl["p50_ms"],
                     ratio, ratio_cl, parts["decode"], parts["resize"], parts["forward"], parts["post"]])

    print(f"checkpoint: {note}; image size {size}; threads {torch.get_num_threads()}; "
          f"predict engine {predictor.engine}\n")
    print(table(["views", "predict p50 ms", "predict p95 ms", "backbone p50 ms", "backbone p95 ms",
                 "backbone_cl p50 ms", "ratio p50", "ratio vs cl", "decode ms", "resize ms", "forward ms",
                 "post ms"], rows))
    name = "predict_latency" if args.engine == "auto" else f"predict_latency_{args.engine}"
    out = write_result(name, {"checkpoint": note, "image_size": size, "repeats": args.repeats,
                              "engine": predictor.engine, "target_ratio": 1.5, "results": results})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
