"""5-fold cross-validation by location of every method on the real sample, on the SAME folds, in one run.

Honest protocol: folds from ``geodemo.dataset.kfold_splits(seed=0)``; everything a method learns (cells and
their weighted centroids, x/y statistics, the mean coordinate, kNN's k, head weights) comes from the four
training folds only; heads train a FIXED number of epochs and keep the last weights (no early stopping or
best-epoch choice on the held-out fold). Held-out predictions go through the shared point rule
(``geodemo.readout.Readout``), fed with cached backbone features instead of decoded images; ``--verify``
checks once that this equals ``training.evaluate.evaluate`` (Predictor on the image files) for one fold.

Frozen-backbone heads train on the embedding cache (training.cache) with the same GeoTask losses, AdamW and
cosine schedule as ``python -m training train``; the unfrozen ablation runs the real ``training.fit.train``
on images (no cache) on a small, documented budget.

Usage (repo root):
    .venv/bin/python benchmarks/research/cv_accuracy.py [--verify] [--skip-unfrozen] [--merge FILE.json]
Writes benchmarks/research/results/cv_accuracy.json, cv_cdf.png; prints a markdown table. The slow unfrozen
ablation can run as its own process on the same (deterministic) folds and be merged:
    .venv/bin/python benchmarks/research/cv_accuracy.py --only "unfrozen backbone" --out cv_unfrozen.json
    .venv/bin/python benchmarks/research/cv_accuracy.py --verify --skip-unfrozen --merge cv_unfrozen.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: geodemo, training

from geodemo import geo  # noqa: E402
from geodemo.backbones import create_backbone, get_backbone_spec  # noqa: E402
from geodemo.cells import build_cells  # noqa: E402
from geodemo.checkpoint import save_checkpoint  # noqa: E402
from geodemo.data import VIEW_HEADINGS, read_locations  # noqa: E402
from geodemo.dataset import kfold_splits  # noqa: E402
from geodemo.paths import PRIOR_CSV, find_sample  # noqa: E402
from geodemo.predict import Predictor  # noqa: E402
from training import cache as emb  # noqa: E402
from training import fill  # noqa: E402
from training.config import MULTI_TASKS, TrainConfig  # noqa: E402
from training.datamodule import GeoDataModule  # noqa: E402
from training.metrics import angular_error_deg, evaluation_results  # noqa: E402
from training.tasks import GeoTask  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "benchmarks" / "research" / "results"
SAMPLE = find_sample() or ROOT / "data" / "lumen-sample"  # $GEODEMO_SAMPLE, data/, ../shared/data
PRIOR = PRIOR_CSV  # the shipped prior
K, SEED = 5, 0

# The default recipe (what scripts/train_default.sh trains); ablations switch ONE thing off/over.
DEFAULT = TrainConfig(
    tasks=list(MULTI_TASKS),
    backbone="tf_efficientnet_lite0",
    fusion="mean",
    cells="grid",
    grid_spacing_km=50.0,
    weighted_centroids=True,
    point_mode="min_expected_km",  # chosen by research/point_mode.py (paired vs the old weighted_mean)
    haversine_tau_km=75.0,
    tta_flip=False,
    max_epochs=50,
    batch_size=16,
    lr=1e-3,
    select_best=False,
)
# What scripts/train_default.sh ships: DEFAULT read out at the CV-chosen temperature (point_mode.py). DEFAULT
# itself stays at T = 1 because point_mode.py and accuracy_ideas.py fit their own temperatures on top of it.
SHIPPED = dataclasses.replace(DEFAULT, temperature=0.57)


def ablations(default: TrainConfig) -> dict[str, dict]:
    """Method name -> TrainConfig overrides of the default (one change each)."""
    other_fusions = [f for f in ("concat", "mean", "attention") if f != default.fusion]
    return {
        "default": {},
        "plain centroids": {"weighted_centroids": False},
        "argmax cell": {"point_mode": "argmax"},
        "weighted mean point": {"point_mode": "weighted_mean"},
        "no haversine smoothing": {"haversine_tau_km": 0.0},
        **{f"fusion {f}": {"fusion": f} for f in other_fusions},
        "TTA flip on": {"tta_flip": not default.tta_flip},
        "semantic cells": {"cells": "semantic"},
        "lite2 backbone": {"backbone": "tf_efficientnet_lite2"},
        "geocell head only": {"tasks": ["geocell"]},
        "epochs x0.4": {"max_epochs": max(1, round(default.max_epochs * 0.4))},
        "epochs x2": {"max_epochs": default.max_epochs * 2},
        "competition recipe": {
            "tasks": ["geocell"],
            "fusion": "concat",
            "point_mode": "argmax",
            "haversine_tau_km": 0.0,
            "label_smoothing": 0.0,
            "weighted_centroids": False,
        },
    }


# ----------------------------------------------------------------------------------------- features
def sample_frame() -> pd.DataFrame:
    """The sample's locations with float coordinates: the table every CV script starts from."""
    frame = read_locations(SAMPLE)
    frame[["latitude", "longitude"]] = frame[["latitude", "longitude"]].astype(float)
    return frame


