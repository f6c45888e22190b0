"""Two checkpoints on the same data: each one's mean and median error, and their paired difference."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from geodemo.game import geoscore


def compare_errors(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """Paired comparison of two per-location evaluation tables (columns uuid, error_km).

    Only locations both evaluated with a finite error count, so both figures describe the same places.

    Returns:
        {count, a: {mean_km, median_km, geoscore}, b: {...}, mean_diff_km (a - b; negative = a is better),
        se_km (standard error of that mean), median_diff_km, geoscore_diff (a - b; positive = a is better),
        geoscore_se}; km, and GeoScore points (5000 * exp(-d / 1492.7 km) per location, OSV-5M's scale).

    Raises:
        ValueError: the tables share no location (they were not evaluated on the same data).
    """
    pairs = a[["uuid", "error_km"]].merge(b[["uuid", "error_km"]], on="uuid", suffixes=("_a", "_b"))
    pairs = pairs[np.isfinite(pairs.error_km_a) & np.isfinite(pairs.error_km_b)]
    if pairs.empty:
        raise ValueError("The two evaluations share no location; compare evaluations of the same dataset.")
    diff = (pairs.error_km_a - pairs.error_km_b).to_numpy(float)
    score_a, score_b = geoscore(pairs.error_km_a), geoscore(pairs.error_km_b)
    score_diff = score_a - score_b
    n = len(diff)
    return {
        "count": n,
        "a": {"mean_km": float(pairs.error_km_a.mean()), "median_km": float(pairs.error_km_a.median()),
              "geoscore": float(score_a.mean())},
        "b": {"mean_km": float(pairs.error_km_b.mean()), "median_km": float(pairs.error_km_b.median()),
              "geoscore": float(score_b.mean())},
        "mean_diff_km": float(diff.mean()),
        "se_km": _standard_error(diff),
        "median_diff_km": float(np.median(diff)),
        "geoscore_diff": float(score_diff.mean()),
        "geoscore_se": _standard_error(score_diff),
    }


def _standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of `values` (NaN for fewer than two)."""
    n = len(values)
    return float(np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else math.nan


def verdict(result: dict, names: tuple[str, str] = ("A", "B")) -> str:
    """One sentence: which is better by how much, and whether that is more than 2 standard errors."""
    d, se = result["mean_diff_km"], result["se_km"]
    if d == 0:
        return f"{names[0]} and {names[1]} are equally good on average over {result['count']} location(s)."
    better, worse = (names[0], names[1]) if d < 0 else (names[1], names[0])
    if not math.isfinite(se) or se == 0:
        return f"{better} is {abs(d):.1f} km better on average over {result['count']} location(s) (no SE)."
    sure = "more" if abs(d) > 2 * se else "less"
    return (f"{better} is {abs(d):.1f} ± {se:.1f} km better than {worse} on average over {result['count']} "
            f"locations: {sure} than 2 standard errors{'' if sure == 'more' else ', so not a clear win'}.")
