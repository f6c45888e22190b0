"""ONNX Runtime for the backbone alone: exported once per checkpoint into a cache, verified, then run.

Only the backbone (images (N, 3, S, S) -> features (N, D), N dynamic) goes to ONNX, so a location with
missing views computes only its present ones, and fusion, heads and Grad-CAM stay in PyTorch. On the 2-core
CPU, ORT ran the lite0 backbone 1.43x faster than eager PyTorch at equal threads
(benchmarks/results/inference_options_threads1.json). Any failure falls back to PyTorch with a logged
warning, never an error.

Env: GEODEMO_ENGINE = auto (default: ONNX when onnxruntime is installed) | onnx | torch;
GEODEMO_CACHE_DIR (default ~/.cache/geodemo) holds onnx/<sha256 of weights + config>.onnx.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("geodemo.onnx")
ENGINES = ("auto", "onnx", "torch")
OPSET = 17
ATOL = 1e-3  # max abs difference of the features from PyTorch's, checked once at load
_FORMAT = f"backbone-opset{OPSET}"  # part of the cache key: a change of what is exported makes new files


def engine_setting() -> str:
    """GEODEMO_ENGINE, lower-cased; an unknown value is treated as auto (with a warning)."""
    value = os.environ.get("GEODEMO_ENGINE", "auto").strip().lower() or "auto"
    if value not in ENGINES:
        log.warning("GEODEMO_ENGINE=%r is not one of %s; using auto", value, ENGINES)
        return "auto"
    return value


def cache_dir() -> Path:
    """Where exported backbones go: $GEODEMO_CACHE_DIR/onnx (default ~/.cache/geodemo/onnx)."""
    root = os.environ.get("GEODEMO_CACHE_DIR") or Path.home() / ".cache" / "geodemo"
    return Path(root) / "onnx"


def _cache_key(checkpoint: Path) -> str:
    digest = hashlib.sha256(_FORMAT.encode())
    for name in ("model.safetensors", "config.json"):
        with open(checkpoint / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _export(backbone: torch.nn.Module, size: int, out: Path) -> None:
    """Export atomically (tmp + os.replace), so a crash never leaves a half-written file under the key."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        torch.onnx.export(
            backbone,
            (torch.zeros(2, 3, size, size),),
            str(tmp),
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "n"}, "features": {0: "n"}},
            opset_version=OPSET,
            dynamo=False,
        )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


class OnnxBackbone:
    """A verified onnxruntime session standing in for `model.backbone` in the predict hot path."""

    def __init__(self, session, path: Path | None = None, threads: int = 1):
        self.session, self.path, self.threads = session, path, threads

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) float32 -> (N, D) features (thread-safe: ORT sessions may run concurrently)."""
        x = np.ascontiguousarray(images.numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(["features"], {"images": x})[0])

    def sleeping(self) -> OnnxBackbone:
        """The same verified model in a second session whose idle threads sleep instead of spinning.

        For batch work that shares the cores with other work (decoding the next batch in a thread): there,
        ORT's spin-waiting threads took the decoder's core (BENCHMARKS.md, batch prediction).
        """
        return OnnxBackbone(_session(self.path, self.threads, spinning=False), self.path, self.threads)


def _session(path: Path, threads: int, spinning: bool = True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _max_diff(engine: OnnxBackbone, backbone: torch.nn.Module, size: int) -> float:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = backbone(x)
    return float((engine(x) - want).abs().max())


def _engine_wanted() -> bool:
    setting = engine_setting()
    if setting == "torch":
        return False
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        if setting == "onnx":
            log.warning("GEODEMO_ENGINE=onnx but onnxruntime is not installed; using PyTorch")
        return False
    return True


def onnx_backbone(backbone: torch.nn.Module, checkpoint: Path, size: int) -> OnnxBackbone | None:
    """The checkpoint's backbone on ONNX Runtime, or None where the engine is off or anything fails.

    A cached file that will not load or no longer matches PyTorch is exported again, once.
    ORT's intra-op threads follow torch.get_num_threads() at this call.
    """
    if not _engine_wanted():
        return None
    return _verified(backbone, cache_dir() / f"{_cache_key(checkpoint)}.onnx", size)


def module_backbone(backbone: torch.nn.Module, weights_key: str, size: int) -> OnnxBackbone | None:
    """A live backbone (no checkpoint on disk, e.g. while filling the embedding cache) on ONNX Runtime.

    Args:
        weights_key: a digest of the backbone's weights (training.cache.weights_hash); it names the export.
        size: input side, px.
    """
    if not _engine_wanted():
        return None
    name = hashlib.sha256(f"{_FORMAT}|{weights_key}|{size}".encode()).hexdigest()
    return _verified(backbone.eval(), cache_dir() / f"{name}.onnx", size)


def _verified(backbone: torch.nn.Module, path: Path, size: int) -> OnnxBackbone | None:
    for attempt in range(2):
        try:
            if attempt or not path.exists():
                _export(backbone, size, path)
            threads = torch.get_num_threads()
            engine = OnnxBackbone(_session(path, threads), path, threads)
            diff = _max_diff(engine, backbone, size)
            if diff < ATOL:
                return engine
            problem = f"its features differ from PyTorch's by {diff:.2e} (>= {ATOL})"
        except Exception as exc:  # noqa: BLE001 - any export/ORT failure means: use PyTorch
            problem = f"{type(exc).__name__}: {exc}"
        then = "using PyTorch" if attempt else "re-exporting"
        log.warning("ONNX backbone %s: %s; %s", path, problem, then)
    return None
