"""Evaluation metrics in plain numpy (no Lightning): haversine summary, county accuracy, MAAE, macro-F1."""

from __future__ import annotations

import numpy as np

ACC_THRESHOLDS_KM = (1, 25, 50, 100, 200)


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
