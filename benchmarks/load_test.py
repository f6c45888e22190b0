"""Load: 8 gradio_client clients call /predict for 60 s while 4 clients call /label, against `python app.py`.

Reports errors (must be 0), whether every label was stored exactly once (returned uuids vs data.csv),
p50/p95 latency of /predict and /label, throughput, and the p50 of a single uncontended /predict measured
in the same run (the reference; ratio = loaded p50 / uncontended p50).

    python benchmarks/load_test.py [--seconds 60] [--predict-clients 8] [--label-clients 4]

Checkpoint: --checkpoint, else assets/checkpoints/default if it exists, else a tiny random one (the test
backbone at 64 px; then the figures measure the app and Gradio, not the model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # app_fixtures: make_tiny_checkpoint, free_port
from geodemo.paths import PRIOR_CSV as PRIOR  # noqa: E402 (the shipped prior)
from geodemo.paths import find_sample  # noqa: E402

SAMPLE = find_sample() or ROOT / "data" / "lumen-sample"  # $GEODEMO_SAMPLE, data/, ../shared/data


def pick_checkpoint(path: str | None, work: Path) -> tuple[Path, str]:
    """(checkpoint dir, description): the given one, the bundled default, or a tiny random one."""
    from geodemo.checkpoint import DEFAULT_CHECKPOINT

    if path:
        return Path(path).resolve(), f"given: {path}"
    if (DEFAULT_CHECKPOINT / "config.json").exists():
        return DEFAULT_CHECKPOINT, "bundled default (assets/checkpoints/default)"
    from app_fixtures import make_tiny_checkpoint

    return make_tiny_checkpoint(work / "tiny", PRIOR), "tiny random (test_efficientnet, 64 px)"


class App:
    """`python app.py` in a subprocess on a free port, with its own labels/jobs/checkpoints folders."""

    def __init__(self, work: Path, checkpoint: Path, labels: Path | None = None):
        from app_fixtures import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.labels = labels or work / "labels"
        self.log = work / f"app-{self.port}.log"
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_SERVER_PORT": str(self.port),
            "GEODEMO_DEFAULT_CHECKPOINT": str(checkpoint),
            "GEODEMO_LABELS_DIR": str(self.labels),
            "GEODEMO_JOBS_DIR": str(work / "jobs"),
            "GEODEMO_CHECKPOINTS_DIR": str(work / "checkpoints"),
            "GEODEMO_DATA_ROOTS": os.pathsep.join([str(SAMPLE), str(self.labels)]),
        }
        start = time.perf_counter()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.start_s = self._wait_up(start)

    def _wait_up(self, start: float, timeout: float = 300) -> float:
        while time.perf_counter() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/gradio_api/info", timeout=5):
                    return time.perf_counter() - start
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"the app did not answer within {timeout} s; see {self.log}")

    def kill(self, sig=signal.SIGKILL) -> None:
        """Signal the app's whole process group and reap it."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        self.proc.wait(30)


def locations(n: int) -> list[list[str]]:
    """n sample locations as [north, east, south, west] paths (None where a view is missing)."""
    from geodemo.data import read_locations, view_paths

    rows = []
    for uid in read_locations(SAMPLE).uuid[:n]:
        paths = view_paths(SAMPLE, uid)
        rows.append([str(paths[v]) if v in paths else None for v in range(4)])
    return rows


def _handles(paths):
    from gradio_client import handle_file

    return [handle_file(p) if p else None for p in paths]


def stats(ms: list[float]) -> dict:
    if not ms:
        return {"n": 0}
    a = np.asarray(ms)
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "max_ms": float(a.max()), "mean_ms": float(a.mean())}


