"""Grad-CAM: which parts of each view decided the prediction (Selvaraju et al. 2017), as image overlays.

No hooks: the backbone is run as forward_features -> forward_head, which is what its forward does, so this
stays safe while other threads predict with the same cached model.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from geodemo.dataset import build_transform
from geodemo.images import center_square, load_rgb
from geodemo.model import ClassifierModel, GeoModel, ModelConfig


def _jet(x: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) float RGB in [0, 1], a jet-like blue -> red ramp."""
    return np.clip(1.5 - np.abs(4.0 * x[..., None] - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)


def grad_cam(fmap: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Grad-CAM maps (N, h, w) >= 0 of a scalar ``target`` computed from ``fmap`` (N, D, h, w).

    Each channel is weighted by its spatially averaged gradient (Selvaraju et al. 2017).
    """
    (grad,) = torch.autograd.grad(target, fmap)
    return torch.relu((grad.mean((2, 3), keepdim=True) * fmap).sum(1)).detach().numpy()


def cam_overlay(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a (h, w) Grad-CAM map, upsampled and scaled to [0, 1], over an (H, W, 3) uint8 image."""
    heat = cv2.resize(cam, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat = heat / heat.max() if heat.max() > 0 else heat
    blend = (1 - alpha) * rgb.astype(np.float32) + alpha * 255.0 * _jet(heat)
    return blend.clip(0, 255).astype(np.uint8)


def location_gradcam(
    model: GeoModel, crops: dict[int, np.ndarray], images: torch.Tensor, mask: torch.Tensor,
    alpha: float = 0.45,
) -> dict[int, np.ndarray]:
    """Grad-CAM on the backbone's last feature map, for the top predicted cell (else county, else coords).

    Args:
        crops: view index -> (S, S, 3) uint8 model input crop; images (P, 3, S, S) and mask (1, V): the
            normalised crops as `Predictor._tensors` makes them.

    Returns:
        view index -> (S, S, 3) uint8 overlay of the model's input crop (S = image_size).
    """
    images = images.contiguous(memory_format=torch.channels_last)  # the layout PyTorch always had here
    backbone = model.backbone
    with torch.inference_mode(False), torch.enable_grad():
        fmap = backbone.forward_features(images)  # (P, D, h, w)
        feats = backbone.forward_head(fmap, pre_logits=True)
        per_view = feats.new_zeros(*mask.shape, feats.shape[-1])
        per_view[mask] = feats
        out = model.forward_features(per_view, mask)
        key = next((k for k in ("geocell", "region") if k in out), None)
        cam = grad_cam(fmap, out[key][0].max() if key else out["coords"].norm())  # (P, h, w)
    return {v: cam_overlay(crops[v], cam[i], alpha) for i, v in enumerate(sorted(crops))}


def classify_gradcam(model: ClassifierModel, config: ModelConfig, image, alpha: float = 0.45):
    """Top class of one image for a classify checkpoint, and the Grad-CAM overlay of what decided it.

    Args:
        image: anything load_rgb takes (path, bytes, PIL image, array).

    Returns:
        (class name, (S, S, 3) uint8 overlay of the model's input crop, S = config.image_size).
    """
    size = config.image_size
    rgb = load_rgb(image, min_side=size)
    # the classify pipeline's own eval transform (as training/evaluate uses), so the CAM explains its input
    images = build_transform(size, config.mean, config.std, train=False)(image=rgb)["image"][None]
    rgb = center_square(rgb, size)  # the same crop, unnormalised, to draw on
    model.eval()
    with torch.inference_mode(False), torch.enable_grad():
        fmap = model.feature_map(images)
        logits = model.forward_map(fmap)["classify"][0]
        top = int(logits.argmax())
        cam = grad_cam(fmap, logits[top])
    return config.class_names[top], cam_overlay(rgb, cam[0], alpha)
