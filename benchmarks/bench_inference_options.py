"""Inference options on the CPU: which ones make one 4-view forward pass faster than eager PyTorch?

Every subject runs the whole GeoModel (backbone on the 4 views of one location -> fusion -> heads) on the same
normalised input, and is timed interleaved with the reference, eager under `torch.inference_mode` with an
NCHW-contiguous input at the run's thread count (torch's default, or --threads N). Subjects:
  no_grad              torch.no_grad instead of inference_mode
  cl_input             channels_last input only (what Predictor's HWC->CHW permute already hands the model)
  cl_model             model.to(channels_last) + channels_last input
  threads_K            eager with torch.set_num_threads(K), K = 1 if the run uses more threads, else 2
  compile              torch.compile(model) (inductor; compile time reported separately)
  onnxruntime          training.export.export_onnx -> ORT CPU session, same thread count (export time apart)
  onnxruntime_1thread  the same session built with intra_op_num_threads=1
Each result is the p50 ratio subject / reference (< 1 is faster) and the paired median ratio.
Run: `python benchmarks/bench_inference_options.py [--repeats N] [--threads N] [--no-compile] [--no-onnx]`.
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from _common import (
    checkpoint_path,
    interleaved,
    machine_info,
    paired_ratio,
    parse_args,
    summary,
    table,
    write_result,
)

from geodemo.predict import Predictor

ADOPT_BELOW = 0.9  # adopt an option only if it cuts the p50 by >= 10%: smaller gains drown in noise here


def _eager(model, images, mask, grad_mode=torch.inference_mode, threads=None):
    default = torch.get_num_threads()

    def call():
        if threads:
            torch.set_num_threads(threads)
        with grad_mode():
            model.forward_features(model.embed_present(images, mask), mask)
        if threads:
            torch.set_num_threads(default)

    return call


def _compiled(model, images, mask, info: dict):
    def forward(x, m):
        return model.forward_features(model.embed_present(x, m), m)

    compiled = torch.compile(forward)
    t0 = time.perf_counter()
    with torch.inference_mode():
        compiled(images, mask)
    info["compile_s"] = time.perf_counter() - t0

    def call():
        with torch.inference_mode():
            compiled(images, mask)

    return call


def _onnx(path: Path, images, mask, info: dict):
    import onnxruntime as ort

    from training.export import export_onnx

    out = Path(tempfile.mkdtemp(prefix="geodemo-onnx-")) / "model.onnx"
    t0 = time.perf_counter()
    info["export"] = export_onnx(path, out)
    info["export_s"] = time.perf_counter() - t0
    feeds = {"views": images.unsqueeze(0).numpy(), "view_mask": mask.numpy()}
    calls = {}
    threads_all = torch.get_num_threads()
    sessions = [("onnxruntime", threads_all)] + [("onnxruntime_1thread", 1)] * (threads_all > 1)
    for name, threads in sessions:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
        calls[name] = (lambda s: lambda: s.run(None, feeds))(session)
    return calls


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], repeats=15, no_compile=False, no_onnx=False)
    path, note = checkpoint_path()
    model = Predictor.load(path).model
    size = model.config.image_size
    images = torch.randn(4, 3, size, size)  # one location's 4 views, already normalised
    mask = torch.ones(1, 4, dtype=torch.bool)
    images_cl = images.contiguous(memory_format=torch.channels_last)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)

    subjects = {
        "eager": _eager(model, images, mask),
        "no_grad": _eager(model, images, mask, torch.no_grad),
        "cl_input": _eager(model, images_cl, mask),
        "cl_model": _eager(model_cl, images_cl, mask),
    }
    other = 1 if torch.get_num_threads() > 1 else 2
    subjects[f"threads_{other}"] = _eager(model, images, mask, threads=other)
    info, skipped = {}, {}
    if not args.no_compile:
        try:
            subjects["compile"] = _compiled(copy.deepcopy(model), images, mask, info)
        except Exception as err:  # noqa: BLE001 - a failed compile is a result, not a crash
            skipped["compile"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            traceback.print_exc(file=sys.stderr)
    if not args.no_onnx:
        try:
            subjects.update(_onnx(path, images, mask, info))
        except Exception as err:  # noqa: BLE001
            skipped["onnxruntime"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            traceback.print_exc(file=sys.stderr)

    times = interleaved(subjects, args.repeats, args.warmup)
    stats = {name: summary(t) for name, t in times.items()}
    ref = stats["eager"]["p50_ms"]
    results, rows = {}, []
    for name, s in stats.items():
        ratio = s["p50_ms"] / ref
        paired = paired_ratio(times[name], times["eager"])
        pays = max(ratio, paired) < ADOPT_BELOW
        verdict = "reference" if name == "eager" else ("adopt" if pays else "don't")
        results[name] = {**s, "ratio_p50": ratio, "ratio_paired_median": paired, "verdict": verdict}
        rows.append([name, s["p50_ms"], s["p95_ms"], ratio, paired, verdict])

    print(f"checkpoint: {note}; one location, 4 views at {size} px; default threads "
          f"{machine_info()['torch_threads']}; compile/export: {info.get('compile_s', 'n/a')} s / "
          f"{info.get('export_s', 'n/a')} s; skipped: {skipped or 'none'}\n")
    header = ["subject", "p50 ms", "p95 ms", "ratio p50 (vs eager)", "paired median ratio", "verdict"]
    print(table(header, rows))
    out = write_result("inference_options", {
        "checkpoint": note, "image_size": size, "repeats": args.repeats, "adopt_below_ratio": ADOPT_BELOW,
        "compile_s": info.get("compile_s"), "onnx_export_s": info.get("export_s"),
        "onnx_max_abs_diff": info.get("export", {}).get("max_abs_diff"), "skipped": skipped,
        "results": results,
    })
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
