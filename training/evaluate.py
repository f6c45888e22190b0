"""evaluate(): run a checkpoint over a dataset via geodemo.predict.Predictor -> metrics + per-location table.

Also the batch ``predict`` behind the CLI (competition CSV) and the classify equivalents.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from geodemo import geo
from geodemo.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, read_config
from geodemo.data import VIEW_HEADINGS, read_locations, view_headings, view_paths
from geodemo.dataset import LocationDataset, build_transform
from geodemo.heads import POINT_TASKS
from geodemo.images import load_rgb
from geodemo.predict import Predictor
from geodemo.truth import train_overlap
from training import metrics
from training.datamodule import IMAGE_SUFFIXES, scan_image_folder

CONTRACT_KEYS = (
    "count",
    "mean_km",
    "median_km",
    *(f"acc_{k}km" for k in metrics.ACC_THRESHOLDS_KM),
    "geoscore",
    "geoscore_croatia",
    "county_accuracy",
    *(f"region_coverage_{m}" for m in metrics.REGION_MASSES),
    "expected_error_ratio",
    "county_report",
    "train_overlap",
)  # + heading_maae_deg with a heading head; every key: README "Evaluation results"


def _select(data_dir, uuids=None, limit: int | None = None) -> pd.DataFrame:
    frame = read_locations(data_dir)
    if uuids is not None:
        frame = frame[frame["uuid"].isin(set(map(str, uuids)))]
    return (frame.head(limit) if limit else frame).reset_index(drop=True)


def _point_predictions(predictor: Predictor, data_dir, frame: pd.DataFrame, batch_size: int, progress,
                       point_mode: str | None) -> pd.DataFrame:
    """Predict every location of ``frame`` -> uuid, latitude, longitude, county, expected_error_km,
    in_region_50 / in_region_90 (the truth inside the credible regions, decided exactly as the Predict tab
    decides it: ``Readout.truth_in_region`` on the prediction's cell probabilities; NaN without a geocell
    head) and heading_<h>. Locations without any view file get NaN."""
    rows, total = [], len(frame)
    truth = frame.assign(uuid=frame["uuid"].astype(str)).set_index("uuid")
    for uuid, p in predictor.iter_dataset(data_dir, frame, batch_size, point_mode):
        row = {"uuid": uuid}
        if p is not None:
            row.update(latitude=p.latitude, longitude=p.longitude, county=p.county_code,
                       expected_error_km=np.nan if p.expected_error_km is None else p.expected_error_km)
            row.update({f"heading_{h}": d for h, d in p.headings.items()})
            if p.cell_probabilities is not None:
                out = {"geocell": p.cell_probabilities[None]}
                t_lat, t_lon = float(truth.at[uuid, "latitude"]), float(truth.at[uuid, "longitude"])
                for mass in metrics.REGION_MASSES:
                    row[f"in_region_{mass}"] = bool(
                        predictor.readout.truth_in_region(out, t_lat, t_lon, mass / 100)[0])
        rows.append(row)
        if progress is not None and (len(rows) % batch_size == 0 or len(rows) == total):
            progress(len(rows), total)
    columns = ["uuid", "latitude", "longitude", "county", "expected_error_km",
               *(f"in_region_{m}" for m in metrics.REGION_MASSES), *(f"heading_{h}" for h in VIEW_HEADINGS)]
    return pd.DataFrame(rows).reindex(columns=columns)


def _heading_only(path, data_dir, frame: pd.DataFrame, batch_size: int, progress) -> pd.DataFrame:
    """Heading-only checkpoints have no point: run the model over the views and keep per-view headings."""
    model, config = load_checkpoint(path, expect_tasks=["heading"])
    dataset = LocationDataset(data_dir, frame, config.image_size, config.mean, config.std, train=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    degrees = []
    with torch.inference_mode():
        for i, batch in enumerate(loader):
            sin, cos = model(batch["views"], batch["view_mask"])["heading"].double().unbind(-1)
            pred = torch.rad2deg(torch.atan2(sin, cos)) % 360.0
            degrees.append(pred.masked_fill(~batch["view_mask"], float("nan")).numpy())
            if progress:
                progress(min((i + 1) * batch_size, len(dataset)), len(dataset))
    pred = np.concatenate(degrees) if degrees else np.zeros((0, len(VIEW_HEADINGS)))
    return pd.DataFrame(
        {"uuid": frame["uuid"], **{f"heading_{h}": pred[:, v] for v, h in enumerate(VIEW_HEADINGS)}}
    )


def evaluate(
    checkpoint=None,
    data_dir=None,
    limit: int | None = None,
    progress=None,
    uuids=None,
    batch_size: int = 16,
    point_mode: str | None = None,
) -> tuple[dict, pd.DataFrame]:
    """Evaluate a checkpoint on a LUMEN-layout dataset (or an ImageFolder for a classify checkpoint).

    Args:
        checkpoint: checkpoint directory; None = the bundled default.
        data_dir: dataset folder. limit: first N locations only. uuids: only these locations.
        progress: optional callable(done, total) in locations. point_mode: override the checkpoint's.

    Returns:
        (metrics, table). metrics has exactly ``CONTRACT_KEYS`` (+ ``heading_maae_deg`` with a heading head;
        training.metrics.evaluation_results); table has one row per location: uuid, true_lat, true_lon,
        pred_lat, pred_lon, error_km, geoscore (world scale), expected_error_km, in_region_50, in_region_90
        (truth inside the app's 50% / 90% credible region), true_county, pred_county (ISO codes; pred_county
        contains the point), in_training, and pred_heading_<h> / heading_err_<h> with a heading head.
    """
    path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    config = read_config(path)
    if config.tasks == ["classify"]:
        return evaluate_classifier(path, data_dir, limit=limit)
    frame = _select(data_dir, uuids, limit)
    lat, lon = frame["latitude"].to_numpy(np.float64), frame["longitude"].to_numpy(np.float64)
    county = geo.county_index(lat, lon)
    table = pd.DataFrame({"uuid": frame["uuid"], "true_lat": lat, "true_lon": lon})
    if set(config.tasks) & set(POINT_TASKS):
        pred = _point_predictions(Predictor.load(path), data_dir, frame, batch_size, progress, point_mode)
        table["pred_lat"], table["pred_lon"] = pred["latitude"].to_numpy(), pred["longitude"].to_numpy()
        table["error_km"] = geo.haversine_km(lat, lon, table["pred_lat"], table["pred_lon"])
        table["geoscore"] = metrics.geoscore(table["error_km"])
        table["expected_error_km"] = pred["expected_error_km"].to_numpy()
        for mass in metrics.REGION_MASSES:
            table[f"in_region_{mass}"] = pred[f"in_region_{mass}"].to_numpy()
        table["true_county"] = [geo.COUNTY_CODES[c] if c >= 0 else "" for c in county]
        table["pred_county"] = pred["county"].fillna("").to_numpy()
    else:
        pred = _heading_only(path, data_dir, frame, batch_size, progress)
    if "heading" in config.tasks:
        truth = view_headings(frame)
        for v, h in enumerate(VIEW_HEADINGS):
            table[f"pred_heading_{h}"] = pred[f"heading_{h}"].to_numpy(np.float64)
            table[f"heading_err_{h}"] = metrics.angular_error_deg(table[f"pred_heading_{h}"], truth[:, v])
    seen = train_overlap(config, lat, lon, frame["uuid"])
    if seen is not None:
        table["in_training"] = seen
    return metrics.evaluation_results(table), table


def predict_locations(
    checkpoint=None, data_dir=None, batch_size: int = 16, progress=None, point_mode: str | None = None
) -> pd.DataFrame:
    """Competition submission for every location: DataFrame uuid, latitude, longitude (degrees)."""
    pred = Predictor.load(checkpoint or DEFAULT_CHECKPOINT).predict_dataset(
        data_dir, batch_size=batch_size, progress=progress, point_mode=point_mode
    )
    return pred[["uuid", "latitude", "longitude"]]


# ----------------------------------------------------------------------------------------- classify
@torch.inference_mode()
def _classify_files(checkpoint, files: list[Path], batch_size: int = 32) -> tuple[list[str], np.ndarray]:
    """(class names, (N,) predicted class ids) for image files."""
    model, config = load_checkpoint(checkpoint, expect_tasks=["classify"])
    transform = build_transform(config.image_size, config.mean, config.std, train=False)
    pred = []
    for start in range(0, len(files), batch_size):
        images = [
            transform(image=load_rgb(f, min_side=config.image_size))["image"]
            for f in files[start : start + batch_size]
        ]
        pred.append(model(torch.stack(images))["classify"].argmax(1).numpy())
    return list(config.class_names), np.concatenate(pred) if pred else np.zeros(0, np.int64)


def evaluate_classifier(checkpoint, data_dir, limit: int | None = None) -> tuple[dict, pd.DataFrame]:
    """Classify checkpoint on an ImageFolder: ({count, accuracy, macro_f1}, table file,true,pred)."""
    classes, files, labels = scan_image_folder(data_dir)
    files, labels = files[:limit] if limit else files, labels[:limit] if limit else labels
    names, pred = _classify_files(checkpoint, files)
    index = {n: i for i, n in enumerate(names)}
    true = np.array([index.get(classes[k], -1) for k in labels])
    scores = metrics.accuracy_and_macro_f1(true, pred, len(names))
    table = pd.DataFrame(
        {
            "file": [str(f) for f in files],
            "true": [classes[k] for k in labels],
            "pred": [names[k] for k in pred],
        }
    )
    return {"count": len(files), "accuracy": scores["acc"], "macro_f1": scores["macro_f1"]}, table


def predict_images(checkpoint, folder) -> pd.DataFrame:
    """Classify every image under ``folder`` (recursively): DataFrame ``Id`` (file stem), ``Category``."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder} holds no images (.jpg, .png, ...); point --data at a folder of images.")
    names, pred = _classify_files(checkpoint, files)
    return pd.DataFrame({"Id": [f.stem for f in files], "Category": [names[k] for k in pred]})


