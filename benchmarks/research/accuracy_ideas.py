"""Issue 13: every accuracy idea against today's default recipe, 5-fold CV by location, same folds, one run.

Features come from ``benchmarks/research/idea_features.py`` (stored once per variant under
runs/accuracy_ideas/feats).
Heads are today's default recipe (``cv_accuracy.DEFAULT``: multi-task linear heads, mean fusion, haversine
tau 75 km, AdamW, cosine, 50 epochs, last weights), trained on the cached features of the four training
folds with the same GeoDataModule cells/targets and GeoTask losses as ``python -m training train``.
Held-out points go through ``geodemo.readout.Readout`` with every point mode it offers; the primary mode is
the one ``scripts/train_default.sh`` passes. Anything chosen (tau, beta, temperature, L2) is chosen by an
inner 4-fold CV inside the outer training folds.

Usage (repo root):
    nice -n 10 .venv/bin/python benchmarks/research/idea_features.py          # fill the feature variants once
    nice -n 10 .venv/bin/python benchmarks/research/accuracy_ideas.py [--only a,b] [--cost]
Per-method held-out predictions are kept in runs/accuracy_ideas/methods/ (a rerun only fits missing ones;
--refit redoes them); writes benchmarks/research/results/accuracy_ideas.json and prints the markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cv_accuracy import DEFAULT, PRIOR, RESULTS_DIR, SAMPLE, SEED, K, sample_frame  # noqa: E402
from idea_features import VARIANTS, load, tiles  # noqa: E402

from geodemo import geo  # noqa: E402
from geodemo.backbones import create_backbone  # noqa: E402
from geodemo.data import VIEW_HEADINGS  # noqa: E402
from geodemo.dataset import kfold_splits  # noqa: E402
from geodemo.losses import haversine_soft_targets  # noqa: E402
from geodemo.model import POINT_MODES, get_head  # noqa: E402
from geodemo.readout import Readout  # noqa: E402
from training import cache as emb  # noqa: E402
from training.datamodule import GeoDataModule  # noqa: E402
from training.metrics import angular_error_deg  # noqa: E402
from training.tasks import GeoTask  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "runs" / "accuracy_ideas"
METHODS_DIR = WORK / "methods"
CODE_VERSION = 1  # bump to invalidate the per-method predictions kept under runs/

TAUS = (25.0, 75.0, 150.0, 300.0)  # inner-CV grid for the haversine smoothing strength (km)
BETAS = (0.0, 0.25, 0.5, 1.0)  # inner-CV grid for the prior exponent
TEMPS = (
    1.0,
    0.5,
    0.75,
    1.5,
    2.0,
)  # inner-CV grid for the head's softmax temperature (1.0 first: ties keep it)
L2S = (1e-3, 1e-2, 1e-1, 1.0)  # inner-CV grid for the linear probe's L2 strength
MIXUP_ALPHA = 0.4  # declared before the run (not tuned)
VIEW_DROP_P = 0.5  # share of training locations whose views are randomly thinned to 1-3 (declared)


def primary_point_mode() -> str:
    """The point mode scripts/train_default.sh trains with (falls back to TrainConfig's default)."""
    script = (ROOT / "scripts" / "train_default.sh").read_text()
    found = re.search(r"--point-mode\s+(\S+)", script)
    return found.group(1) if found else DEFAULT.point_mode


# ----------------------------------------------------------------------------------------- feature sets
@dataclasses.dataclass
class FeatureSet:
    """Per-view features (N, V, D) of every sample location, rows in read_locations order.

    blocks: widths of concatenated blocks; blocks after the first are rescaled (from training rows only) to
    the first block's mean per-view L2 norm, so no block dominates the linear heads by scale alone.
    """

    feats: torch.Tensor
    mask: torch.Tensor
    backbone: str = "tf_efficientnet_lite0"
    blocks: tuple = ()


def _gem(x: np.ndarray, axis: int, p: float = 3.0) -> np.ndarray:
    return (np.clip(x, 1e-6, None) ** p).mean(axis) ** (1.0 / p)


def feature_set(name: str) -> FeatureSet:
    """Named feature set built from the stored variants."""
    base = load("lite0_224")
    mask = torch.from_numpy(base["mask"])

    def fs(arr, backbone="tf_efficientnet_lite0", blocks=()):
        return FeatureSet(
            torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), mask, backbone, blocks
        )

    if name == "lite0":
        return fs(base["final"])
    tiled = re.fullmatch(r"tiles([23])_(mean|max|gem)", name)
    if tiled:
        crops = np.concatenate([base["final"][:, :, None], load(f"lite0_tiles{tiled[1]}")["tiles"]], 2)
        pool = {"mean": lambda a: a.mean(2), "max": lambda a: a.max(2), "gem": lambda a: _gem(a, 2)}[tiled[2]]
        return fs(pool(crops))
    if name in ("lite0_320", "lite0_448"):
        return fs(load(name)["final"])
    if name == "multilayer":
        d = base["final"].shape[-1]
        return fs(
            np.concatenate([base["final"], base["stage_mean"]], -1), blocks=(d, base["stage_mean"].shape[-1])
        )
    if name == "multilayer_meanstd":
        d, w = base["final"].shape[-1], base["stage_mean"].shape[-1]
        return fs(
            np.concatenate([base["final"], base["stage_mean"], base["stage_std"]], -1), blocks=(d, w, w)
        )
    if name == "lite1":
        return fs(load("lite1_240")["final"], "tf_efficientnet_lite1")
    if name == "lite2":
        return fs(load("lite2_260")["final"], "tf_efficientnet_lite2")
    if name == "lite012_concat":
        parts = [base["final"], load("lite1_240")["final"], load("lite2_260")["final"]]
        return fs(np.concatenate(parts, -1), blocks=tuple(p.shape[-1] for p in parts))
    raise KeyError(name)