class FeatureBank:
    """Cached per-view embeddings of every sample location for one backbone.

    feats (N, 2, V, D) holds the original and the mirrored panorama; mask (N, V).
    """

    def __init__(self, backbone: str, frame: pd.DataFrame):
        spec = get_backbone_spec(backbone)
        model = create_backbone(backbone, "offline")
        keys = emb.location_keys(
            SAMPLE, frame, backbone, emb.weights_hash(model), spec.image_size, spec.mean, spec.std
        )
        cache = emb.EmbeddingCache()
        # both kinds: the TTA-flip ablation reads the mirrored panorama too
        missing = sum(not all(cache.has(k, kind) for k in d.values() for kind in emb.KINDS) for d in keys)
        if missing:
            from geodemo.model import GeoModel, ModelConfig

            print(f"filling the {backbone} cache for {missing} locations ...", flush=True)
            config = ModelConfig(
                tasks=["region"], backbone=backbone, image_size=spec.image_size, mean=spec.mean, std=spec.std
            )
            geo_model = GeoModel(config, "offline")
            fill.fill_cache(geo_model, SAMPLE, frame, keys, cache, spec.image_size, spec.mean, spec.std)
        self.feats, self.mask = emb.load_features(keys, cache)
        self.row = {u: i for i, u in enumerate(frame["uuid"])}

    def index(self, uuids) -> np.ndarray:
        return np.array([self.row[u] for u in uuids])


