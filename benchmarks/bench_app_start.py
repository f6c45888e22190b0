"""App cold start: `python app.py` launched to the first successful /predict answer through gradio_client.

Each run starts a fresh `python app.py` (free GRADIO_SERVER_PORT, HF_HUB_OFFLINE=1, labels/jobs/checkpoints in
a temp dir, GEODEMO_DEFAULT_CHECKPOINT = the benchmark checkpoint), polls until gradio_client connects, then
calls `Client(url).predict(handle_file(N), E, S, W, api_name="/predict")` with the 4 views of a sample
location. Reported per run: seconds to the server answering, to the first /predict answer, the latency of
a second (warm) /predict, and the app's peak RSS (VmHWM) after the answers. Median of 5 runs by default.
Run: `python benchmarks/bench_app_start.py [--repeats N]`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import (
    ROOT,
    SAMPLE,
    checkpoint_path,
    memory_status,
    parse_args,
    sample_uuids,
    stop,
    table,
    write_result,
)

from geodemo.data import view_paths

TIMEOUT_S = 300


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_and_predict(checkpoint: Path, views: list[str]) -> dict:
    """Start `python app.py`, wait for the first /predict answer; returns timings (s) and peak RSS (MB)."""
    from gradio_client import Client, handle_file

    port, work = free_port(), Path(tempfile.mkdtemp(prefix="geodemo-app-"))
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "GEODEMO_DEFAULT_CHECKPOINT": str(checkpoint), "GEODEMO_LABELS_DIR": str(work / "labels"),
           "GEODEMO_JOBS_DIR": str(work / "jobs"), "GEODEMO_CHECKPOINTS_DIR": str(work / "checkpoints")}
    log = open(work / "app.log", "wb")
    t0 = time.perf_counter()
    command = [sys.executable, "app.py"]
    app = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = None
        while client is None:
            if app.poll() is not None:
                raise RuntimeError(f"app.py exited with {app.returncode}; see {work / 'app.log'}")
            if time.perf_counter() - t0 > TIMEOUT_S:
                raise TimeoutError(f"app.py did not answer within {TIMEOUT_S} s; see {work / 'app.log'}")
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.1)
        t_up = time.perf_counter() - t0
        answer = client.predict(*[handle_file(v) for v in views], api_name="/predict")
        t_first = time.perf_counter() - t0
        t1 = time.perf_counter()
        client.predict(*[handle_file(v) for v in views], api_name="/predict")
        warm = time.perf_counter() - t1
        result = answer[0] if isinstance(answer, (list, tuple)) else answer
        if not (isinstance(result, dict) and "latitude" in result):
            raise RuntimeError(f"/predict answered {str(answer)[:200]}")
        memory = memory_status(app.pid)
        return {"server_up_s": t_up, "first_predict_s": t_first, "warm_predict_s": warm,
                "peak_rss_mb": memory["VmHWM_mb"], "anon_rss_mb": memory["RssAnon_mb"],
                "file_rss_mb": memory["RssFile_mb"]}
    finally:
        stop(app)
        log.close()


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], repeats=5)
    path, note = checkpoint_path()
    paths = view_paths(SAMPLE, sample_uuids(1)[0])
    views = [str(paths[v]) for v in sorted(paths)]
    runs = [start_and_predict(path, views) for _ in range(args.repeats)]
    keys = list(runs[0])
    stats = {k: {"p50": float(np.median([r[k] for r in runs])), "max": float(max(r[k] for r in runs))}
             for k in keys}
    print(f"checkpoint: {note}; {args.repeats} cold starts\n")
    print(table(["measure", "median", "max"], [[k, s["p50"], s["max"]] for k, s in stats.items()]))
    payload = {"checkpoint": note, "repeats": args.repeats, "runs": runs, "summary": stats}
    out = write_result("app_start", payload)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