# ----------------------------------------------------------------------------------------- heads
class Context:
    """The sample, its folds and feature sets (loaded lazily)."""

    def __init__(self):
        frame = sample_frame()
        self.frame = frame
        self.row = {u: i for i, u in enumerate(frame["uuid"])}
        self.folds = kfold_splits(frame["uuid"], k=K, seed=SEED)
        self.prior_lat, self.prior_lon = geo.load_points_csv(PRIOR)
        self._sets: dict[str, FeatureSet] = {}

    def features(self, name: str) -> FeatureSet:
        if name not in self._sets:
            self._sets[name] = feature_set(name)
            assert list(load("lite0_224")["uuids"]) == list(self.frame["uuid"])
        return self._sets[name]

    def index(self, ids) -> np.ndarray:
        return np.array([self.row[u] for u in ids])


def _block_scaled(fs: FeatureSet, train_idx: np.ndarray) -> torch.Tensor:
    """fs.feats with blocks 2.. rescaled to block 1's mean per-view norm on the training rows."""
    if len(fs.blocks) < 2:
        return fs.feats
    m = fs.mask[train_idx]
    parts, ref = [], None
    for block in torch.split(fs.feats, list(fs.blocks), dim=-1):
        norm = block[train_idx][m].norm(dim=-1).mean()
        ref = norm if ref is None else ref
        parts.append(block * (ref / norm.clamp_min(1e-12)))
    return torch.cat(parts, -1)


