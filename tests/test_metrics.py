"""Known answers for the evaluation metrics."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geodemo import geo
from training import metrics

REPO = Path(__file__).resolve().parents[1]


def test_haversine_summary():
    s = metrics.haversine_summary([0.5, 10.0, 30.0, 150.0])
    assert s["mean_km"] == 47.625 and s["median_km"] == 20.0 and s["acc_10km"] == 0.5
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


# ----------------------------------------------------------------------------------------- evaluation results
def _table(errors, expected, in50, in90, true_county, pred_county):
    n = len(errors)
    return pd.DataFrame({
        "uuid": [f"u{i}" for i in range(n)], "pred_lat": np.full(n, 45.0), "error_km": errors,
        "expected_error_km": expected, "in_region_50": in50, "in_region_90": in90,
        "true_county": true_county, "pred_county": pred_county,
    })


def test_geoscore_known_answers():
    # 5000 at 0 km; 5000 / e at one scale length (OSV-5M's world scale and the Play tab's Croatia scale)
    assert metrics.geoscore([0.0, 1492.7]) == pytest.approx([5000.0, 5000.0 / math.e])
    assert metrics.geoscore([66.1], metrics.GEOSCORE_CROATIA_SCALE_KM) == pytest.approx([5000.0 / math.e])
    assert metrics.GEOSCORE_CROATIA_SCALE_KM == 66.1


def test_acc_thresholds_include_10km_and_not_continent_scales():
    s = metrics.haversine_summary([5.0, 10.0, 10.5, 300.0])
    assert s["acc_10km"] == 0.5 and s["acc_1km"] == 0.0 and s["acc_200km"] == 0.75
    assert "acc_750km" not in s and "acc_2500km" not in s


def test_evaluation_results_known_answers():
    table = _table(errors=[10.0, 30.0, 60.0, 100.0], expected=[20.0, 40.0, 60.0, 120.0],
                   in50=[True, False, False, True], in90=[True, True, False, True],
                   true_county=["HR-01", "HR-01", "HR-17", ""],
                   pred_county=["HR-01", "HR-21", "HR-17", "HR-18"])
    d = np.array([10.0, 30.0, 60.0, 100.0])
    found = metrics.evaluation_results(table)
    assert found["count"] == 4 and found["mean_km"] == 50.0 and found["acc_10km"] == 0.25
    assert found["geoscore"] == pytest.approx(np.mean(5000 * np.exp(-d / 1492.7)))
    assert found["geoscore_croatia"] == pytest.approx(np.mean(5000 * np.exp(-d / 66.1)))
    assert found["region_coverage_50"] == 0.5 and found["region_coverage_90"] == 0.75
    assert found["expected_error_ratio"] == pytest.approx(60.0 / 50.0)
    assert found["county_accuracy"] == pytest.approx(2 / 3)  # the unknown truth ("") is skipped
    report = {r["county"]: r for r in found["county_report"]}
    assert len(report) == 21 and report["HR-01"]["count"] == 2
    assert report["HR-01"]["county_accuracy"] == 0.5 and report["HR-01"]["mean_km"] == 20.0
    assert report["HR-17"] == {**report["HR-17"], "count": 1, "county_accuracy": 1.0, "mean_km": 60.0}
    assert report["HR-05"]["count"] == 0 and report["HR-05"]["mean_km"] is None
    json.dumps(found, allow_nan=False)  # plain JSON: no NaN anywhere


def test_evaluation_results_without_regions_or_points():
    table = _table([10.0, 20.0], [np.nan, np.nan], [np.nan] * 2, [np.nan] * 2, ["HR-01"] * 2, ["HR-01"] * 2)
    found = metrics.evaluation_results(table)  # a coords-only model draws no region, has no expected km
    assert found["region_coverage_90"] is None and found["expected_error_ratio"] is None
    assert found["mean_km"] == 15.0
    none = metrics.evaluation_results(pd.DataFrame({"uuid": ["a"], "heading_err_0": [10.0]}))
    assert none["geoscore"] is None and none["county_report"] is None and none["heading_maae_deg"] == 10.0


# ----------------------------------------------------------------------------------------- evaluate, end to e
@pytest.fixture(scope="module")
def evaluated(sample_dir, tmp_path_factory):
    """`python -m training evaluate` of the bundled checkpoint on 12 real locations: (JSON, CSV)."""
    out = tmp_path_factory.mktemp("eval") / "m.json"
    done = subprocess.run(
        [sys.executable, "-m", "training", "evaluate", "--data", str(sample_dir), "--out", str(out),
         "--limit", "12"], cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text()), pd.read_csv(out.with_suffix(".csv"), keep_default_na=False,
                                                    na_values=[""])


def test_evaluate_writes_every_key(evaluated):
    found, _ = evaluated
    expected = {"count", "mean_km", "median_km", "acc_1km", "acc_10km", "acc_25km", "acc_50km", "acc_100km",
                "acc_200km", "geoscore", "geoscore_croatia", "county_accuracy", "region_coverage_50",
                "region_coverage_90", "expected_error_ratio", "county_report", "train_overlap",
                "heading_maae_deg"}  # spelled out: the README's schema table, not the code under test
    assert set(found) == expected
    assert all(found[k] is not None for k in expected)
    assert len(found["county_report"]) == 21 and sum(r["count"] for r in found["county_report"]) == 12


def test_figures_recompute_from_the_per_location_csv(evaluated):
    found, table = evaluated
    err = geo.haversine_km(table["true_lat"], table["true_lon"], table["pred_lat"], table["pred_lon"])
    assert np.allclose(err, table["error_km"])
    assert found["geoscore"] == pytest.approx(np.mean(5000.0 * np.exp(-err / 1492.7)))
    assert found["geoscore_croatia"] == pytest.approx(np.mean(5000.0 * np.exp(-err / 66.1)))
    assert found["acc_10km"] == pytest.approx(np.mean(err <= 10.0))
    in90 = table["in_region_90"].astype(bool)
    assert found["region_coverage_90"] == pytest.approx(in90.mean())
    assert (table["in_region_90"].astype(bool) | ~table["in_region_50"].astype(bool)).all()  # 50% within 90%
    ratio = table["expected_error_km"].mean() / table["error_km"].mean()
    assert found["expected_error_ratio"] == pytest.approx(ratio)
    for row in found["county_report"]:
        rows = table[table["true_county"] == row["county"]]
        assert row["count"] == len(rows)


def test_in_region_is_the_credible_set_the_map_draws(evaluated, sample_dir):
    """The CSV's in_region_90 equals: the truth's cell is among the smallest cell set holding 90% of the
    prediction's (read-out) cell probabilities, recomputed here from a fresh prediction."""
    from geodemo.data import view_paths
    from geodemo.predict import Predictor

    _, table = evaluated
    predictor = Predictor.load()
    for _, row in table.head(4).iterrows():
        views = {h: p for h, p in zip((0, 90, 180, 270), [view_paths(sample_dir, row["uuid"]).get(v)
                                                           for v in range(4)])}
        p = predictor.predict(views).cell_probabilities
        order = np.argsort(-p)
        k = int(np.searchsorted(np.cumsum(p[order]), 0.9 - 1e-12)) + 1
        cell = predictor.cells.assign(np.array([row["true_lat"]]), np.array([row["true_lon"]]))[0]
        assert bool(row["in_region_90"]) == (cell in set(order[:k].tolist()))
