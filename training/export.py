"""ONNX export of a checkpoint's GeoModel: (views, view_mask) -> head outputs, checked with onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from geodemo.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from geodemo.model import GeoModel


class _Wrapper(torch.nn.Module):
    """Every view slot goes through the backbone (fixed shapes for ONNX); the mask still drives fusion."""

    def __init__(self, model: GeoModel, keys: list[str]):
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, views, view_mask):
        out = self.model.forward_features(self.model.embed(views), view_mask)
        return tuple(out[k] for k in self.keys)


def export_onnx(checkpoint=None, out="model.onnx", opset: int = 17, atol: float = 1e-4) -> dict:
    """Export to ONNX and verify onnxruntime matches eager PyTorch on a random batch.

    Inputs: ``views`` (B, 4, 3, S, S) float32 normalised, ``view_mask`` (B, 4) bool; outputs named as the
    model's dict keys (e.g. geocell (B, C) logits). Returns {"out", "outputs", "max_abs_diff"}.
    """
    model, config = load_checkpoint(checkpoint or DEFAULT_CHECKPOINT)
    if not isinstance(model, GeoModel):
        raise ValueError("ONNX export supports geo checkpoints only; this one is a classifier.")
    size, views_n = config.image_size, config.num_views
    views = torch.randn(2, views_n, 3, size, size)
    mask = torch.ones(2, views_n, dtype=torch.bool)
    mask[1, 1:] = False
    with torch.inference_mode():
        keys = sorted(model.forward_features(model.embed(views), mask))
    wrapper = _Wrapper(model, keys).eval()  # a new Module starts in train mode; export restores that mode
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {"views": {0: "batch"}, "view_mask": {0: "batch"}, **{k: {0: "batch"} for k in keys}}
    torch.onnx.export(
        wrapper,
        (views, mask),
        str(out),
        input_names=["views", "view_mask"],
        output_names=keys,
        dynamic_axes=dynamic,
        opset_version=opset,
        dynamo=False,
    )
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(keys, {"views": views.numpy(), "view_mask": mask.numpy()})
    with torch.inference_mode():
        want = wrapper(views, mask)
    diff = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))
    if diff > atol:
        raise ValueError(f"the ONNX model differs from PyTorch by {diff:.2e} (> {atol}); do not use {out}.")
    return {"out": str(out), "outputs": keys, "max_abs_diff": diff}
