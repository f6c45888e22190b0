"""Batch prediction throughput: `Predictor.predict_dataset` over the sample locations vs the raw backbone.

Subject: `predict_dataset(lumen-sample, batch_size=B)` — listing files, JPEG decode, resize, batched forward,
post-processing and the DataFrame, for every location (100 in the sample). Reference: the raw backbone engine
predict uses (ONNX Runtime; eager PyTorch where it is off) on random (B x 4, 3, S, S) tensors, as many
batches as the dataset needs; with ONNX both of its sessions (interactive: spinning threads; batch: idle
threads sleep) and the faster counts. All alternate within each repetition; throughput = locations / wall s.
Run: `python benchmarks/bench_batch.py [--repeats N] [--batch-size B] [--locations N]`.
"""

from __future__ import annotations

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

from geodemo.data import read_locations, view_paths
from geodemo.predict import Predictor


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], repeats=7, batch_size=16, locations=100)
    path, note = checkpoint_path()
    predictor = Predictor.load(path)
    size = predictor.config.image_size
    uuids = sample_uuids(args.locations)
    frame = read_locations(SAMPLE).set_index("uuid").loc[uuids].reset_index()
    n_images = sum(len(view_paths(SAMPLE, u)) for u in uuids)
    # Random input of the same total size, split into the same batches as predict_dataset makes.
    per_batch = [min(args.batch_size, len(uuids) - s) * n_images // len(uuids)
                 for s in range(0, len(uuids), args.batch_size)]
    batches = [torch.randn(n, 3, size, size) for n in per_batch]
    if predictor._onnx is None:
        batches = [x.contiguous(memory_format=torch.channels_last) for x in batches]
        engines = {"backbone (PyTorch)": predictor.model.backbone}
    else:
        engines = {"backbone (ONNX, interactive)": predictor._onnx}
        engines["backbone (ONNX, batch)"] = predictor._batch_onnx

    def raw(engine):
        def run():
            with torch.inference_mode():
                for x in batches:
                    engine(x)
        return run

    def predict():
        predictor.predict_dataset(SAMPLE, frame, batch_size=args.batch_size)

    subjects = {**{name: raw(engine) for name, engine in engines.items()}, "predict_dataset": predict}
    times = interleaved(subjects, args.repeats, warmup=1)
    stats = {name: summary(t) for name, t in times.items()}
    rate = {name: 1000 * len(uuids) / s["p50_ms"] for name, s in stats.items()}
    reference = max(engines, key=rate.get)
    per_location = n_images / len(uuids)
    ratio = rate["predict_dataset"] / rate[reference]
    paired = 1 / paired_ratio(times["predict_dataset"], times[reference])
    print(f"checkpoint: {note}; {len(uuids)} locations, {n_images} views; batch {args.batch_size} locations; "
          f"threads {torch.get_num_threads()}\n")
    print(table(["subject", "p50 s", "p95 s", "locations/s (p50)", "images/s (p50)"],
                [[name, s["p50_ms"] / 1000, s["p95_ms"] / 1000, rate[name], rate[name] * per_location]
                 for name, s in stats.items()]))
    print(f"\nthroughput ratio predict_dataset / {reference} = {ratio:.2f} (paired median {paired:.2f})")
    out = write_result("batch_throughput", {
        "checkpoint": note, "image_size": size, "locations": len(uuids), "images": n_images,
        "batch_size": args.batch_size, "repeats": args.repeats, "results": stats, "reference": reference,
        "locations_per_s": rate, "throughput_ratio": ratio, "throughput_ratio_paired_median": paired,
    })
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
