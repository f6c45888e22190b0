"""Evaluation metrics in plain numpy/pandas (no Lightning).

``evaluation_results`` is THE function that turns a per-location table into the evaluation results: used by
``evaluate`` (its JSON), ``fit.cross_validate``, the CV benchmarks and the model card (training.card). The
Evaluate tab and Compare read that JSON and its per-location CSV; every key is in the README's "Evaluation
results" table.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from geodemo.game import SCORE_SCALE_KM, WORLD_SCALE_KM, geoscore
from geodemo.geo import COUNTY_CODES, county_names
from geodemo.readout import CREDIBLE_MASSES

# 750 / 2,500 km (OSV-5M's continent / country thresholds) mean nothing inside Croatia (661 km across): 10 km
# is added instead, between street (1 km) and city (25 km).
ACC_THRESHOLDS_KM = (1, 10, 25, 50, 100, 200)
# GeoScore = 5000 * exp(-d / s) per location (geodemo.game.geoscore, its one home, shared with the Play tab
# and Compare): s = 1492.7 km on OSV-5M's / GeoGuessr's world map, 66.1 km on the Play tab's map of Croatia
GEOSCORE_SCALE_KM = WORLD_SCALE_KM
GEOSCORE_CROATIA_SCALE_KM = SCORE_SCALE_KM
REGION_MASSES = tuple(round(100 * m) for m in CREDIBLE_MASSES)  # region_coverage_<m>: the app's regions, %


def haversine_summary(errors_km) -> dict[str, float]:
    """Summary of great-circle errors.

    Args:
        errors_km: (N,) errors in km.

    Returns:
        ``mean_km``, ``median_km`` (km) and ``acc_{k}km`` = share of errors <= k km (fraction 0..1),
        for k in 1, 25, 50, 100, 200. NaN values when N == 0.
    """
    err = np.asarray(errors_km, dtype=np.float64).ravel()
    if err.size == 0:
        return {
            "mean_km": float("nan"),
            "median_km": float("nan"),
            **{f"acc_{k}km": float("nan") for k in ACC_THRESHOLDS_KM},
        }
    out = {"mean_km": float(err.mean()), "median_km": float(np.median(err))}
    out.update({f"acc_{k}km": float((err <= k).mean()) for k in ACC_THRESHOLDS_KM})
    return out


def county_accuracy(true_county, pred_county) -> float:
    """Share of locations whose predicted county id equals the true one; unknown truths (-1) are skipped."""
    t, p = np.asarray(true_county).ravel(), np.asarray(pred_county).ravel()
    keep = t >= 0
    return float((t[keep] == p[keep]).mean()) if keep.any() else float("nan")


def angular_error_deg(pred_deg, true_deg) -> np.ndarray:
    """Circular absolute difference in degrees, 0..180, elementwise (NaN where either is NaN)."""
    diff = np.abs(np.asarray(pred_deg, np.float64) - np.asarray(true_deg, np.float64)) % 360.0
    return np.minimum(diff, 360.0 - diff)


def maae_deg(pred_deg, true_deg) -> float:
    """Mean absolute angular error in degrees over entries where both angles are known."""
    err = angular_error_deg(pred_deg, true_deg)
    err = err[~np.isnan(err)]
    return float(err.mean()) if err.size else float("nan")


def accuracy_and_macro_f1(true, pred, num_classes: int) -> dict[str, float]:
    """Classification accuracy and macro-F1 (mean over classes present in truth or prediction)."""
    t, p = np.asarray(true).ravel(), np.asarray(pred).ravel()
    if t.size == 0:
        return {"acc": float("nan"), "macro_f1": float("nan")}
    f1s = []
    for k in range(num_classes):
        tp = np.sum((p == k) & (t == k))
        fp, fn = np.sum((p == k) & (t != k)), np.sum((p != k) & (t == k))
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return {"acc": float((t == p).mean()), "macro_f1": float(np.mean(f1s))}


# ----------------------------------------------------------------------------------------- evaluation results
def _mean(values) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def _region_coverage(done: pd.DataFrame, mass: int) -> float | None:
    """Share of truths inside the ``mass``% credible region; None where the model draws no region."""
    column = f"in_region_{mass}"
    if column not in done:
        return None
    known = done[column].dropna()
    return float(known.astype(bool).mean()) if len(known) else None


def _expected_error_ratio(done: pd.DataFrame) -> float | None:
    """Mean expected_error_km / mean error_km over locations with both (1.0 = calibrated)."""
    if "expected_error_km" not in done:
        return None
    both = done[np.isfinite(done["expected_error_km"].astype(float)) & np.isfinite(done["error_km"])]
    if both.empty or both["error_km"].mean() <= 0:
        return None
    return float(both["expected_error_km"].mean() / both["error_km"].mean())


def county_report(done: pd.DataFrame) -> list[dict]:
    """Per county (all 21, ISO order): locations whose truth lies in it, county accuracy, mean km.

    Args:
        done: per-location rows with true_county, pred_county (ISO codes, "" = none) and error_km.

    Returns:
        [{county, name, count, county_accuracy (share whose point lies in the true county, 0..1),
        mean_km}], accuracy and km None for a county with no location.
    """
    names = dict(zip(COUNTY_CODES, county_names()))
    report = []
    for code in COUNTY_CODES:
        rows = done[done["true_county"] == code] if len(done) else done
        report.append({
            "county": code,
            "name": names[code],
            "count": int(len(rows)),
            "county_accuracy": float((rows["pred_county"] == code).mean()) if len(rows) else None,
            "mean_km": _mean(rows["error_km"]) if len(rows) else None,
        })
    return report


def evaluation_results(table: pd.DataFrame) -> dict:
    """The evaluation results of a per-location table (training.evaluate.evaluate's), as JSON-able values.

    Args:
        table: one row per location; point models have pred_lat, error_km (km), expected_error_km (km),
            in_region_50 / in_region_90 (bool; missing without a geocell head), true_county and pred_county
            (ISO codes, "" = outside every county); optional in_training (bool) and heading_err_<h> (degrees).

    Returns:
        count; mean_km, median_km; acc_{1,10,25,50,100,200}km (fractions); geoscore (mean of
        5000 * exp(-d / 1492.7 km)); geoscore_croatia (the same at the Play tab's 66.1 km); county_accuracy;
        region_coverage_50 / region_coverage_90 (share of truths inside the app's credible regions);
        expected_error_ratio (mean expected_error_km / mean error_km); county_report (``county_report``);
        train_overlap (rows in_training, None when unknown); + heading_maae_deg with heading columns.
        Figures that cannot be computed (no point predicted, no region drawn) are None.
    """
    done = table[table["pred_lat"].notna() & np.isfinite(table["error_km"])] if "pred_lat" in table else None
    point = done is not None and len(done) > 0
    out: dict = {"count": int(len(done) if point else len(table))}
    if point:
        out.update(haversine_summary(done["error_km"]))
        out["geoscore"] = float(geoscore(done["error_km"]).mean())
        out["geoscore_croatia"] = float(geoscore(done["error_km"], GEOSCORE_CROATIA_SCALE_KM).mean())
        known = done[done["true_county"] != ""]
        hits = known["true_county"] == known["pred_county"]
        out["county_accuracy"] = float(hits.mean()) if len(known) else None
        for mass in REGION_MASSES:
            out[f"region_coverage_{mass}"] = _region_coverage(done, mass)
        out["expected_error_ratio"] = _expected_error_ratio(done)
        out["county_report"] = county_report(done)
    else:
        keys = ["mean_km", "median_km", *(f"acc_{k}km" for k in ACC_THRESHOLDS_KM), "geoscore",
                "geoscore_croatia", "county_accuracy", *(f"region_coverage_{m}" for m in REGION_MASSES),
                "expected_error_ratio", "county_report"]
        out.update(dict.fromkeys(keys))
    out["train_overlap"] = int(table["in_training"].sum()) if "in_training" in table else None
    err_cols = [c for c in table if c.startswith("heading_err_")]
    if err_cols:
        out["heading_maae_deg"] = maae_deg(table[err_cols].to_numpy().ravel(), 0.0)
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
