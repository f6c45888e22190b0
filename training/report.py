"""What a training run made: the epochs run and why it stopped, the model's mean error beside the
mean-coordinate baseline on the same locations, and plain warnings when the model is not worth keeping.

With a validation split the figures are on those held-out locations. With ``val_fraction 0`` (the recipe:
the sample is too small to spare a split) they are on the training locations themselves, and the report
says so: a model no better than the mean coordinate even on the locations it was fitted to, or whose points
collapse into one county or one place, learned nothing useful. ``evaluate`` on unseen locations is the test.
Epochs are 1-based here, as everywhere people read them.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from geodemo import geo

EPOCHS = "1-based: epoch 1 is the first pass over the training locations"
NO_BETTER = 0.95  # a mean error above this share of the baseline's is "no better than the baseline"
COLLAPSED = 0.6  # more than this share of the locations predicted in one county, or at one place
MIN_COUNTIES = 3  # ... while their true points span at least this many counties
HELD_OUT = "validation locations (held out)"
ON_TRAINING = "training locations (val_fraction 0: no held-out split; `evaluate` on unseen locations tests)"
MAX_IMAGE_LOCATIONS = 256  # locations read from images (no embedding cache) for the report


def epochs_report(trainer, callbacks, select_best: bool, monitor: str) -> dict:
    """Epochs run, the kept epoch (1-based) and why the run stopped, from the finished Lightning trainer."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    run, most = int(trainer.current_epoch), int(trainer.max_epochs)
    stopper = next((c for c in callbacks if isinstance(c, EarlyStopping)), None)
    best = next((c for c in callbacks if isinstance(c, ModelCheckpoint) and c.best_model_path), None)
    kept, kept_what = run, "the last epoch's weights"
    if select_best and best is not None:
        kept = int(torch.load(best.best_model_path, map_location="cpu", weights_only=False)["epoch"]) + 1
        kept_what = f"the best epoch's weights (lowest {monitor})"
    if stopper is not None and stopper.stopped_epoch:
        why = f"early stopping: {monitor} did not improve for {stopper.patience} epochs after epoch {kept}"
    elif run < most:
        why = f"stopped after {run} of {most} epochs (cancelled or interrupted)"
    else:
        why = f"ran the fixed {most} epochs"
    return {
        "epoch_convention": EPOCHS,
        "epochs_run": run,
        "max_epochs": most,
        "stopped": why,
        "kept_epoch": kept,
        "kept": kept_what,
    }


def _dataset(dm, split: str):
    """The split's locations without augmentation: cached features when the cache is used, else images
    (at most MAX_IMAGE_LOCATIONS of them)."""
    from geodemo.dataset import LocationDataset
    from training.cache import CachedLocationDataset

    cached = dm.datasets.get(split)
    if isinstance(cached, CachedLocationDataset):
        return CachedLocationDataset(cached.base, cached.feats, cached.mask, hflip=False)
    base = LocationDataset(
        dm.data_dir,
        dm.frames[split],
        dm.image_size,
        dm.mean,
        dm.std,
        train=False,
        cells=dm.cells,
        xy_stats=dm.xy_stats,
    )
    return Subset(base, range(min(len(base), MAX_IMAGE_LOCATIONS)))


@torch.inference_mode()
def _predict(task, dataset, batch_size: int) -> dict:
    """Per-location truth and read-out point of ``dataset``: lat, lon, pred_lat, pred_lon, county (index)."""
    device = next(task.parameters()).device
    was_training = task.training
    task.eval()
    rows = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        rows.append({k: v.detach().cpu() for k, v in task.collect(task.forward_batch(batch), batch).items()})
    task.train(was_training)
    g = {k: torch.cat([r[k] for r in rows]).numpy() for k in rows[0]}
    heads = getattr(task, "point_heads", None) or [k for k in ("geocell", "region", "coords") if k in g]
    reading = task.readout.read({k: g[k] for k in heads})
    return {
        "lat": g["lat"],
        "lon": g["lon"],
        "pred_lat": reading.lat,
        "pred_lon": reading.lon,
        "county": np.asarray(reading.county),
    }


