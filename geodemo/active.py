"""Label the most useful locations first: order unlabelled locations by the model's own uncertainty.

Uncertainty is the Prediction's `expected_error_km` (the model's expected distance to the truth, km); for a
checkpoint without it, the entropy of the cell probabilities (nats). Most uncertain first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geodemo.data import VIEW_HEADINGS, view_paths


def uncertainty(prediction) -> tuple[float, str]:
    """(value, unit) of one Prediction: expected error in km, else cell entropy in nats, else NaN."""
    expected = getattr(prediction, "expected_error_km", None)
    if expected is not None and np.isfinite(expected):
        return float(expected), "km"
    p = getattr(prediction, "cell_probabilities", None)
    if p is not None:
        p = np.asarray(p, np.float64)
        return float(-(p * np.log(p.clip(1e-12))).sum()), "nats"
    return float("nan"), ""


def order_by_uncertainty(predictor, folder, ids: list[str], batch_size: int = 16):
    """Sort a folder's location ids most uncertain first.

    Args:
        predictor: a geodemo.predict.Predictor; folder: LUMEN-layout folder; ids: location ids in it.

    Returns:
        (ids most uncertain first, {id: value}, unit "km" | "nats"); ids without views go last.
    """
    items = {u: {VIEW_HEADINGS[v]: p for v, p in view_paths(Path(folder), u).items()} for u in ids}
    present = [u for u in ids if items[u]]
    scores, unit = {}, ""
    for u, prediction in zip(present, predictor.predict_batch([items[u] for u in present], batch_size)):
        scores[u], unit = uncertainty(prediction)
    ranked = sorted(present, key=lambda u: -scores[u] if np.isfinite(scores[u]) else np.inf)
    return ranked + [u for u in ids if u not in scores], scores, unit