def _thin_views(mask: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """With probability p per row keep a random proper non-empty subset (1..n-1) of the present views."""
    mask = mask.clone()
    for b in range(len(mask)):
        present = torch.nonzero(mask[b]).flatten()
        if len(present) < 2 or torch.rand((), generator=gen) >= p:
            continue
        k = int(torch.randint(1, len(present), (), generator=gen))
        keep = present[torch.randperm(len(present), generator=gen)[:k]]
        mask[b] = False
        mask[b, keep] = True
    return mask


def fit(ctx: Context, fs: FeatureSet, train_ids, cfg=DEFAULT, mixup: float = 0.0, view_drop: float = 0.0):
    """Train cfg's heads on cached features of train_ids for cfg.max_epochs (last weights), as fit_heads does.

    Returns (task in eval mode, model_config, features used (N, V, D) after block scaling).
    """
    cfg = dataclasses.replace(cfg, backbone=fs.backbone).validate()
    dm = GeoDataModule(SAMPLE, cfg, prior_csv=PRIOR, frame=ctx.frame, train_uuids=train_ids, val_uuids=[])
    base = dm.location_dataset("train")
    assert not base.hflip  # multi-task with a heading head: no mirroring, so no mirrored features needed
    idx = ctx.index(dm.frames["train"]["uuid"])
    feats = _block_scaled(fs, idx)
    dataset = emb.CachedLocationDataset(base, feats[idx][:, None], fs.mask[idx])
    model_config = dm.model_config()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    # "none": same RNG draws as the offline backbone (random init, then a weight copy); only heads are used
    task = GeoTask(model_config.to_dict(), cfg.to_dict(), "none")
    dim = feats.shape[-1]
    if dim != task.model.backbone.num_features:  # wider features (concatenations): heads of that width
        torch.manual_seed(cfg.seed)
        task.model.heads = torch.nn.ModuleDict({t: get_head(t)(model_config, dim, dim) for t in cfg.tasks})
    opt_cfg = task.configure_optimizers()
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True)
    gen = torch.Generator().manual_seed(
        cfg.seed + 1
    )  # augmentation draws; the shuffle order stays the default's
    rng = np.random.default_rng(cfg.seed + 2)  # mixup weights
    task.train()
    for _ in range(cfg.max_epochs):
        for batch in loader:
            if view_drop > 0:
                batch["view_mask"] = _thin_views(batch["view_mask"], view_drop, gen)
                batch["heading"] = batch["heading"].masked_fill(~batch["view_mask"], float("nan"))
            if mixup <= 0:
                parts = task.compute_losses(task.forward_batch(batch), batch)
                loss = sum(cfg.task_weights.get(k, 1.0) * v for k, v in parts.items())
            else:
                lam = float(rng.beta(mixup, mixup))
                perm = torch.randperm(len(batch["feats"]), generator=gen)
                other = {k: (v[perm] if torch.is_tensor(v) else v) for k, v in batch.items()}
                mask = batch["view_mask"] & other["view_mask"]
                mixed = lam * batch["feats"] + (1 - lam) * other["feats"]
                out = task.model.forward_features(mixed, mask)
                loss = 0.0
                for weight, target in ((lam, batch), (1 - lam, other)):
                    target = {**target, "heading": target["heading"].masked_fill(~mask, float("nan"))}
                    parts = task.compute_losses(out, target)
                    loss = loss + weight * sum(cfg.task_weights.get(k, 1.0) * v for k, v in parts.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    return task.eval(), model_config, feats


@torch.inference_mode()
def head_outputs(task: GeoTask, feats: torch.Tensor, mask: torch.Tensor) -> dict[str, np.ndarray]:
    """Raw head outputs as numpy: geocell/region LOGITS, heading (B, V, 2)."""
    return {k: v.double().numpy() for k, v in task.model.forward_features(feats, mask).items()}


def softmax(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = z / temperature
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def prior_counts(readout: Readout, ctx: Context) -> np.ndarray:
    """(C,) prior points (lumen-coords.csv) falling in each cell of this model's cell set."""
    return np.bincount(readout.cells.assign(ctx.prior_lat, ctx.prior_lon), minlength=len(readout.cells))


def with_prior(logits: np.ndarray, counts: np.ndarray, beta: float, temperature: float) -> np.ndarray:
    """p ∝ softmax(logits / T) * (count + 1)^beta, rows normalised."""
    p = softmax(logits, temperature) * (counts + 1.0)[None] ** beta
    return p / p.sum(1, keepdims=True)


# ----------------------------------------------------------------------------------------- scoring
def heading_degrees(out: dict, mask: np.ndarray) -> np.ndarray:
    """(B, V) predicted heading degrees, NaN where the view is missing."""
    deg = np.degrees(np.arctan2(out["heading"][..., 0], out["heading"][..., 1])) % 360.0
    deg[~mask] = np.nan
    return deg


def record(ctx: Context, ids, readout: Readout, probs: dict, heading: np.ndarray | None) -> dict:
    """Per-location lat/lon under every point mode, county prediction, per-view heading degrees."""
    rec = {"uuid": list(ids)}
    for mode in POINT_MODES:
        lat, lon, county_p = readout.points(probs, mode)
        rec[f"lat_{mode}"], rec[f"lon_{mode}"] = lat.tolist(), lon.tolist()
    rec["county"] = [readout.codes[j] for j in county_p.argmax(1)]
    rec["heading"] = None if heading is None else np.where(np.isnan(heading), -1.0, heading).tolist()
    return rec


def merge_records(recs: list[dict]) -> dict:
    out = {}
    for key in recs[0]:
        out[key] = None if recs[0][key] is None else sum((r[key] for r in recs), [])
    return out


def score(ctx: Context, rec: dict, mode: str) -> dict[str, np.ndarray]:
    """Per-location error_km, county correct (bool), heading MAAE over present views (NaN without heading)."""
    truth = ctx.frame.set_index("uuid").loc[rec["uuid"]]
    lat, lon = truth["latitude"].to_numpy(float), truth["longitude"].to_numpy(float)
    err = geo.haversine_km(lat, lon, np.array(rec[f"lat_{mode}"]), np.array(rec[f"lon_{mode}"]))
    codes = np.array([geo.COUNTY_CODES[c] if c >= 0 else "" for c in geo.county_index(lat, lon)])
    county = codes == np.array(rec["county"])
    heading = np.full(len(lat), np.nan)
    if rec["heading"] is not None:
        h = np.array(rec["heading"], dtype=float)
        h[h < 0] = np.nan
        e = angular_error_deg(h, np.array(VIEW_HEADINGS, float)[None])
        heading = np.nanmean(e, 1)
    return {"error_km": err, "county": county, "heading": heading}


# ----------------------------------------------------------------------------------------- methods
def heads_method(ctx: Context, fs_name: str, cfg=DEFAULT, **kw):
    """Outer CV of the default heads on one feature set; also returns the fitted pieces per fold."""
    fs = ctx.features(fs_name)
    recs, fitted = [], []
    for tr, te in ctx.folds:
        task, mc, feats = fit(ctx, fs, tr, cfg, **kw)
        idx = ctx.index(te)
        out = head_outputs(task, feats[idx], fs.mask[idx])
        readout = Readout(mc)
        probs = {"geocell": softmax(out["geocell"]), "region": softmax(out["region"])}
        recs.append(record(ctx, te, readout, probs, heading_degrees(out, fs.mask[idx].numpy())))
        fitted.append((task, mc, feats, out, readout))
    return merge_records(recs), fitted


def inner_folds(train_ids) -> list[tuple[list[str], list[str]]]:
    return kfold_splits(train_ids, k=4, seed=SEED + 1)


def choose(scores: dict) -> tuple:
    """Grid point with the least inner-CV mean km; the first listed wins ties (the default first)."""
    return min(scores, key=lambda k: (round(scores[k], 6), list(scores).index(k)))


def inner_mean_km(ctx: Context, ids, readout: Readout, probs: dict, mode: str) -> np.ndarray:
    lat, lon, _ = readout.points(probs, mode)
    truth = ctx.frame.set_index("uuid").loc[list(ids)]
    return geo.haversine_km(truth["latitude"].to_numpy(float), truth["longitude"].to_numpy(float), lat, lon)


def prior_method(ctx: Context, default_fitted, mode: str, betas=BETAS) -> tuple[dict, list]:
    """Geographic prior p ∝ p_head^(1/T) * prior^beta; beta and T by inner 4-fold CV per outer fold."""
    fs = ctx.features("lite0")
    recs, chosen = [], []
    for (tr, te), (task, mc, feats, out, readout) in zip(ctx.folds, default_fitted):
        grid = {(b, t): [] for b in betas for t in TEMPS}
        for itr, ite in inner_folds(tr):
            itask, imc, ifeats = fit(ctx, fs, itr)
            iidx = ctx.index(ite)
            iout = head_outputs(itask, ifeats[iidx], fs.mask[iidx])
            ireadout = Readout(imc)
            counts = prior_counts(ireadout, ctx)
            for (b, t), errs in grid.items():
                probs = {
                    "geocell": with_prior(iout["geocell"], counts, b, t),
                    "region": softmax(iout["region"]),
                }
                errs.append(inner_mean_km(ctx, ite, ireadout, probs, mode))
        best = choose({k: float(np.concatenate(v).mean()) for k, v in grid.items()})
        chosen.append({"beta": best[0], "temperature": best[1]})
        probs = {
            "geocell": with_prior(out["geocell"], prior_counts(readout, ctx), *best),
            "region": softmax(out["region"]),
        }
        idx = ctx.index(te)
        recs.append(record(ctx, te, readout, probs, heading_degrees(out, fs.mask[idx].numpy())))
    return merge_records(recs), chosen


def fixed_prior_method(ctx: Context, default_fitted, beta: float) -> dict:
    """Prior with a declared beta and T = 1 (no tuning)."""
    fs = ctx.features("lite0")
    recs = []
    for (tr, te), (task, mc, feats, out, readout) in zip(ctx.folds, default_fitted):
        probs = {
            "geocell": with_prior(out["geocell"], prior_counts(readout, ctx), beta, 1.0),
            "region": softmax(out["region"]),
        }
        recs.append(record(ctx, te, readout, probs, heading_degrees(out, fs.mask[ctx.index(te)].numpy())))
    return merge_records(recs)


def tau_method(ctx: Context, mode: str) -> tuple[dict, list]:
    """Haversine smoothing tau chosen by inner 4-fold CV from TAUS, then the outer fit with it."""
    fs = ctx.features("lite0")
    recs, chosen = [], []
    for tr, te in ctx.folds:
        grid = {tau: [] for tau in (75.0, *[t for t in TAUS if t != 75.0])}
        for itr, ite in inner_folds(tr):
            for tau, errs in grid.items():
                itask, imc, ifeats = fit(ctx, fs, itr, dataclasses.replace(DEFAULT, haversine_tau_km=tau))
                iidx = ctx.index(ite)
                iout = head_outputs(itask, ifeats[iidx], fs.mask[iidx])
                probs = {"geocell": softmax(iout["geocell"]), "region": softmax(iout["region"])}
                errs.append(inner_mean_km(ctx, ite, Readout(imc), probs, mode))
        tau = choose({k: float(np.concatenate(v).mean()) for k, v in grid.items()})
        chosen.append(tau)
        task, mc, feats = fit(ctx, fs, tr, dataclasses.replace(DEFAULT, haversine_tau_km=tau))
        idx = ctx.index(te)
        out = head_outputs(task, feats[idx], fs.mask[idx])
        probs = {"geocell": softmax(out["geocell"]), "region": softmax(out["region"])}
        recs.append(record(ctx, te, Readout(mc), probs, heading_degrees(out, fs.mask[idx].numpy())))
    return merge_records(recs), chosen


def _pooled_std(fs: FeatureSet, idx, mu=None, sd=None):
    f, m = fs.feats[idx].double(), fs.mask[idx].double()
    x = (f * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1)
    if mu is None:
        mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    return (x - mu) / sd, mu, sd


def lbfgs_softmax(x: torch.Tensor, q: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on soft targets q (N, C): min CE + l2 * ||W||^2, full-batch L-BFGS."""
    w = torch.zeros(x.shape[1], q.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros(q.shape[1], dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=200, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -(q * F.log_softmax(x @ w + b, 1)).sum(1).mean() + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _probe_targets(ctx: Context, readout: Readout, ids, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    truth = ctx.frame.set_index("uuid").loc[list(ids)]
    lat, lon = truth["latitude"].to_numpy(float), truth["longitude"].to_numpy(float)
    cell = torch.from_numpy(readout.cells.assign(lat, lon))
    dist = torch.from_numpy(
        geo.haversine_km(lat[:, None], lon[:, None], readout.cell_lat[None], readout.cell_lon[None])
    )
    q_cell = haversine_soft_targets(dist, cell, tau).double()
    county = geo.county_index(lat, lon, tolerance_km=np.inf)
    col = [readout.codes.index(geo.COUNTY_CODES[c]) for c in county]
    q_region = torch.eye(len(readout.codes), dtype=torch.float64)[col]
    return q_cell, q_region


def probe_method(ctx: Context, default_fitted, mode: str) -> tuple[dict, list]:
    """Linear probe: L-BFGS logistic regression (cells with haversine soft targets, counties) on standardised
    mean-fused lite0 features; L2 by inner 4-fold CV (the outer fold's cells, so nothing held out is used)."""
    fs = ctx.features("lite0")
    recs, chosen = [], []
    for (tr, te), (_, _, _, _, readout) in zip(ctx.folds, default_fitted):
        grid = {l2: [] for l2 in L2S}
        for itr, ite in inner_folds(tr):
            x, mu, sd = _pooled_std(fs, ctx.index(itr))
            xt, _, _ = _pooled_std(fs, ctx.index(ite), mu, sd)
            qc, qr = _probe_targets(ctx, readout, itr, DEFAULT.haversine_tau_km)
            for l2, errs in grid.items():
                wc, bc = lbfgs_softmax(x, qc, l2)
                wr, br = lbfgs_softmax(x, qr, l2)
                probs = {
                    "geocell": softmax((xt @ wc + bc).numpy()),
                    "region": softmax((xt @ wr + br).numpy()),
                }
                errs.append(inner_mean_km(ctx, ite, readout, probs, mode))
        l2 = choose({k: float(np.concatenate(v).mean()) for k, v in grid.items()})
        chosen.append(l2)
        x, mu, sd = _pooled_std(fs, ctx.index(tr))
        xt, _, _ = _pooled_std(fs, ctx.index(te), mu, sd)
        qc, qr = _probe_targets(ctx, readout, tr, DEFAULT.haversine_tau_km)
        wc, bc = lbfgs_softmax(x, qc, l2)
        wr, br = lbfgs_softmax(x, qr, l2)
        probs = {"geocell": softmax((xt @ wc + bc).numpy()), "region": softmax((xt @ wr + br).numpy())}
        recs.append(record(ctx, te, readout, probs, None))
    return merge_records(recs), chosen


def ensemble_avg_method(ctx: Context, fitted_by_backbone: list) -> dict:
    """Mean of the lite0, lite1 and lite2 heads' probabilities (same cells: same points + prior)."""
    recs = []
    for f, (tr, te) in enumerate(ctx.folds):
        parts = [fb[f] for fb in fitted_by_backbone]
        readout = parts[0][4]
        for p in parts[1:]:
            assert np.allclose(p[4].cell_lat, readout.cell_lat)
        probs = {key: np.mean([softmax(p[3][key]) for p in parts], 0) for key in ("geocell", "region")}
        sincos = np.mean(
            [p[3]["heading"] / np.linalg.norm(p[3]["heading"], axis=-1, keepdims=True) for p in parts], 0
        )
        mask = ctx.features("lite0").mask[ctx.index(te)].numpy()
        recs.append(record(ctx, te, readout, probs, heading_degrees({"heading": sincos}, mask)))
    return merge_records(recs)


def views_breakdown(ctx: Context, fitted, fs_name: str, mode: str) -> dict:
    """Mean km per location over every subset of n present views, n = 1..4 (per-location arrays)."""
    fs = ctx.features(fs_name)
    by_n = {n: [] for n in range(1, 5)}
    for (tr, te), (task, mc, feats, _, readout) in zip(ctx.folds, fitted):
        idx = ctx.index(te)
        for n in by_n:
            errs = []
            for subset in itertools.combinations(range(4), n):
                mask = fs.mask[idx].clone()
                keep = torch.zeros(4, dtype=torch.bool)
                keep[list(subset)] = True
                mask &= keep
                out = head_outputs(task, feats[idx], mask)
                probs = {"geocell": softmax(out["geocell"]), "region": softmax(out["region"])}
                errs.append(inner_mean_km(ctx, te, readout, probs, mode))
            by_n[n].append(np.mean(errs, 0))
    return {n: np.concatenate(v).round(3).tolist() for n, v in by_n.items()}


# ----------------------------------------------------------------------------------------- cost
@torch.inference_mode()
def cost(repeats: int = 7) -> dict:
    """Backbone forward time of one location (4 views) per feature set, interleaved with lite0 @ 224."""
    torch.set_num_threads(1)
    models = {
        b: create_backbone(b, "offline").eval()
        for b in ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
    }
    l0, l1, l2 = models.values()
    x = {s: torch.randn(4, 3, s, s) for s in (224, 240, 260, 320, 448, 672)}
    subjects = {
        "lite0": lambda: l0(x[224]),
        "tiles2": lambda: (l0(x[224]), l0(tiles(x[448], 2))),
        "tiles3": lambda: (l0(x[224]), l0(tiles(x[672], 3))),
        "lite0_320": lambda: l0(x[320]),
        "lite0_448": lambda: l0(x[448]),
        "lite1": lambda: l1(x[240]),
        "lite2": lambda: l2(x[260]),
        "lite012": lambda: (l0(x[224]), l1(x[240]), l2(x[260])),
    }
    for f in subjects.values():
        f()
    ratios = {}
    for name, f in subjects.items():
        r = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subjects["lite0"]()
            t1 = time.perf_counter()
            f()
            t2 = time.perf_counter()
            r.append((t2 - t1) / (t1 - t0))
        ratios[name] = round(float(np.median(r)), 2)
        print(f"cost {name}: forward ratio {ratios[name]}", flush=True)
    sizes = {b: round(sum(p.numel() for p in m.parameters()) * 4 / 1e6, 1) for b, m in models.items()}
    fill = {
        v: round(float(load(v)["seconds"]), 1) for v in VARIANTS if (WORK / "feats" / f"{v}.npz").is_file()
    }
    return {"forward_ratio_vs_lite0": ratios, "backbone_mb": sizes, "fill_seconds": fill}


# ----------------------------------------------------------------------------------------- driver
METHOD_ORDER = [
    "default",
    "tiles 2x2 + whole (mean)",
    "tiles 2x2 + whole (max)",
    "tiles 2x2 + whole (GeM)",
    "tiles 3x3 + whole (mean)",
    "tiles 3x3 + whole (max)",
    "tiles 3x3 + whole (GeM)",
    "input 320 px",
    "input 448 px",
    "multi-layer (final + stage means)",
    "multi-layer (final + stage means + stds)",
    "lite1",
    "lite2",
    "lite0+lite1+lite2 concat",
    "lite0+lite1+lite2 averaged predictions",
    "geo prior beta=1",
    "geo prior (beta and T by inner CV)",
    "temperature only (T by inner CV; beta=0)",
    "haversine tau 150 km (fixed)",
    "haversine tau 300 km (fixed)",
    "haversine tau by inner CV",
    f"embedding mixup alpha={MIXUP_ALPHA:g}",
    "linear probe (L2 by inner CV)",
    f"view dropout p={VIEW_DROP_P:g}",
    "views: default",
    f"views: view dropout p={VIEW_DROP_P:g}",
]


def method_path(name: str) -> Path:
    return METHODS_DIR / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.json"


def kept_results() -> dict:
    """Every method whose held-out predictions are kept under runs/ (no fitting), in METHOD_ORDER."""
    out = {}
    for name in METHOD_ORDER:
        path = method_path(name)
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("code_version") == CODE_VERSION:
                out[name] = saved
    return out


def _cached(name: str, refit: bool, compute):
    path = method_path(name)
    if path.is_file() and not refit:
        saved = json.loads(path.read_text())
        if saved.get("code_version") == CODE_VERSION:
            return saved
    t0 = time.perf_counter()
    saved = {**compute(), "seconds": round(time.perf_counter() - t0, 1), "code_version": CODE_VERSION}
    METHODS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(saved))
    tmp.replace(path)
    print(f"{name}: {saved['seconds']:.0f} s", flush=True)
    return saved


def run_methods(ctx: Context, mode: str, only: set, refit: bool) -> dict:
    results: dict[str, dict] = {}
    fitted: dict[str, list] = {}

    def want(name):
        return not only or name in only

    def heads(name, fs_name, cfg=DEFAULT, keep=False, **kw):
        """keep: later methods reuse the fitted heads: fit them (deterministic) even if kept on disk."""
        if keep:
            t0 = time.perf_counter()
            rec, fitted[name] = heads_method(ctx, fs_name, cfg, **kw)
            seconds = round(time.perf_counter() - t0, 1)
            results[name] = {**_cached(name, refit, lambda: {"rec": rec}), "seconds": seconds}
        elif want(name):
            results[name] = _cached(name, refit, lambda: {"rec": heads_method(ctx, fs_name, cfg, **kw)[0]})

    need_default = any(
        want(n)
        for n in (
            "default",
            "geo prior (beta and T by inner CV)",
            "geo prior beta=1",
            "temperature only (T by inner CV; beta=0)",
            "linear probe (L2 by inner CV)",
            "views: default",
            "lite0+lite1+lite2 averaged predictions",
        )
    )
    if need_default:
        heads("default", "lite0", keep=True)
    for name, fs_name in (
        ("tiles 2x2 + whole (mean)", "tiles2_mean"),
        ("tiles 2x2 + whole (max)", "tiles2_max"),
        ("tiles 2x2 + whole (GeM)", "tiles2_gem"),
        ("tiles 3x3 + whole (mean)", "tiles3_mean"),
        ("tiles 3x3 + whole (max)", "tiles3_max"),
        ("tiles 3x3 + whole (GeM)", "tiles3_gem"),
        ("input 320 px", "lite0_320"),
        ("input 448 px", "lite0_448"),
        ("multi-layer (final + stage means)", "multilayer"),
        ("multi-layer (final + stage means + stds)", "multilayer_meanstd"),
        ("lite0+lite1+lite2 concat", "lite012_concat"),
    ):
        if want(name):
            try:
                heads(name, fs_name)
            except FileNotFoundError as err:
                print(f"{name}: skipped ({err})", flush=True)
    ens = "lite0+lite1+lite2 averaged predictions"
    for name, fs_name in (("lite1", "lite1"), ("lite2", "lite2")):
        if want(name) or want(ens):
            try:
                heads(name, fs_name, keep=want(ens))
            except FileNotFoundError as err:
                print(f"{name}: skipped ({err})", flush=True)
    if want(ens) and all(n in fitted for n in ("default", "lite1", "lite2")):
        results[ens] = _cached(
            ens,
            refit,
            lambda: {"rec": ensemble_avg_method(ctx, [fitted["default"], fitted["lite1"], fitted["lite2"]])},
        )
    for tau in (150.0, 300.0):
        heads(
            f"haversine tau {tau:g} km (fixed)", "lite0", dataclasses.replace(DEFAULT, haversine_tau_km=tau)
        )
    tuned = {  # name -> method returning (held-out records, values chosen per outer fold)
        "haversine tau by inner CV": lambda: tau_method(ctx, mode),
        "geo prior (beta and T by inner CV)": lambda: prior_method(ctx, fitted["default"], mode),
        "temperature only (T by inner CV; beta=0)": lambda: prior_method(
            ctx, fitted["default"], mode, (0.0,)
        ),
        "linear probe (L2 by inner CV)": lambda: probe_method(ctx, fitted["default"], mode),
    }
    for name, method in tuned.items():
        if want(name):
            results[name] = _cached(name, refit, lambda method=method: dict(zip(("rec", "chosen"), method())))
    if want("geo prior beta=1"):
        results["geo prior beta=1"] = _cached(
            "geo prior beta=1", refit, lambda: {"rec": fixed_prior_method(ctx, fitted["default"], 1.0)}
        )
    heads(f"embedding mixup alpha={MIXUP_ALPHA:g}", "lite0", mixup=MIXUP_ALPHA)
    vd = f"view dropout p={VIEW_DROP_P:g}"
    if want(vd) or want("views: default"):
        heads(vd, "lite0", keep=True, view_drop=VIEW_DROP_P)
        for name, key in (("default", "default"), (vd, vd)):
            results[f"views: {name}"] = _cached(
                f"views: {name}",
                refit,
                lambda key=key: {"by_views": views_breakdown(ctx, fitted[key], "lite0", mode)},
            )
    return results


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = a - b
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def summarise(ctx: Context, results: dict, mode: str) -> dict:
    ref = score(ctx, results["default"]["rec"], mode)
    table = {}
    for name, r in results.items():
        if "rec" not in r:
            continue
        s = score(ctx, r["rec"], mode)
        row = {
            "mean_km": float(s["error_km"].mean()),
            "median_km": float(np.median(s["error_km"])),
            "county_accuracy": float(s["county"].mean()),
            "heading_maae_deg": None if np.isnan(s["heading"]).all() else float(np.nanmean(s["heading"])),
            "errors_km": s["error_km"].round(3).tolist(),
            "seconds": r.get("seconds"),
        }
        if "chosen" in r:
            row["chosen_per_fold"] = r["chosen"]
        if name != "default":
            row["delta_km"], row["se_km"] = paired(s["error_km"], ref["error_km"])
            if row["heading_maae_deg"] is not None:
                row["heading_delta_deg"], row["heading_se_deg"] = paired(s["heading"], ref["heading"])
        row["other_point_modes"] = {
            m: {
                "mean_km": float(score(ctx, r["rec"], m)["error_km"].mean()),
                **dict(
                    zip(
                        ("delta_km", "se_km"),
                        paired(
                            score(ctx, r["rec"], m)["error_km"],
                            score(ctx, results["default"]["rec"], m)["error_km"],
                        ),
                    )
                ),
            }
            for m in POINT_MODES
            if m != mode
        }
        table[name] = row
    h = ref["heading"]
    table["default"]["heading_vs_chance"] = {
        "delta_deg": float(h.mean() - 90.0),
        "se_deg": float(h.std(ddof=1) / np.sqrt(len(h))),
    }
    views = {
        name: {n: float(np.mean(v)) for n, v in r["by_views"].items()}
        for name, r in results.items()
        if "by_views" in r
    }
    vd = f"views: view dropout p={VIEW_DROP_P:g}"
    if "views: default" in results and vd in results:
        a, b = results[vd]["by_views"], results["views: default"]["by_views"]
        views["paired: view dropout - default"] = {
            n: dict(zip(("delta_km", "se_km"), paired(np.array(a[n]), np.array(b[n])))) for n in a
        }
    return {"point_mode": mode, "methods": table, "views": views}


# method -> the cost() subject its features need ("lite0": today's forward; head-only ideas reuse it)
COST_SUBJECT = {
    "tiles 2x2": "tiles2",
    "tiles 3x3": "tiles3",
    "input 320 px": "lite0_320",
    "input 448 px": "lite0_448",
    "lite1": "lite1",
    "lite2": "lite2",
    "lite0+lite1+lite2": "lite012",
}


def cost_ratio(name: str, costs: dict | None) -> str:
    """Backbone forward time of one 4-view location vs today's (≈ the /predict and cache-fill ratio)."""
    subject = next((v for k, v in COST_SUBJECT.items() if name.startswith(k)), "lite0")
    if subject == "lite0":
        return "1.0"
    return f"{costs['forward_ratio_vs_lite0'][subject]:.1f}" if costs else "?"


def verdict(delta: float, se: float) -> str:
    """Adopt only a win by more than 2 standard errors."""
    if -delta > 2 * se:
        return "wins > 2 s.e."
    return "within 2 s.e." if abs(delta) <= 2 * se else "worse > 2 s.e."


def markdown(summary: dict, costs: dict | None) -> str:
    """The results table: km, county, heading, paired deltas (s.e.) vs default, km under the other modes."""
    others = [m for m in POINT_MODES if m != summary.get("point_mode")]
    lines = [
        "| idea | mean km | median km | county acc | heading MAAE | Δ mean km (s.e.) | Δ heading ° (s.e.) "
        "| verdict | " + " | ".join(f"Δ km {m} (s.e.)" for m in others) + " | forward × | fit s |",
        "|---" * (10 + len(others)) + "|",
    ]
    for name, r in summary["methods"].items():
        delta, hdelta, verdict_ = "–", "–", "reference"
        if name != "default":
            delta, verdict_ = f"{r['delta_km']:+.1f} ({r['se_km']:.1f})", verdict(r["delta_km"], r["se_km"])
            if "heading_delta_deg" in r:
                hdelta = f"{r['heading_delta_deg']:+.1f} ({r['heading_se_deg']:.1f})"
        h = f"{r['heading_maae_deg']:.1f}°" if r["heading_maae_deg"] is not None else "–"
        alt = [
            f"{r['other_point_modes'][m]['delta_km']:+.1f} ({r['other_point_modes'][m]['se_km']:.1f})"
            if name != "default"
            else f"{r['other_point_modes'][m]['mean_km']:.1f} km"
            for m in others
        ]
        lines.append(
            f"| {name} | {r['mean_km']:.1f} | {r['median_km']:.1f} | {100 * r['county_accuracy']:.0f}% "
            f"| {h} | {delta} | {hdelta} | {verdict_} | "
            + " | ".join(alt)
            + f" | {cost_ratio(name, costs)} | {r['seconds']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated method names (default: all)")
    parser.add_argument("--refit", action="store_true", help="ignore per-method predictions kept under runs/")
    parser.add_argument("--cost", action="store_true", help="also time the backbone forward per feature set")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--report-only", action="store_true", help="table from the kept predictions, no fitting"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    mode = primary_point_mode()
    ctx = Context()
    if args.report_only:
        results = kept_results()
    else:
        results = run_methods(ctx, mode, set(filter(None, args.only.split(","))), args.refit)
        results = {n: results[n] for n in METHOD_ORDER if n in results}
    out_path = RESULTS_DIR / "accuracy_ideas.json"
    previous = json.loads(out_path.read_text()) if out_path.is_file() else {}
    costs = cost() if args.cost else previous.get("cost")
    summary = summarise(ctx, results, mode)
    report = {
        "protocol": f"{K}-fold CV by location (kfold_splits seed {SEED}) on {SAMPLE.name}; inner 4-fold CV "
        f"(seed {SEED + 1}) inside each outer training fold for tuned values; fixed 50 epochs, last weights",
        "point_mode": mode,
        "point_modes_available": list(POINT_MODES),
        "seconds": round(time.perf_counter() - start, 1),
        "summary": summary,
        "cost": costs,
    }
    out_path.write_text(json.dumps(report, indent=1))
    print(f"point mode: {mode}")
    print(markdown(summary, costs))
    print(json.dumps(summary["views"], indent=1))


if __name__ == "__main__":
    main()
