"""Two checkpoints on the same data: each one's mean and median error, and their paired difference."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def compare_errors(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """Paired comparison of two per-location evaluation tables (columns uuid, error_km).

    Only locations both evaluated with a finite error count, so both figures describe the same places.

    Returns:
        {count, a: {mean_km, median_km}, b: {...}, mean_diff_km (a - b; negative = a is better),
        se_km (standard error of that mean), median_diff_km}; km throughout.

    Raises:
        ValueError: the tables share no location (they were not evaluated on the same data).
    """
    pairs = a[["uuid", "error_km"]].merge(b[["uuid", "error_km"]], on="uuid", suffixes=("_a", "_b"))
    pairs = pairs[np.isfinite(pairs.error_km_a) & np.isfinite(pairs.error_km_b)]
    if pairs.empty:
        raise ValueError("The two evaluations share no location; compare evaluations of the same dataset.")
    diff = (pairs.error_km_a - pairs.error_km_b).to_numpy(float)
    n = len(diff)
    return {
        "count": n,
        "a": {"mean_km": float(pairs.error_km_a.mean()), "median_km": float(pairs.error_km_a.median())},
        "b": {"mean_km": float(pairs.error_km_b.mean()), "median_km": float(pairs.error_km_b.median())},
        "mean_diff_km": float(diff.mean()),
        "se_km": float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
        "median_diff_km": float(np.median(diff)),
    }


def verdict(result: dict, names: tuple[str, str] = ("A", "B")) -> str:
    """One sentence: which is better by how much, and whether that is more than 2 standard errors."""
    d, se = result["mean_diff_km"], result["se_km"]
    better, worse = (names[0], names[1]) if d < 0 else (names[1], names[0])
    if not math.isfinite(se) or se == 0:
        return f"{better} is {abs(d):.1f} km better on average over {result['count']} location(s) (no SE)."
    sure = "more" if abs(d) > 2 * se else "less"
    return (f"{better} is {abs(d):.1f} ± {se:.1f} km better than {worse} on average over {result['count']} "
            f"locations: {sure} than 2 standard errors{'' if sure == 'more' else ', so not a clear win'}.")
