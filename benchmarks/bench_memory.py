"""Peak resident memory (RSS) of the app and of the training CLI, each in a fresh child process.

Peak RSS is the child's `ru_maxrss` from `os.wait4` (the kernel's high-water mark, covering its waited-for
children too), or `VmHWM` from /proc for the app, which does not exit. Measured:
  import_predict   `import geodemo.predict`                          (the floor: torch + timm + geodemo)
  predictor        + Predictor.load + one 4-view predict            (the model's share)
  ui_build         + `geodemo.ui.build_app()` + the same predict    (what Gradio/plotly/geo add; no server)
  app              `python app.py` to its first /predict answer     (the real app; bench_app_start.py)
  train            `python -m training train --task multi` on the sample, 1 epoch, 2+1 batches, no cache
  train_cache      the same with the embedding cache (encodes all 100 locations once)
  evaluate         `python -m training evaluate` on 32 sample locations
Anything that is not available (import error, CLI failure) is reported as skipped with the reason.
Run: `python benchmarks/bench_memory.py [--repeats N]` (the median over N runs; memory barely varies).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import PRIOR, ROOT, SAMPLE, checkpoint_path, parse_args, sample_uuids, table, write_result

from geodemo.data import view_paths

PREDICT = """
import sys
from geodemo.predict import Predictor
p = Predictor.load(sys.argv[1])
p.predict(sys.argv[2:6])
"""
# Last line of every snippet: its own /proc status, to split the peak into private heap and libraries.
STATUS = "\nimport json, _common\nprint(json.dumps(_common.memory_status()))\n"
SNIPPETS = {
    "import_predict": "import geodemo.predict",
    "predictor": PREDICT,
    "ui_build": "from geodemo.ui import build_app\nbuild_app()\n" + PREDICT,
}


def run_child(command: list[str], env: dict) -> dict:
    """Run to completion; returns peak RSS (MB), wall seconds and exit code (output kept on failure)."""
    t0 = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    result = {"peak_rss_mb": usage.ru_maxrss / 1024, "wall_s": wall, "rc": child.returncode}
    last = output.decode(errors="replace").strip().splitlines()[-1:]
    if child.returncode == 0 and last and last[0].startswith('{"VmHWM'):
        status = json.loads(last[0])
        result.update(anon_rss_mb=status["RssAnon_mb"], file_rss_mb=status["RssFile_mb"])
    if child.returncode != 0:
        result["error"] = output.decode(errors="replace").strip().splitlines()[-1:]
    return result


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], repeats=1)
    path, note = checkpoint_path()
    paths = view_paths(SAMPLE, sample_uuids(1)[0])
    views = [str(paths[v]) for v in sorted(paths)]
    work = Path(tempfile.mkdtemp(prefix="geodemo-mem-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'benchmarks'}",
           "GEODEMO_DEFAULT_CHECKPOINT": str(path), "GEODEMO_LABELS_DIR": str(work / "labels"),
           "GEODEMO_JOBS_DIR": str(work / "jobs"), "GEODEMO_CHECKPOINTS_DIR": str(work / "checkpoints")}
    train = [sys.executable, "-m", "training", "train", "--task", "multi", "--data", str(SAMPLE), "--prior",
             str(PRIOR), "--max-epochs", "1", "--limit-train-batches", "2", "--limit-val-batches", "1",
             "--batch-size", "8", "--no-progress-bar", "--cache-dir", str(work / "cache")]
    commands = {name: [sys.executable, "-c", code + STATUS, str(path), *views]
                for name, code in SNIPPETS.items()}
    commands["train"] = [*train, "--no-cache", "--out", str(work / "train")]
    commands["train_cache"] = [*train, "--out", str(work / "train_cache")]
    commands["evaluate"] = [sys.executable, "-m", "training", "evaluate", "--checkpoint", str(path), "--data",
                            str(SAMPLE), "--out", str(work / "eval.json"), "--limit", "32"]

    runs: dict[str, list[dict]] = {name: [] for name in [*commands, "app"]}
    for _ in range(args.repeats):
        for name, command in commands.items():
            if name == "train_cache":  # a cold cache each time, or the run only reads it back
                subprocess.run(["rm", "-rf", str(work / "cache")], check=False)
            runs[name].append(run_child(command, env))
        try:
            from bench_app_start import start_and_predict

            runs["app"].append(start_and_predict(path, views))
        except Exception as err:  # noqa: BLE001 - app.py not working yet is a result
            runs["app"].append({"rc": 1, "error": [f"{type(err).__name__}: {err}"]})

    results, rows = {}, []
    for name, attempts in runs.items():
        ok = [r for r in attempts if r.get("rc", 0) == 0]
        if not ok:
            results[name] = {"skipped": attempts[-1].get("error")}
            rows.append([name, "skipped", attempts[-1].get("error")])
            continue
        peak = float(np.median([r["peak_rss_mb"] for r in ok]))
        anon = float(np.median([r.get("anon_rss_mb", np.nan) for r in ok]))
        files = float(np.median([r.get("file_rss_mb", np.nan) for r in ok]))
        results[name] = {"peak_rss_mb": peak, "end_anon_rss_mb": anon, "end_file_rss_mb": files,
                         "runs": attempts}
        wall = np.median([r.get("wall_s", r.get("first_predict_s", np.nan)) for r in ok])
        rows.append([name, peak, anon, files, float(wall)])
    print(f"checkpoint: {note}; anon/file = private heap / mapped libraries at the end (n/a: not readable)\n")
    print(table(["process", "peak RSS MB", "anon MB", "file MB", "wall s"], rows))
    out = write_result("memory", {"checkpoint": note, "repeats": args.repeats, "results": results})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
