"""Server memory over 1,000 /predict calls from one session and from 1,000 sessions, against `python app.py`.

The app runs in its own process (benchmarks/load_test.App, the bundled checkpoint); a gradio_client calls
/predict with the four views of the sample's locations in turn. "one session" reuses one client; "many
sessions" gives every call a new session hash (what 1,000 browser tabs would be to the server). The app's
RSS (/proc/<pid>/status) is read every `--every` calls. A curve that flattens holds no per-call leak; the
growth over the second half (MB per 100 calls) is the figure that must stay near 0.

    python benchmarks/memory_over_time.py [--calls 1000] [--every 50]

Writes benchmarks/results/memory_over_time.json and memory_over_time.png.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

from load_test import RESULTS, App, _handles, locations, machine, pick_checkpoint


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def run_phase(app: App, views, calls: int, every: int, new_session: bool) -> dict:
    """`calls` /predict calls; RSS every `every` calls. Returns {calls: [...], rss_mb: [...], errors}."""
    from gradio_client import Client

    client = Client(app.url, verbose=False)
    points, rss, errors, start = [0], [rss_mb(app.proc.pid)], 0, time.perf_counter()
    for i in range(1, calls + 1):
        if new_session:
            client.session_hash = str(uuid.uuid4())  # the server sees a new session (its own gr.State)
        try:
            result = client.predict(*_handles(views[i % len(views)]), api_name="/predict")
            assert 42 < result["latitude"] < 47
        except Exception as exc:  # noqa: BLE001 - counted
            errors += 1
            print(f"call {i}: {type(exc).__name__}: {exc}"[:200], file=sys.stderr)
        if i % every == 0:
            points.append(i)
            rss.append(rss_mb(app.proc.pid))
    return {"calls": points, "rss_mb": rss, "errors": errors, "seconds": time.perf_counter() - start}


def growth_per_100(phase: dict, start_fraction: float = 0.5) -> float:
    """Median RSS increment per interval over the last part of the phase, as MB per 100 calls.

    The median, not a fitted slope: a single step (an allocator arena, a background thread) is not growth.
    """
    import numpy as np

    x, y = np.asarray(phase["calls"], float), np.asarray(phase["rss_mb"], float)
    keep = x >= start_fraction * x[-1]
    return float(np.median(np.diff(y[keep]) / np.diff(x[keep])) * 100)


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    for name, phase in result["phases"].items():
        ax.plot(phase["calls"], phase["rss_mb"], marker="o", markersize=3,
                label=f"{name} (last half {phase['growth_mb_per_100']:+.1f} MB/100 calls)")
    ax.set_xlabel("/predict calls")
    ax.set_ylabel("app RSS, MB")
    ax.set_title("geodemo app memory over 1,000 predictions (2-core VM)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="/predict calls per phase")
    parser.add_argument("--every", type=int, default=50, help="read RSS every N calls")
    parser.add_argument("--views", type=int, default=1, help="views per call (1-4: N, then E, S, W)")
    parser.add_argument("--checkpoint", help="checkpoint dir (default: the bundled one)")
    parser.add_argument("--out", type=Path, default=RESULTS / "memory_over_time.json", help="JSON to write")
    parser.add_argument("--replot", action="store_true", help="only recompute figures from --out's JSON")
    args = parser.parse_args()
    if args.replot:
        result = json.loads(args.out.read_text())
        for phase in result["phases"].values():
            phase["growth_mb_per_100"] = growth_per_100(phase)
        args.out.write_text(json.dumps(result, indent=1))
        plot(result, args.out.with_suffix(".png"))
        return 0
    with tempfile.TemporaryDirectory(prefix="geodemo-memory-") as tmp:
        work = Path(tmp)
        checkpoint, described = pick_checkpoint(args.checkpoint, work)
        info = machine()
        app = App(work, checkpoint)
        try:
            views = [[p if v < args.views else None for v, p in enumerate(row)] for row in locations(100)]
            run_phase(app, views, 5, 5, new_session=False)  # model loaded and warm before measuring
            phases = {
                "one session": run_phase(app, views, args.calls, args.every, new_session=False),
                "many sessions": run_phase(app, views, args.calls, args.every, new_session=True),
            }
        finally:
            app.kill(signal.SIGTERM)
    for phase in phases.values():
        phase["growth_mb_per_100"] = growth_per_100(phase)
    result = {"command": "python benchmarks/memory_over_time.py " + " ".join(sys.argv[1:]), "machine": info,
              "checkpoint": described, "views_per_call": args.views, "phases": phases}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(result, args.out.with_suffix(".png"))
    for name, phase in phases.items():
        first, last = phase["rss_mb"][0], phase["rss_mb"][-1]
        print(f"{name}: RSS {first:.0f} -> {last:.0f} MB over {phase['calls'][-1]} calls, "
              f"last half {phase['growth_mb_per_100']:+.2f} MB/100 calls, {phase['errors']} errors, "
              f"{phase['seconds']:.0f} s")
    return 0 if all(p["errors"] == 0 for p in phases.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
