"""The `/predict` API latency through gradio_client vs the raw backbone forward of 4 views, in the same run.

Starts `python app.py` (free port, HF_HUB_OFFLINE=1, GRADIO_ANALYTICS_ENABLED=False, the benchmark checkpoint,
GEODEMO_THREADS = this process's torch threads, GEODEMO_ENGINE = --engine), warms it up, then interleaves:
  api          `Client.predict(handle_file(N), E, S, W, api_name="/predict")` round trip, 4 sample views;
               its answer's `elapsed_ms` is the server's Predictor.predict time ("server");
  api_noverify the same with `Client(url, ssl_verify=False)`: gradio_client makes every request (4 uploads,
               the queue join) with a fresh `httpx.post`, and each loads the CA bundle into a new SSL context
               (~27 ms here) even for http://; without verification there is no bundle to load;
  rest         `POST /api/v1/predict` (geodemo/ui/rest.py) with the 4 views as multipart fields, on one
               kept-alive `httpx.Client`: one request, no upload step, no queue, no SSE;
  upload       the 4 uploads alone, as gradio_client makes them (one POST per file to /gradio_api/upload);
  backbone     create_backbone("tf_efficientnet_lite0", "offline") on a (4, 3, 224, 224) tensor, eager
               PyTorch under inference_mode, in this process with the server's thread count (the reference);
  backbone_ort the same checkpoint's backbone on ONNX Runtime (what the server runs by default).
The rest of the round trip (api - upload - server) is the queue join, the SSE stream (gradio_client polls
its message queue every 50 ms), Gradio's pre/postprocess.
Run: `python benchmarks/bench_api_latency.py [--repeats N] [--threads N] [--engine auto|onnx|torch]`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from _common import (
    ROOT,
    SAMPLE,
    checkpoint_path,
    interleaved,
    paired_ratio,
    parse_args,
    sample_uuids,
    stop,
    summary,
    table,
    write_result,
)
from bench_app_start import free_port

from geodemo.data import view_paths
from geodemo.model import create_backbone
from geodemo.onnx_engine import onnx_backbone
from geodemo.predict import Predictor
from geodemo.ui.app import CONCURRENCY

TIMEOUT_S = 300


def start_app(checkpoint: Path, threads: int, engine: str) -> tuple[subprocess.Popen, str, Path]:
    """`python app.py` on a free port with temp labels/jobs/checkpoints; returns (process, url, log)."""
    port, work = free_port(), Path(tempfile.mkdtemp(prefix="geodemo-api-"))
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "GEODEMO_THREADS": str(threads),
           "GEODEMO_ENGINE": engine, "GEODEMO_DEFAULT_CHECKPOINT": str(checkpoint),
           "GEODEMO_LABELS_DIR": str(work / "labels"), "GEODEMO_JOBS_DIR": str(work / "jobs"),
           "GEODEMO_CHECKPOINTS_DIR": str(work / "checkpoints")}
    log = work / "app.log"
    with open(log, "wb") as out:
        app = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out,
                               stderr=subprocess.STDOUT)
    return app, f"http://127.0.0.1:{port}/", log


def connect(app: subprocess.Popen, url: str, log: Path):
    """A gradio_client Client once the app answers."""
    from gradio_client import Client

    t0 = time.perf_counter()
    while True:
        if app.poll() is not None:
            raise RuntimeError(f"app.py exited with {app.returncode}; see {log}")
        if time.perf_counter() - t0 > TIMEOUT_S:
            raise TimeoutError(f"app.py did not answer within {TIMEOUT_S} s; see {log}")
        try:
            return Client(url, verbose=False)
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.2)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], repeats=15, engine="auto")
    threads = args.threads or max(1, (os.cpu_count() or 1) // CONCURRENCY)  # app.py's rule
    torch.set_num_threads(threads)
    path, note = checkpoint_path()
    paths = view_paths(SAMPLE, sample_uuids(1)[0])
    views = [str(paths[v]) for v in sorted(paths)]
    assert len(views) == 4

    backbone = create_backbone("tf_efficientnet_lite0", "offline").eval()
    images = torch.randn(4, 3, 224, 224)
    predictor = Predictor.load(path)  # for its backbone on ORT (exported into the cache the server reuses)
    ort = onnx_backbone(predictor.model.backbone, path, predictor.config.image_size)

    from gradio_client import handle_file

    app, url, log = start_app(path, threads, args.engine)
    try:
        client = connect(app, url, log)
        from gradio_client import Client

        client_noverify = Client(url, verbose=False, ssl_verify=False)
        server_ms = []

        def api():
            answer = client.predict(*[handle_file(v) for v in views], api_name="/predict")
            server_ms.append((answer[0] if isinstance(answer, (list, tuple)) else answer)["elapsed_ms"])

        def api_noverify():
            client_noverify.predict(*[handle_file(v) for v in views], api_name="/predict")

        def upload():
            for v in views:  # one POST per file, a new connection each: what gradio_client does
                with open(v, "rb") as f:
                    httpx.post(client.upload_url, files=[("files", (Path(v).name, f))]).raise_for_status()

        def raw():
            with torch.inference_mode():
                backbone(images)

        from geodemo.ui.rest import FIELDS, PATH

        rest_client = httpx.Client(base_url=url.rstrip("/"), timeout=TIMEOUT_S)
        payload = [(name, (Path(v).name, Path(v).read_bytes(), "image/jpeg"))
                   for name, v in zip(FIELDS, views)]

        def rest():
            rest_client.post(PATH, files=payload).raise_for_status()

        subjects = {"api": api, "api_noverify": api_noverify, "rest": rest, "upload": upload, "backbone": raw}
        if ort is not None:
            subjects["backbone_ort"] = lambda: ort(images)
        for _ in range(3):  # the first call loads the model (and exports the ONNX backbone if not cached)
            api()
        server_ms.clear()
        times = interleaved(subjects, args.repeats, args.warmup)
        times["server"] = server_ms[args.warmup:]
    finally:
        stop(app)

    stats = {name: summary(t) for name, t in times.items()}
    ref = stats["backbone"]["p50_ms"]
    rest = np.asarray(times["api"]) - np.asarray(times["upload"]) - np.asarray(times["server"])
    stats["gradio_rest"] = summary(rest.tolist())  # per repetition: api - upload - server
    ratios = {f"{name}/backbone": {"p50": stats[name]["p50_ms"] / ref,
                                   "p95": stats[name]["p95_ms"] / stats["backbone"]["p95_ms"],
                                   "paired_median": paired_ratio(times[name], times["backbone"])}
              for name in ("api", "api_noverify", "rest", "server", "backbone_ort") if name in times}
    rows = [[name, s["p50_ms"], s["p95_ms"], s["p50_ms"] / ref] for name, s in stats.items()]
    print(f"checkpoint: {note}; engine {args.engine}; threads {threads} (server and here); "
          f"{args.repeats} interleaved repeats\n")
    print(table(["subject", "p50 ms", "p95 ms", "p50 / backbone p50"], rows))
    print()
    print(table(["ratio", "p50", "p95", "paired median"],
                [[k, v["p50"], v["p95"], v["paired_median"]] for k, v in ratios.items()]))
    name = "api_latency" if args.engine == "auto" else f"api_latency_{args.engine}"
    out = write_result(name, {"checkpoint": note, "engine": args.engine, "threads": threads,
                              "repeats": args.repeats, "target_ratio": 1.5, "target_ratio_rest": 1.3,
                              "load_avg": list(os.getloadavg()), "results": stats,
                              "ratios": ratios, "times_ms": times})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