def write_gradcams(checkpoint, data, out_dir, limit: int | None = None) -> list[Path]:
    """Grad-CAM overlays as JPEGs in ``out_dir``: ``<stem>_<class>.jpg`` per image for a classify
    checkpoint (``data`` a folder of images), ``<uuid>_<heading>.jpg`` per view for a geo checkpoint."""
    from geodemo.gradcam import classify_gradcam
    from geodemo.images import encode_jpeg

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if read_config(checkpoint).tasks == ["classify"]:
        model, config = load_checkpoint(checkpoint, expect_tasks=["classify"])
        files = sorted(p for p in Path(data).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        for f in files:
            name, overlay = classify_gradcam(model, config, f)
            written.append(out_dir / f"{f.stem}_{name}.jpg")
            written[-1].write_bytes(encode_jpeg(overlay))
        return written
    predictor = Predictor.load(checkpoint)
    for uuid in read_locations(data)["uuid"].iloc[:limit]:
        files = view_paths(data, uuid)  # view index -> file; Predictor takes a list in N, E, S, W order
        for v, overlay in predictor.gradcam([files.get(v) for v in range(len(VIEW_HEADINGS))]).items():
            written.append(out_dir / f"{uuid}_{VIEW_HEADINGS[v]}.jpg")
            written[-1].write_bytes(encode_jpeg(overlay))
    return written
