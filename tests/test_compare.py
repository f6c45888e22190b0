"""geodemo.compare: the paired difference of two evaluations, computed by hand on a small table."""

import math

import pandas as pd
import pytest

from geodemo.compare import compare_errors, verdict


def test_paired_difference_and_its_standard_error():
    a = pd.DataFrame({"uuid": ["x", "y", "z", "w"], "error_km": [10.0, 20.0, 30.0, 5.0]})
    b = pd.DataFrame({"uuid": ["z", "y", "x", "q"], "error_km": [36.0, 21.0, 12.0, 1.0]})  # other order
    result = compare_errors(a, b)
    diffs = [10 - 12, 20 - 21, 30 - 36]  # paired by uuid over x, y, z only
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    assert result["count"] == 3
    assert (result["a"]["mean_km"], result["a"]["median_km"]) == (20.0, 20.0)
    assert result["b"]["mean_km"] == pytest.approx(23.0)
    assert result["mean_diff_km"] == pytest.approx(mean)
    assert result["se_km"] == pytest.approx(sd / math.sqrt(3))
    assert verdict(result, ("new", "old")).startswith("new is 3.0 ± 1.5 km better than old")
    # GeoScore 5000 * exp(-d / 1492.7 km) per location, paired the same way (higher = better)
    score_diffs = [5000 * (math.exp(-ea / 1492.7) - math.exp(-eb / 1492.7))
                   for ea, eb in ((10, 12), (20, 21), (30, 36))]
    score_mean = sum(score_diffs) / 3
    score_sd = math.sqrt(sum((d - score_mean) ** 2 for d in score_diffs) / 2)
    mean_a = 5000 * sum(math.exp(-e / 1492.7) for e in (10, 20, 30)) / 3
    assert result["a"]["geoscore"] == pytest.approx(mean_a)
    assert result["geoscore_diff"] == pytest.approx(score_mean) and result["geoscore_diff"] > 0
    assert result["geoscore_se"] == pytest.approx(score_sd / math.sqrt(3))
    with pytest.raises(ValueError, match="share no location"):
        compare_errors(a, pd.DataFrame({"uuid": ["other"], "error_km": [1.0]}))


def test_identical_evaluations_are_called_equal_not_better():
    a = pd.DataFrame({"uuid": ["x", "y"], "error_km": [10.0, 20.0]})
    result = compare_errors(a, a.copy())
    assert result["mean_diff_km"] == 0 and result["geoscore_diff"] == 0
    assert verdict(result, ("A", "B")) == "A and B are equally good on average over 2 location(s)."
