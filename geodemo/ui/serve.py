"""Start the app: what `python app.py` (a Hugging Face Space's entry) and `geodemo app` both run.

Host and port come from Gradio's own GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (so it runs unchanged as a
Space); GEODEMO_* variables choose the checkpoint and folders (see geodemo/ui/settings.py).
"""

from __future__ import annotations

import argparse
import os

from geodemo.paths import scratch_dir


def configure() -> None:
    """Process-wide settings that must precede building the app.

    torch's default is one intra-op thread per core for EVERY call, and the queue runs CONCURRENCY (2) model
    calls at once: on a 2-core box (or an HF cpu-basic Space) that is 4 busy threads on 2 cores, and the
    contention made a forward 7-16x slower than with 1 thread (benchmarks/results/inference_options_threads1
    .json). So each call gets its share of the cores (GEODEMO_THREADS overrides); the ONNX Runtime session
    takes the same count when the model loads. Set here, not in the library: the split depends on how the
    app is served.

    Uploads go to this process's own folder (<tmp>/geodemo/app-<pid>, removed at exit, swept at the next start
    if the process was killed): with delete_cache, Gradio deletes what an app uploaded when it stops, and in a
    shared /tmp/gradio that would delete another app's upload of the same file (same content, same path).
    """
    import torch

    from geodemo.ui.app import CONCURRENCY

    threads = os.environ.get("GEODEMO_THREADS") or max(1, (os.cpu_count() or 1) // CONCURRENCY)
    torch.set_num_threads(int(threads))
    os.environ.setdefault("GRADIO_TEMP_DIR", str(scratch_dir("app")))


def build_demo():
    """configure() then build the Blocks app (named ``demo``, as Spaces expect)."""
    configure()
    from geodemo.ui import build_app

    return build_app()


def main(argv=None) -> int:
    """`geodemo app [--host H] [--port P]`: serve the app until interrupted."""
    parser = argparse.ArgumentParser(
        prog="geodemo app",
        description="Serve the geodemo app (Predict, Label, Train, Evaluate, Play) in the browser. Folders "
        "and the checkpoint come from the GEODEMO_* environment variables (see the README).",
    )
    parser.add_argument("--host", default=None,
                        help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None,
                        help="port (default: $GRADIO_SERVER_PORT or 7860)")
    args = parser.parse_args(argv)
    if args.host:
        os.environ["GRADIO_SERVER_NAME"] = args.host
    if args.port:
        os.environ["GRADIO_SERVER_PORT"] = str(args.port)
    from geodemo.ui import launch

    launch(build_demo())
    return 0