def accuracy_report(task, dm, batch_size: int = 256) -> dict:
    """The model's mean km beside the mean-coordinate baseline (the training locations' mean) on the
    validation locations, or on the training locations when there is no split; plus collapse shares."""
    split = "val" if len(dm.frames["val"]) else "train"
    dataset = _dataset(dm, split)
    if not (getattr(task, "point_heads", None) or getattr(task, "point_task", None)) or len(dataset) == 0:
        return {}
    p = _predict(task, dataset, batch_size)
    train = dm.frames["train"]
    mean_lat, mean_lon = float(train["latitude"].mean()), float(train["longitude"].mean())
    model_km = geo.haversine_km(p["lat"], p["lon"], p["pred_lat"], p["pred_lon"])
    baseline_km = geo.haversine_km(p["lat"], p["lon"], mean_lat, mean_lon)
    county, county_n = Counter(p["county"].tolist()).most_common(1)[0]
    places = Counter(zip(np.round(p["pred_lat"], 2).tolist(), np.round(p["pred_lon"], 2).tolist()))
    true_counties = len(set(geo.county_index(p["lat"], p["lon"]).tolist()) - {-1})
    n = len(model_km)
    return {
        "evaluated_on": HELD_OUT if split == "val" else ON_TRAINING,
        "locations": n,
        "mean_km": round(float(np.mean(model_km)), 2),
        "baseline_mean_km": round(float(np.mean(baseline_km)), 2),
        "baseline": f"always the training locations' mean coordinate ({mean_lat:.4f}, {mean_lon:.4f})",
        "top_county": _county_name(task, county),
        "top_county_share": round(county_n / n, 3),
        "top_place_share": round(places.most_common(1)[0][1] / n, 3),
        "true_counties": true_counties,
    }


def _county_name(task, column: int) -> str:
    codes = getattr(task.readout, "codes", None)
    code = codes[column] if codes is not None and 0 <= column < len(codes) else None
    names = dict(zip(geo.COUNTY_CODES, geo.county_names()))
    return names.get(code, str(code))


def warnings_for(accuracy: dict) -> list[str]:
    """Plain sentences for a model not worth keeping: no better than the baseline, or collapsed points."""
    if not accuracy:
        return []
    out, where = [], accuracy["evaluated_on"].split(" (")[0]
    if accuracy["mean_km"] >= NO_BETTER * accuracy["baseline_mean_km"]:
        out.append(
            f"This model is no better than always answering the mean coordinate: {accuracy['mean_km']:.1f} "
            f"km against {accuracy['baseline_mean_km']:.1f} km on the {accuracy['locations']} {where}. "
            "Train longer, on more locations, or with the default recipe."
        )
    if accuracy["true_counties"] >= MIN_COUNTIES:
        if accuracy["top_county_share"] > COLLAPSED:
            out.append(
                f"This model's points collapse: it puts {accuracy['top_county_share']:.0%} of the "
                f"{where} in one county ({accuracy['top_county']}), though they lie in "
                f"{accuracy['true_counties']} counties."
            )
        elif accuracy["top_place_share"] > COLLAPSED:
            out.append(
                f"This model's points collapse: it answers one place for "
                f"{accuracy['top_place_share']:.0%} of the {where}."
            )
    return out


def report_lines(report: dict) -> list[str]:
    """The report as lines for the log (what the CLI and the job's curated log show)."""
    lines = [
        f"epochs: {report['epochs_run']} of {report['max_epochs']} run; {report['stopped']}; kept "
        f"{report['kept']} (epoch {report['kept_epoch']})"
    ]
    acc = report.get("accuracy") or {}
    if acc:
        lines.append(
            f"mean error {acc['mean_km']:.1f} km against {acc['baseline_mean_km']:.1f} km for the "
            f"mean coordinate, on the {acc['locations']} {acc['evaluated_on']}"
        )
    lines += [f"WARNING: {w}" for w in report.get("warnings", [])]
    return lines


def run_report(trainer, task, dm, callbacks, select_best: bool, found: dict) -> dict:
    """The whole report (epochs, accuracy, warnings); also makes ``found['epoch']`` 1-based."""
    report = epochs_report(trainer, callbacks, select_best, task.monitor)
    if "epoch" in found:
        found["epoch"] = int(found["epoch"]) + 1
    found["epoch_convention"] = EPOCHS
    if dm is not None and not getattr(dm, "chunks", False):
        report["accuracy"] = accuracy_report(task, dm)
    report["warnings"] = warnings_for(report.get("accuracy") or {})
    return report


def epoch_bar():
    """Lightning's progress bar (Rich when installed, else tqdm) counting epochs from 1, as the log does."""
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
    from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

    if _RICH_AVAILABLE:

        class Bar(RichProgressBar):
            def _get_train_description(self, current_epoch: int) -> str:
                return f"Epoch {current_epoch + 1}/{self.trainer.max_epochs}"

        return Bar()

    class Tqdm(TQDMProgressBar):
        def on_train_epoch_start(self, trainer, *args) -> None:
            super().on_train_epoch_start(trainer, *args)
            self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    return Tqdm()