def uncontended_predict(url: str, views, calls: int, warmup: int = 3) -> list[float]:
    """Sequential /predict calls from one client, ms each (after `warmup` untimed calls)."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    times = []
    for i in range(warmup + calls):
        t0 = time.perf_counter()
        client.predict(*_handles(views[i % len(views)]), api_name="/predict")
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - t0))
    return times


def run_load(url: str, views, seconds: float, predict_clients: int, label_clients: int) -> dict:
    """The load phase; returns latencies, errors and the uuids /label returned."""
    from gradio_client import Client

    deadline = time.perf_counter() + seconds
    lock = threading.Lock()
    out = {"predict_ms": [], "label_ms": [], "errors": [], "uuids": []}

    def predict_loop(i):
        client = Client(url, verbose=False)
        n = 0
        while time.perf_counter() < deadline:
            args = _handles(views[(i + n) % len(views)])
            t0 = time.perf_counter()
            try:
                result = client.predict(*args, api_name="/predict")
                assert 42 < result["latitude"] < 47 and 13 < result["longitude"] < 20, result
                with lock:
                    out["predict_ms"].append(1000 * (time.perf_counter() - t0))
            except Exception as exc:  # noqa: BLE001 - counted, that is the measurement
                with lock:
                    out["errors"].append(f"predict: {type(exc).__name__}: {exc}"[:300])
            n += 1

    def label_loop(i):
        client = Client(url, verbose=False)
        n = 0
        while time.perf_counter() < deadline:
            north, _, south, _ = views[(i + n) % len(views)]
            lat, lon = 45.0 + 0.001 * n + 0.1 * i, 15.5
            t0 = time.perf_counter()
            try:
                result = client.predict(*_handles([north, None, south, None]), lat, lon, api_name="/label")
                with lock:
                    out["label_ms"].append(1000 * (time.perf_counter() - t0))
                    out["uuids"].append(result["uuid"])
            except Exception as exc:  # noqa: BLE001
                with lock:
                    out["errors"].append(f"label: {type(exc).__name__}: {exc}"[:300])
            n += 1

    threads = [threading.Thread(target=predict_loop, args=(i,)) for i in range(predict_clients)]
    threads += [threading.Thread(target=label_loop, args=(i,)) for i in range(label_clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["wall_s"] = time.perf_counter() - start
    return out


def check_labels(labels: Path, uuids: list[str]) -> dict:
    """Every returned uuid stored exactly once, nothing else stored, and the folder validates."""
    from geodemo.data import read_locations
    from geodemo.validate import validate_dataset

    frame = read_locations(labels) if (labels / "data.csv").exists() else None
    stored = [] if frame is None else frame.uuid.tolist()
    counts = {u: stored.count(u) for u in set(uuids)}
    report = validate_dataset(labels) if stored else None
    return {
        "returned": len(uuids),
        "stored_rows": len(stored),
        "stored_unique": len(set(stored)),
        "returned_stored_exactly_once": all(c == 1 for c in counts.values()),
        "stored_but_not_returned": len(set(stored) - set(uuids)),
        "validates": bool(report and report.ok),
    }


def machine() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg_1m_before": os.getloadavg()[0],
            "python": platform.python_version()}


def markdown(result: dict) -> str:
    p, lab, ref = result["predict"], result["label"], result["reference_predict"]
    rows = [
        "| endpoint | calls | errors | p50 ms | p95 ms | max ms | calls/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| /predict uncontended (reference, 1 client) | {ref['n']} | 0 | {ref['p50_ms']:.0f} | "
        f"{ref['p95_ms']:.0f} | {ref['max_ms']:.0f} | {1000 / ref['mean_ms']:.2f} |",
        f"| /predict under load ({result['predict_clients']} clients) | {p['n']} | "
        f"{result['errors_by_endpoint']['predict']} | {p.get('p50_ms', 0):.0f} | {p.get('p95_ms', 0):.0f} | "
        f"{p.get('max_ms', 0):.0f} | {result['throughput_per_s']['predict']:.2f} |",
        f"| /label under load ({result['label_clients']} clients) | {lab['n']} | "
        f"{result['errors_by_endpoint']['label']} | {lab.get('p50_ms', 0):.0f} | "
        f"{lab.get('p95_ms', 0):.0f} | {lab.get('max_ms', 0):.0f} | "
        f"{result['throughput_per_s']['label']:.2f} |",
    ]
    s = result["labels"]
    rows += [
        "",
        f"Loaded/uncontended /predict p50 ratio: **{result['predict_p50_ratio']:.1f}x** "
        f"({result['seconds']:.0f} s, checkpoint: {result['checkpoint']}, "
        f"app start {result['app_start_s']:.1f} s).",
        f"Labels: {s['returned']} returned, {s['stored_rows']} rows stored ({s['stored_unique']} unique), "
        f"every returned label stored exactly once: **{s['returned_stored_exactly_once']}**, "
        f"dataset validates: **{s['validates']}**. Total errors: **{result['errors']}**.",
    ]
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load phase, s")
    parser.add_argument("--predict-clients", type=int, default=8, help="concurrent /predict clients")
    parser.add_argument("--label-clients", type=int, default=4, help="concurrent /label clients")
    parser.add_argument("--reference-calls", type=int, default=20, help="uncontended /predict calls timed")
    parser.add_argument("--checkpoint", help="checkpoint dir (default: bundled default, else tiny)")
    parser.add_argument("--out", type=Path, default=RESULTS / "load_test.json", help="JSON to write")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="geodemo-load-") as tmp:
        work = Path(tmp)
        checkpoint, described = pick_checkpoint(args.checkpoint, work)
        info = machine()
        app = App(work, checkpoint)
        try:
            views = locations(16)
            reference = uncontended_predict(app.url, views, args.reference_calls)
            load = run_load(app.url, views, args.seconds, args.predict_clients, args.label_clients)
            labels = check_labels(app.labels, load["uuids"])
        finally:
            app.kill(signal.SIGTERM)
    errors = {k: sum(e.startswith(k) for e in load["errors"]) for k in ("predict", "label")}
    result = {
        "command": "python benchmarks/load_test.py " + " ".join(sys.argv[1:]),
        "machine": info,
        "checkpoint": described,
        "app_start_s": app.start_s,
        "seconds": args.seconds,
        "wall_s": load["wall_s"],
        "predict_clients": args.predict_clients,
        "label_clients": args.label_clients,
        "reference_predict": stats(reference),
        "predict": stats(load["predict_ms"]),
        "label": stats(load["label_ms"]),
        "throughput_per_s": {"predict": len(load["predict_ms"]) / load["wall_s"],
                             "label": len(load["label_ms"]) / load["wall_s"]},
        "predict_p50_ratio": float(np.percentile(load["predict_ms"], 50) / np.percentile(reference, 50))
        if load["predict_ms"] else float("nan"),
        "errors": len(load["errors"]),
        "errors_by_endpoint": errors,
        "error_samples": load["errors"][:10],
        "labels": labels,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(markdown(result))
    ok = result["errors"] == 0 and labels["returned_stored_exactly_once"] and labels["validates"]
    ok = ok and labels["stored_but_not_returned"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
