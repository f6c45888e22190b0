"""Feature variants for the issue-13 accuracy ideas: frozen EfficientNet-Lite embeddings of every sample view.

Each variant is computed once and stored in ``runs/accuracy_ideas/feats/<variant>.npz`` (git-ignored):

- ``lite0_224``: today's input (whole view, 224 px, the eval transform of geodemo.dataset) -> ``final`` (N, V,
  1280) pooled last features, plus ``stage_mean`` / ``stage_std`` (N, V, 768): spatial mean and standard
  deviation of the outputs of blocks 1-6 (24+40+80+112+192+320 channels), from the same forward pass.
- ``lite0_tiles2`` / ``lite0_tiles3``: the view resized to 448 / 672 px and cut into a 2x2 / 3x3 grid of
  224 px tiles -> ``tiles`` (N, V, T, 1280) (the whole view comes from lite0_224).
- ``lite0_320`` / ``lite0_448``: the whole view at a larger input size -> ``final``.
- ``lite1_240`` / ``lite2_260``: the other offline backbones at their native size -> ``final``.

Every file also stores ``seconds`` (decode + forward wall time of the fill, this process, 1 thread) and
``uuids`` (row order). Usage (repo root): ``nice -n 10 .venv/bin/python benchmarks/research/idea_features.py``
[--variants a,b] [--force].
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from geodemo.backbones import create_backbone, get_backbone_spec  # noqa: E402
from geodemo.data import read_locations  # noqa: E402
from geodemo.dataset import LocationDataset  # noqa: E402
from geodemo.paths import find_sample  # noqa: E402

SAMPLE = find_sample() or ROOT / "data" / "lumen-sample"  # $GEODEMO_SAMPLE, data/, ../shared/data
FEATS_DIR = ROOT / "runs" / "accuracy_ideas" / "feats"
STAGES = (1, 2, 3, 4, 5, 6)  # lite0 blocks pooled for multi-layer features (block 0: 16 channels at 112 px)

# variant -> (backbone registry name, input px, tile grid g (0 = whole view only))
VARIANTS = {
    "lite0_224": ("tf_efficientnet_lite0", 224, 0),
    "lite0_tiles2": ("tf_efficientnet_lite0", 448, 2),
    "lite0_tiles3": ("tf_efficientnet_lite0", 672, 3),
    "lite0_320": ("tf_efficientnet_lite0", 320, 0),
    "lite0_448": ("tf_efficientnet_lite0", 448, 0),
    "lite1_240": ("tf_efficientnet_lite1", 240, 0),
    "lite2_260": ("tf_efficientnet_lite2", 260, 0),
}


def tiles(x: torch.Tensor, g: int) -> torch.Tensor:
    """(P, 3, S, S) -> (P * g * g, 3, S/g, S/g), tiles row-major within each image."""
    p, c, s, _ = x.shape
    t = s // g
    return x.reshape(p, c, g, t, g, t).permute(0, 2, 4, 1, 3, 5).reshape(p * g * g, c, t, t)


@torch.inference_mode()
def extract(variant: str) -> dict[str, np.ndarray]:
    """Embed every present view of the sample for one variant; missing views stay zero."""
    backbone, size, grid = VARIANTS[variant]
    spec = get_backbone_spec(backbone)
    model = create_backbone(backbone, "offline").eval()
    frame = read_locations(SAMPLE)
    dataset = LocationDataset(SAMPLE, frame, size, spec.mean, spec.std, train=False)
    captured: list[torch.Tensor] = []
    hooks = []
    if variant == "lite0_224":
        hooks = [model.blocks[i].register_forward_hook(lambda m, i, o: captured.append(o)) for i in STAGES]
    n, v, d = len(dataset), 4, model.num_features
    shape = (n, v, grid * grid, d) if grid else (n, v, d)
    out = {"tiles" if grid else "final": np.zeros(shape, np.float32)}
    if hooks:
        width = sum(model.blocks[i][-1].conv_pwl.out_channels for i in STAGES)
        out["stage_mean"] = np.zeros((n, v, width), np.float32)
        out["stage_std"] = np.zeros((n, v, width), np.float32)
    mask = np.zeros((n, v), bool)
    start = time.perf_counter()
    for i in range(n):
        item = dataset[i]
        m = item["view_mask"].numpy()
        x = item["views"][item["view_mask"]]
        captured.clear()
        if grid:
            feats = model(tiles(x, grid)).reshape(len(x), grid * grid, d)
            out["tiles"][i, m] = feats.numpy()
        else:
            out["final"][i, m] = model(x).numpy()
        if hooks:
            out["stage_mean"][i, m] = torch.cat([c.mean((2, 3)) for c in captured], 1).numpy()
            out["stage_std"][i, m] = torch.cat([c.std((2, 3)) for c in captured], 1).numpy()
        mask[i] = m
    out["seconds"] = np.array(time.perf_counter() - start)
    out["mask"] = mask
    out["uuids"] = frame["uuid"].to_numpy(str)
    for h in hooks:
        h.remove()
    return out


def load(variant: str) -> dict[str, np.ndarray]:
    """A stored variant (raises FileNotFoundError naming the command that fills it)."""
    path = FEATS_DIR / f"{variant}.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; run benchmarks/research/idea_features.py --variants {variant}"
        )
    with np.load(path, allow_pickle=False) as z:
        return dict(z)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated variant names")
    parser.add_argument("--force", action="store_true", help="recompute variants already stored")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    FEATS_DIR.mkdir(parents=True, exist_ok=True)
    for variant in args.variants.split(","):
        path = FEATS_DIR / f"{variant}.npz"
        if path.is_file() and not args.force:
            print(f"{variant}: stored", flush=True)
            continue
        out = extract(variant)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, **out)
        tmp.replace(path)
        print(f"{variant}: {float(out['seconds']):.0f} s", flush=True)


if __name__ == "__main__":
    main()
