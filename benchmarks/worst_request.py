"""The costliest image request the app still accepts (issue 20), and the old worst case, now refused.

Runs the app in this process (bundled checkpoint, temporary folders) and sends, through REST and
gradio_client:
- the old attack: four 7990x7990 16-bit RGBA PNGs (~0.5 MB each, 64 MP each to decode);
- the worst accepted four-view request: four 16-bit RGBA PNGs that together fill the per-request pixel
  budget (the costliest accepted format per pixel: 8 bytes each, nothing to draft);
- the largest accepted JPEGs: four 8000x8000 views (decoded at 1/8 scale);
- the worst accepted panorama: one 8484x4242 16-bit RGBA PNG (the budget in one image).
Wall and CPU seconds are of this whole process (server + client), so they are upper bounds of the server's.

    .venv/bin/python benchmarks/worst_request.py --repeats 3
"""

from __future__ import annotations

import io
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
from _common import SAMPLE, checkpoint_path, machine_info, parse_args, write_result
from PIL import Image

from geodemo.images import REQUEST_PIXELS


def _png16(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pack, row = zlib.compressobj(9), b"\0" * (1 + 8 * width)
    idat = b"".join(pack.compress(row) for _ in range(height)) + pack.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _big_jpeg(side: int) -> bytes:
    photo = next((SAMPLE / "images").glob("*/0.jpg"))
    buf = io.BytesIO()
    Image.open(photo).resize((side, side)).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(call, repeats: int) -> dict:
    walls, cpus, outcome = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), _cpu()
        outcome = call()
        walls.append(time.perf_counter() - wall)
        cpus.append(_cpu() - cpu)
    return {"outcome": outcome, "wall_s_max": max(walls), "wall_s_median": float(np.median(walls)),
            "cpu_s_max": max(cpus)}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], repeats=3)
    from gradio_client import Client, handle_file

    from geodemo.ui import build_app, launch
    from geodemo.ui.settings import Settings

    checkpoint, note = checkpoint_path()
    root = Path(tempfile.mkdtemp(prefix="geodemo-worst-"))
    settings = Settings(default_checkpoint=checkpoint, labels_dir=root / "labels", jobs_dir=root / "jobs",
                        checkpoints_dir=root / "checkpoints", data_roots=[root / "labels"])
    demo = build_app(settings)
    _, url, _ = launch(demo, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    side = int((REQUEST_PIXELS / 4) ** 0.5)
    pano_h = int((REQUEST_PIXELS / 2) ** 0.5)
    bodies = {
        "old_attack_4x7990px_png16": _png16(7990, 7990),
        f"worst_views_4x{side}px_png16": _png16(side, side),
        "largest_jpegs_4x8000px": _big_jpeg(8000),
    }

    def rest(body: bytes):
        files = {f: (f"{f}.png", body, "image/png") for f in ("north", "east", "south", "west")}
        answer = requests.post(f"{url.rstrip('/')}/api/v1/predict", files=files, timeout=600)
        return answer.status_code, answer.json().get("error", "")[:120]

    rest(_big_jpeg(640))  # load the model first
    results = {name: _timed(lambda body=body: rest(body), args.repeats) for name, body in bodies.items()}
    pano = root / "pano.png"
    pano.write_bytes(_png16(2 * pano_h, pano_h))
    client = Client(url, verbose=False)
    results[f"worst_panorama_{2 * pano_h}x{pano_h}px_png16"] = _timed(
        lambda: (200, str(client.predict(handle_file(str(pano)), 0, api_name="/predict_panorama")["county"])),
        args.repeats)
    demo.close()
    shutil.rmtree(root, ignore_errors=True)  # the benchmark's own folders: nothing left in the temp dir
    for name, row in results.items():
        print(f"{name:40s} {row['outcome'][0]}  wall max {row['wall_s_max']:.2f} s  "
              f"cpu max {row['cpu_s_max']:.2f} s")
    write_result("worst_request", {"results": results, "request_pixels": REQUEST_PIXELS,
                                   "checkpoint": note, "machine": machine_info()})


if __name__ == "__main__":
    main()
