"""Shared benchmark helpers: interleaved timing, percentiles, machine info, the sample checkpoint, JSON out.

Every speed figure is a ratio against a reference measured in the same run with the repetitions
interleaved (reference, subject, reference, subject, ...), so the noise of a shared machine hits both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))  # run as `python benchmarks/x.py` from the repo root without installing
from geodemo.paths import PRIOR_CSV as PRIOR  # noqa: E402 (the shipped prior)
from geodemo.paths import find_sample  # noqa: E402

SAMPLE = find_sample() or ROOT / "data" / "lumen-sample"  # $GEODEMO_SAMPLE, data/, ../shared/data


def parse_args(description: str, repeats: int = 15, **extra) -> argparse.Namespace:
    """`--repeats`, `--warmup`, `--threads` plus `extra` flags given as name -> default (bool: a switch)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=repeats, help="timed repetitions per subject (>= 7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repetitions per subject first")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0 = torch's default")
    for name, default in extra.items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true")
        else:
            parser.add_argument(flag, type=type(default), default=default)
    args = parser.parse_args()
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
        global _SUFFIX  # results of a non-default thread count go to their own file
        _SUFFIX = f"_threads{args.threads}"
    return args


_SUFFIX = ""


def interleaved(subjects: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, list]:
    """Time each callable `repeats` times, alternating subjects within each repetition.

    The order rotates every repetition so no subject always runs right after another.

    Returns:
        name -> list of wall times, ms.
    """
    names = list(subjects)
    for _ in range(warmup):
        for name in names:
            subjects[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            subjects[name]()
            times[name].append(1000 * (time.perf_counter() - t0))
    return times


def summary(ms: list[float]) -> dict:
    """p50/p95/min/mean of a list of ms."""
    a = np.asarray(ms, dtype=np.float64)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "min_ms": float(a.min()),
        "mean_ms": float(a.mean()),
        "n": int(a.size),
    }


def paired_ratio(subject: list[float], reference: list[float]) -> float:
    """Median of the per-repetition ratios subject/reference (pairs were timed next to each other)."""
    return float(np.median(np.asarray(subject) / np.asarray(reference)))


def machine_info() -> dict:
    """CPU model, cores, load, torch version and thread count of this process."""
    import torch

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def memory_status(pid: int | str = "self") -> dict:
    """VmHWM (peak), VmRSS, RssAnon (private heap) and RssFile (mapped libraries) of a live process, MB."""
    fields = ("VmHWM", "VmRSS", "RssAnon", "RssFile")
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in fields:
            out[f"{key}_mb"] = int(line.split()[1]) / 1024
    return out


def sample_uuids(n: int | None = None) -> list[str]:
    """The first n uuids of the sample dataset (all with None)."""
    from geodemo.data import read_locations

    uuids = read_locations(SAMPLE)["uuid"].astype(str).tolist()
    return uuids[:n] if n else uuids


def checkpoint_path() -> tuple[Path, str]:
    """assets/checkpoints/default if present, else a multi-task lite0 checkpoint built in a temp dir.

    The built one has offline ImageNet backbone weights and random heads: the same compute as a trained
    model, which is all a speed benchmark needs.

    Returns:
        (checkpoint dir, a note saying which one it is).
    """
    from geodemo.checkpoint import DEFAULT_CHECKPOINT, save_checkpoint

    if (DEFAULT_CHECKPOINT / "model.safetensors").is_file():
        return DEFAULT_CHECKPOINT, "assets/checkpoints/default"
    from geodemo.cells import build_grid
    from geodemo.data import read_locations
    from geodemo.geo import load_points_csv
    from geodemo.model import ModelConfig, build_model

    frame = read_locations(SAMPLE)
    prior_lat, prior_lon = load_points_csv(PRIOR)
    cells = build_grid(frame["latitude"].to_numpy(), frame["longitude"].to_numpy(),
                       prior_lat=prior_lat, prior_lon=prior_lon)
    config = ModelConfig(tasks=["geocell", "region", "heading"], cells=cells.to_dict())
    model = build_model(config, backbone_weights="offline")
    out = Path(tempfile.mkdtemp(prefix="geodemo-bench-")) / "lite0-multi"
    save_checkpoint(model, config, out)
    return out, f"built on the fly: lite0 offline weights, geocell+region+heading, {len(cells)} cells"


def write_result(name: str, payload: dict, directory: Path = RESULTS_DIR) -> Path:
    """Write <directory>/<name>.json (default benchmarks/results) atomically, with machine info and the
    command added."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "command": "python " + " ".join(sys.argv), "machine": machine_info(),
               "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **payload}
    path = directory / f"{name}{_SUFFIX}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=float) + "\n")
    os.replace(tmp, path)
    return path


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table; floats are printed with 2 decimals."""
    def cell(x):
        return f"{x:.2f}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def stop(process, grace_s: float = 10.0) -> None:
    """Terminate a subprocess (the app under test), killing it if it does not exit within grace_s."""
    import subprocess

    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
