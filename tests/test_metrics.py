"""Known answers for the evaluation metrics."""

import math

import numpy as np

from training import metrics


def test_haversine_summary():
    s = metrics.haversine_summary([0.5, 10.0, 30.0, 150.0])
    assert s["mean_km"] == 47.625 and s["median_km"] == 20.0
    assert (s["acc_1km"], s["acc_25km"], s["acc_50km"], s["acc_100km"], s["acc_200km"]) == (
        0.25,
        0.5,
        0.75,
        0.75,
        1.0,
    )
    assert math.isnan(metrics.haversine_summary([])["mean_km"])


def test_county_accuracy_skips_unknown_truth():
    assert metrics.county_accuracy([1, 2, -1, 3], [1, 0, 5, 3]) == 2 / 3


def test_maae_is_circular():
    assert metrics.angular_error_deg(350.0, 10.0) == 20.0
    assert metrics.maae_deg([0.0, 90.0, np.nan], [180.0, 80.0, 0.0]) == 95.0


def test_accuracy_and_macro_f1():
    out = metrics.accuracy_and_macro_f1([0, 0, 1, 1], [0, 1, 1, 1], num_classes=2)
    assert out["acc"] == 0.75
    assert abs(out["macro_f1"] - (2 / 3 + 0.8) / 2) < 1e-12
