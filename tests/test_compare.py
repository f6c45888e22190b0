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
    assert result["a"] == {"mean_km": 20.0, "median_km": 20.0}
    assert result["b"]["mean_km"] == pytest.approx(23.0)
    assert result["mean_diff_km"] == pytest.approx(mean)
    assert result["se_km"] == pytest.approx(sd / math.sqrt(3))
    assert verdict(result, ("new", "old")).startswith("new is 3.0 ± 1.5 km better than old")
    with pytest.raises(ValueError, match="share no location"):
        compare_errors(a, pd.DataFrame({"uuid": ["other"], "error_km": [1.0]}))
