"""Run the geodemo app: `python app.py`.

Host and port come from Gradio's own GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (so it runs unchanged as a
Hugging Face Space); GEODEMO_* variables choose the checkpoint and folders (see geodemo/ui/settings.py).
GEODEMO_THREADS sets the threads of each model call (default: cores // concurrent events).
"""

import os
import tempfile

import torch

from geodemo.ui import build_app, launch
from geodemo.ui.app import CONCURRENCY

# torch's default is one intra-op thread per core for EVERY call, and the queue runs CONCURRENCY (2) model
# calls at once: on a 2-core box (or an HF cpu-basic Space) that is 4 busy threads on 2 cores, and the
# contention made a forward 7-16x slower than with 1 thread (benchmarks/results/inference_options_threads1
# .json). So each call gets its share of the cores; the ONNX Runtime session takes the same count when the
# model loads. Set here, not in the library: the split depends on how the app is served.
torch.set_num_threads(int(os.environ.get("GEODEMO_THREADS") or max(1, (os.cpu_count() or 1) // CONCURRENCY)))

# This process's own upload folder: with delete_cache, Gradio deletes what an app uploaded when it stops, and
# in a shared /tmp/gradio that would delete another app's upload of the same file (same content, same path).
os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="geodemo-uploads-"))
demo = build_app()

if __name__ == "__main__":
    launch(demo)
