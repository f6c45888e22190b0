"""Does the uncertainty the app draws deserve trust? region_coverage and expected_error_ratio by 5-fold CV.

The bundled checkpoint saw all 100 sample locations, so its own ``evaluate`` figures on the sample are not a
test. This script measures the SHIPPED recipe (cv_accuracy.SHIPPED: the default heads, read out at T = 0.57)
on held-out folds instead: same folds (``kfold_splits(seed=0)``), cached frozen features and heads as
``cv_accuracy.py``; every held-out location becomes a row of ``evaluate``'s per-location table (error_km,
expected_error_km, in_region_50 / in_region_90 decided by ``Readout.truth_in_region`` on the read-out cell
probabilities, as the Predict tab decides it; counties), and the pooled table goes through
``training.metrics.evaluation_results``: the same function as ``evaluate``'s JSON and the model card.
The same held-out outputs are also read at T = 1 (the heads do not depend on T), for comparison.

Usage (repo root): .venv/bin/python benchmarks/research/cv_calibration.py   (~3 min warm cache on 2 cores)
Writes benchmarks/research/results/cv_calibration.json (+ cv_calibration_shipped.json: the shipped
read-out's results in evaluate's JSON schema, which scripts/train_default.sh adds to the model card) and
prints a markdown table.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = next(p for p in HERE.parents if (p / "training").is_dir())
sys.path[:0] = [str(ROOT), str(HERE)]

from cv_accuracy import SEED, SHIPPED, FeatureBank, K, fit_heads, head_outputs, sample_frame  # noqa: E402

from geodemo import geo  # noqa: E402
from geodemo.dataset import kfold_splits  # noqa: E402
from geodemo.readout import Readout  # noqa: E402
from training.metrics import REGION_MASSES, evaluation_results, geoscore  # noqa: E402

RESULTS = HERE / "results" / "cv_calibration.json"
CARD_RESULTS = RESULTS.with_name("cv_calibration_shipped.json")  # evaluate's JSON schema: for the model card
SHOWN = ("mean_km", "median_km", "geoscore", "geoscore_croatia", "acc_10km", "acc_25km", "county_accuracy",
         "region_coverage_50", "region_coverage_90", "expected_error_ratio")


def held_out_table(readout: Readout, out: dict, truth: pd.DataFrame) -> pd.DataFrame:
    """evaluate()'s per-location columns for held-out outputs read by ``readout``."""
    lat, lon = truth["latitude"].to_numpy(float), truth["longitude"].to_numpy(float)
    r = readout.read(out)
    county = geo.county_index(lat, lon)
    table = pd.DataFrame({"uuid": truth.index.to_numpy(), "true_lat": lat, "true_lon": lon,
                          "pred_lat": r.lat, "pred_lon": r.lon})
    table["error_km"] = geo.haversine_km(lat, lon, r.lat, r.lon)
    table["geoscore"] = geoscore(table["error_km"])
    table["expected_error_km"] = r.expected_km
    for mass in REGION_MASSES:  # read-out (tempered) probabilities, as Prediction.cell_probabilities holds
        table[f"in_region_{mass}"] = readout.truth_in_region({"geocell": r.cell_p}, lat, lon, mass / 100)
    table["true_county"] = [geo.COUNTY_CODES[c] if c >= 0 else "" for c in county]
    table["pred_county"] = [readout.codes[j] for j in r.county]
    return table


def main() -> None:
    t0 = time.perf_counter()
    frame = sample_frame()
    bank = FeatureBank(SHIPPED.backbone, frame)
    tables: dict[str, list[pd.DataFrame]] = {f"shipped (T = {SHIPPED.temperature})": [], "T = 1": []}
    for i, (train_ids, test_ids) in enumerate(kfold_splits(frame["uuid"], k=K, seed=SEED)):
        task, model_config = fit_heads(SHIPPED, frame, train_ids, bank)
        out = head_outputs(task, model_config, test_ids, bank)
        truth = frame.set_index("uuid").loc[list(test_ids)]
        for (name, found), t in zip(tables.items(), (model_config.temperature, 1.0)):
            readout = Readout(dataclasses.replace(model_config, temperature=t))
            found.append(held_out_table(readout, out, truth).assign(fold=i))
        print(f"fold {i}: {tables[next(iter(tables))][-1]['error_km'].mean():.1f} km "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    report = {
        "protocol": f"{K}-fold CV by location (seed {SEED}) on the 100-location sample; shipped recipe heads "
        "on cached frozen tf_efficientnet_lite0 features, fixed epochs, last weights; pooled held-out rows "
        "through training.metrics.evaluation_results",
        "results": {},
        "seconds": None,
    }
    for name, parts in tables.items():
        pooled = pd.concat(parts, ignore_index=True)
        rows = pooled.drop(columns=["true_lat", "true_lon"]).to_dict("list")
        report["results"][name] = {**evaluation_results(pooled), "per_location": rows}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1, default=float))
    shipped = {k: v for k, v in next(iter(report["results"].values())).items() if k != "per_location"}
    CARD_RESULTS.write_text(json.dumps(shipped, indent=1))
    print("\n| read-out | " + " | ".join(SHOWN) + " |\n|---|" + "---|" * len(SHOWN))
    for name, found in report["results"].items():
        print(f"| {name} | " + " | ".join(f"{found[k]:.3g}" for k in SHOWN) + " |")
    print(f"\n{report['seconds']} s -> {RESULTS}")


if __name__ == "__main__":
    main()