# ----------------------------------------------------------------------------------------- heads on the cache
def fit_heads(cfg: TrainConfig, frame: pd.DataFrame, train_ids, bank: FeatureBank) -> tuple[GeoTask, object]:
    """Train the heads of ``cfg`` on cached features of ``train_ids`` for cfg.max_epochs; last weights.

    Same GeoDataModule (cells, stats, targets), GeoTask losses, optimiser and schedule as fit.train.
    """
    cfg.validate()
    dm = GeoDataModule(SAMPLE, cfg, prior_csv=PRIOR, frame=frame, train_uuids=train_ids, val_uuids=[])
    base = dm.location_dataset("train")
    idx = bank.index(dm.frames["train"]["uuid"])
    dataset = emb.CachedLocationDataset(base, bank.feats[idx], bank.mask[idx], hflip=base.hflip)
    model_config = dm.model_config()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    task = GeoTask(model_config.to_dict(), cfg.to_dict(), cfg.weights)
    opt_cfg = task.configure_optimizers()
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True)
    task.train()
    for _ in range(cfg.max_epochs):
        for batch in loader:
            parts = task.compute_losses(task.forward_batch(batch), batch)
            loss = sum(cfg.task_weights.get(k, 1.0) * v for k, v in parts.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    return task.eval(), model_config


@torch.inference_mode()
def head_outputs(task: GeoTask, model_config, ids, bank: FeatureBank) -> dict[str, np.ndarray]:
    """The heads' outputs for ``ids`` as Predictor._forward gives them (probabilities; + mirrored for TTA)."""
    idx = bank.index(ids)
    feats, mask = bank.feats[idx, 0], bank.mask[idx]

    def heads(f, m):
        out = {k: v.float().numpy() for k, v in task.model.forward_features(f, m).items()}
        for key in ("geocell", "region"):
            if key in out:
                z = out[key].astype(np.float64)
                z = np.exp(z - z.max(1, keepdims=True))
                out[key] = z / z.sum(1, keepdims=True)
        return out

    out = heads(feats, mask)
    if model_config.tta_flip:  # as Predictor._forward: average place outputs, headings from the originals
        mirrored = heads(bank.feats[idx, 1][:, emb.MIRROR_VIEWS], mask[:, emb.MIRROR_VIEWS])
        out = {k: (v if k.startswith("heading") else (v + mirrored[k]) / 2) for k, v in out.items()}
    out["view_mask"] = mask.numpy()
    return out


def predict_heads(task: GeoTask, model_config, frame: pd.DataFrame, ids, bank: FeatureBank) -> pd.DataFrame:
    """Held-out rows through Predictor's own point logic, fed with cached features (+ mirrored for TTA)."""
    out = head_outputs(task, model_config, ids, bank)
    predictor = Predictor(task.model, model_config, name="cv")
    r = predictor.readout.read(out)
    table = pd.DataFrame({"uuid": list(ids), "pred_lat": r.lat, "pred_lon": r.lon})
    table["pred_county"] = [predictor.readout.codes[j] for j in r.county]  # the county holding the point
    if "heading" in out:
        degrees = np.degrees(np.arctan2(out["heading"][..., 0], out["heading"][..., 1])) % 360.0
        degrees[~out["view_mask"]] = np.nan
        for v, h in enumerate(VIEW_HEADINGS):
            table[f"pred_heading_{h}"] = degrees[:, v]
    return table


# ----------------------------------------------------------------------------------------- baselines
def _point_table(ids, lat, lon) -> pd.DataFrame:
    lat, lon = np.broadcast_to(lat, (len(ids),)), np.broadcast_to(lon, (len(ids),))
    county = geo.county_index(lat, lon, tolerance_km=np.inf)
    return pd.DataFrame(
        {
            "uuid": list(ids),
            "pred_lat": lat,
            "pred_lon": lon,
            "pred_county": [geo.COUNTY_CODES[c] for c in county],
        }
    )


def mean_coordinate(train: pd.DataFrame, test_ids) -> pd.DataFrame:
    """Mean of the training coordinates, computed in EPSG:3765."""
    stats = geo.XYStats.fit(train["latitude"].to_numpy(float), train["longitude"].to_numpy(float))
    lat, lon = geo.from_3765(stats.mean_x, stats.mean_y)
    return _point_table(test_ids, float(lat), float(lon))


def prior_only(train: pd.DataFrame, test_ids) -> pd.DataFrame:
    """The single weighted cell centroid (grid on training points + prior) with least mean training error."""
    lat, lon = train["latitude"].to_numpy(float), train["longitude"].to_numpy(float)
    prior_lat, prior_lon = geo.load_points_csv(PRIOR)
    cells = build_cells(DEFAULT.cells, lat, lon, DEFAULT.grid_spacing_km, prior_lat, prior_lon)
    clat, clon = cells.centroids(weighted=True)
    best = int(np.argmin(geo.haversine_km(lat[:, None], lon[:, None], clat[None], clon[None]).mean(0)))
    return _point_table(test_ids, float(clat[best]), float(clon[best]))


def pooled_features(bank: FeatureBank, ids) -> np.ndarray:
    """(N, D) L2-normalised masked mean over present views of the plain (not mirrored) embeddings."""
    idx = bank.index(ids)
    f, m = bank.feats[idx, 0].numpy(), bank.mask[idx].numpy().astype(np.float32)
    x = (f * m[..., None]).sum(1) / m.sum(1, keepdims=True).clip(1)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def _knn_xy(sim: np.ndarray, x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    w = np.take_along_axis(sim, top, 1).clip(1e-6)
    return (w * x[top]).sum(1) / w.sum(1), (w * y[top]).sum(1) / w.sum(1)


def knn(train: pd.DataFrame, test_ids, bank: FeatureBank, ks=(1, 3, 5, 10, 20)) -> tuple[pd.DataFrame, int]:
    """Cosine kNN on frozen embeddings; k by leave-one-out on the training folds; similarity-weighted mean."""
    lat, lon = train["latitude"].to_numpy(float), train["longitude"].to_numpy(float)
    x, y = geo.to_3765(lat, lon)
    xtr = pooled_features(bank, train["uuid"])
    loo = xtr @ xtr.T
    np.fill_diagonal(loo, -np.inf)
    errors = {}
    for k in ks:
        px, py = _knn_xy(loo, x, y, min(k, len(x) - 1))
        errors[k] = float(geo.haversine_km(lat, lon, *geo.from_3765(px, py)).mean())
    k = min(errors, key=errors.get)
    px, py = _knn_xy(pooled_features(bank, test_ids) @ xtr.T, x, y, min(k, len(x)))
    return _point_table(test_ids, *geo.from_3765(px, py)), k


# ----------------------------------------------------------------------------------------- scoring
def score(frame: pd.DataFrame, pred: pd.DataFrame) -> pd.DataFrame:
    """Prediction rows -> evaluate()'s per-location table (error_km, counties, heading errors)."""
    truth = frame.set_index("uuid").loc[pred["uuid"]]
    lat, lon = truth["latitude"].to_numpy(float), truth["longitude"].to_numpy(float)
    county = geo.county_index(lat, lon)
    table = pd.DataFrame({"uuid": pred["uuid"].to_numpy(), "true_lat": lat, "true_lon": lon})
    table["pred_lat"], table["pred_lon"] = pred["pred_lat"].to_numpy(), pred["pred_lon"].to_numpy()
    table["error_km"] = geo.haversine_km(lat, lon, table["pred_lat"], table["pred_lon"])
    table["true_county"] = [geo.COUNTY_CODES[c] if c >= 0 else "" for c in county]
    table["pred_county"] = pred["pred_county"].to_numpy()
    for h in VIEW_HEADINGS:  # the sample has no heading column: view h was taken facing h degrees
        if f"pred_heading_{h}" in pred:
            table[f"heading_err_{h}"] = angular_error_deg(pred[f"pred_heading_{h}"].to_numpy(), float(h))
    return table


def summarise(tables: list[pd.DataFrame]) -> dict:
    """Pooled metrics over every held-out location + per-fold mean km and its std across folds."""
    pooled = evaluation_results(pd.concat(tables, ignore_index=True))
    per_fold = [float(t["error_km"].mean()) for t in tables]
    return {**pooled, "fold_mean_km": per_fold, "fold_std_km": float(np.std(per_fold, ddof=1))}


def run_fit(name: str, cfg: TrainConfig, frame, folds, workdir: Path) -> list[pd.DataFrame]:
    """The real fit.train per fold (images, or the cache while frozen), evaluated by evaluate() on images."""
    from training.evaluate import evaluate
    from training.fit import train

    tables = []
    for i, (train_ids, test_ids) in enumerate(folds):
        t0 = time.perf_counter()
        # val = the held-out fold only for logging: select_best=False keeps the last weights regardless
        ckpt = train(
            SAMPLE,
            workdir / f"fold{i}",
            cfg,
            prior_csv=PRIOR,
            train_uuids=train_ids,
            val_uuids=test_ids,
            enable_progress_bar=False,
            resume=False,
        )
        _, table = evaluate(ckpt, SAMPLE, uuids=test_ids)
        tables.append(table)
        print(
            f"  {name} fold {i}: {table['error_km'].mean():.1f} km ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    return tables


def verify(frame, folds, bank: FeatureBank, cfg: TrainConfig) -> dict:
    """Cached-feature evaluation vs evaluate() (Predictor on image files) of the same model, fold 0."""
    from training.evaluate import evaluate

    train_ids, test_ids = folds[0]
    task, model_config = fit_heads(cfg, frame, train_ids, bank)
    cached = score(frame, predict_heads(task, model_config, frame, test_ids, bank))
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(task.model, model_config, Path(tmp) / "ckpt")
        metrics, table = evaluate(Path(tmp) / "ckpt", SAMPLE, uuids=test_ids)
    cached, table = cached.set_index("uuid"), table.set_index("uuid").loc[cached["uuid"]]
    diff = np.abs(cached["error_km"] - table["error_km"])
    out = {
        "tta_flip": model_config.tta_flip,
        "cached_mean_km": float(cached["error_km"].mean()),
        "images_mean_km": metrics["mean_km"],
        "max_abs_diff_km": float(diff.max()),
        "same_county": float((cached["pred_county"] == table["pred_county"]).mean()),
    }
    print("verify:", out, flush=True)
    return out


# ----------------------------------------------------------------------------------------- report
COLUMNS = ("mean_km", "median_km", "acc_25km", "acc_50km", "acc_100km", "county_accuracy", "heading_maae_deg")


PAIRED_WITH = {"unfrozen backbone": "frozen, same budget as unfrozen"}  # else: vs "default"


def add_paired(results: dict) -> None:
    """Per method: mean km minus its reference's on the same locations, with the paired standard error.

    Methods are compared only with one evaluated by the same code path (same location order).
    """
    for name, r in results.items():
        ref = PAIRED_WITH.get(name, "default")
        if name == ref or ref not in results or (name in PAIRED_WITH.values()):
            continue
        d = np.asarray(r["errors_km"]) - np.asarray(results[ref]["errors_km"])
        r["paired_vs"] = {
            "reference": ref,
            "delta_mean_km": float(d.mean()),
            "se_km": float(d.std(ddof=1) / np.sqrt(len(d))),
        }


def markdown(results: dict) -> str:
    head = (
        "| method | mean km | median km | <=25 km | <=50 km | <=100 km | county acc | heading MAAE "
        "| fold std km | Δ mean vs ref (paired s.e.) |"
    )
    lines = [head, "|" + "---|" * 10]
    for name, r in results.items():
        m = r["metrics"]
        cells = [f"{m['mean_km']:.1f}", f"{m['median_km']:.1f}"]
        cells += [f"{100 * m[k]:.0f}%" for k in ("acc_25km", "acc_50km", "acc_100km", "county_accuracy")]
        cells.append(f"{m['heading_maae_deg']:.1f}°" if m.get("heading_maae_deg") is not None else "–")
        cells.append(f"{m['fold_std_km']:.1f}")
        pv = r.get("paired_vs")
        cells.append(f"{pv['delta_mean_km']:+.1f} ({pv['se_km']:.1f})" if pv else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_cdf(results: dict, names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name in names:
        err = np.sort(np.asarray(results[name]["errors_km"]))
        ax.step(
            err,
            np.arange(1, len(err) + 1) / len(err),
            where="post",
            label=f"{name} ({results[name]['metrics']['mean_km']:.0f} km)",
            lw=2.2 if name == "default" else 1.3,
        )
    ax.set_xlabel("error (km)")
    ax.set_ylabel("share of held-out locations")
    ax.set_xlim(0, 350)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title("5-fold CV by location, lumen-sample (100 locations): error CDF")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def finish(report: dict, path: Path, plot: bool = True) -> None:
    """Paired deltas, JSON, markdown table to stdout, CDF plot."""
    results = report["results"]
    add_paired(results)
    path.write_text(json.dumps(report, indent=1))
    print(markdown(results))
    if plot:
        names = [
            n
            for n in (
                "mean coordinate",
                "prior only (best single centroid)",
                "kNN frozen lite0",
                "competition recipe",
                "argmax cell",
                "lite2 backbone",
                "unfrozen backbone",
                "default",
            )
            if n in results
        ]
        plot_cdf(results, names, RESULTS_DIR / "cv_cdf.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verify", action="store_true", help="check cached eval == image eval on fold 0")
    parser.add_argument("--skip-unfrozen", action="store_true", help="skip the (slow) unfrozen ablation")
    parser.add_argument("--unfrozen-epochs", type=int, default=2, help="unfrozen ablation: epochs on images")
    parser.add_argument("--unfrozen-image-size", type=int, default=128, help="unfrozen ablation: input px")
    parser.add_argument("--only", default="", help="comma-separated method names (a partial run)")
    parser.add_argument(
        "--out", default="cv_accuracy.json", help="results file name under benchmarks/research/results"
    )
    parser.add_argument("--merge", default="", help="add the methods of another results file (same folds)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads; 1 is fastest for tiny heads on a shared CPU"
    )
    parser.add_argument("--report-only", action="store_true", help="re-read --out (+ --merge): table, plot")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.report_only:
        report = json.loads((RESULTS_DIR / args.out).read_text())
        if args.merge:
            merged = json.loads((RESULTS_DIR / args.merge).read_text())["results"]
            report["results"].update({k: {**v, "merged_from": args.merge} for k, v in merged.items()})
        finish(report, RESULTS_DIR / args.out)
        return
    torch.manual_seed(SEED)
    start = time.perf_counter()
    frame = sample_frame()
    folds = kfold_splits(frame["uuid"], k=K, seed=SEED)
    banks: dict[str, FeatureBank] = {}

    def bank(name: str) -> FeatureBank:
        if name not in banks:
            banks[name] = FeatureBank(name, frame)
        return banks[name]

    tables: dict[str, list[pd.DataFrame]] = {}
    extra: dict[str, dict] = {}
    only = set(filter(None, args.only.split(",")))
    rows = lambda ids: frame[frame["uuid"].isin(set(ids))]  # noqa: E731

    def want(name):
        return not only or name in only

    for name, fn in (("mean coordinate", mean_coordinate), ("prior only (best single centroid)", prior_only)):
        if want(name):
            tables[name] = [score(frame, fn(rows(tr), te)) for tr, te in folds]
    if want("kNN frozen lite0"):
        chosen = []
        tables["kNN frozen lite0"] = []
        for tr, te in folds:
            pred, k = knn(rows(tr), te, bank(DEFAULT.backbone))
            tables["kNN frozen lite0"].append(score(frame, pred))
            chosen.append(k)
        extra["kNN frozen lite0"] = {"k_per_fold": chosen}
    configs = {}
    for name, overrides in ablations(DEFAULT).items():
        if not want(name):
            continue
        cfg = dataclasses.replace(DEFAULT, **overrides)
        configs[name] = cfg.to_dict()
        t0 = time.perf_counter()
        tables[name] = []
        for tr, te in folds:
            task, model_config = fit_heads(cfg, frame, tr, bank(cfg.backbone))
            tables[name].append(
                score(frame, predict_heads(task, model_config, frame, te, bank(cfg.backbone)))
            )
        extra[name] = {"seconds": round(time.perf_counter() - t0, 1)}
        print(
            f"{name}: {pd.concat(tables[name])['error_km'].mean():.1f} km ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    if not args.skip_unfrozen and want("unfrozen backbone"):
        # Small budget (a 2-core shared CPU, no cache while the backbone trains): both rows go through the
        # real fit.train + evaluate() on images, with the same epochs and image size.
        budget = dict(max_epochs=args.unfrozen_epochs, image_size=args.unfrozen_image_size)
        runs = {
            "unfrozen backbone": dataclasses.replace(DEFAULT, **budget, cache=False, unfreeze_epoch=0),
            "frozen, same budget as unfrozen": dataclasses.replace(DEFAULT, **budget),
        }
        for name, cfg in runs.items():
            configs[name] = cfg.to_dict()
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                tables[name] = run_fit(name, cfg, frame, folds, Path(tmp))
            extra[name] = {"seconds": round(time.perf_counter() - t0, 1)}
    results = {
        name: {
            "metrics": summarise(t),
            "errors_km": [round(float(x), 3) for x in pd.concat(t)["error_km"]],
            "config": configs.get(name),
            **extra.get(name, {}),
        }
        for name, t in tables.items()
    }
    if args.merge:  # e.g. the unfrozen ablation run as its own process on the same folds
        merged = json.loads((RESULTS_DIR / args.merge).read_text())["results"]
        results.update({k: {**v, "merged_from": args.merge} for k, v in merged.items() if k not in results})
    report = {
        "protocol": f"{K}-fold CV by location (geodemo.dataset.kfold_splits seed {SEED}) on {SAMPLE.name}, "
        "100 locations; metrics pooled over the 100 held-out predictions; fixed epochs, last weights",
        "seconds": round(time.perf_counter() - start, 1),
        "torch_threads": torch.get_num_threads(),
        "results": results,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    finish(report, RESULTS_DIR / args.out, plot=not only)
    if args.verify:
        report["verify"] = [
            verify(frame, folds, bank(DEFAULT.backbone), DEFAULT),
            verify(frame, folds, bank(DEFAULT.backbone), dataclasses.replace(DEFAULT, tta_flip=True)),
        ]
        (RESULTS_DIR / args.out).write_text(json.dumps(report, indent=1))
    print(f"total {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
