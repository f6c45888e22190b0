"""Point modes and the model's own uncertainty, by 5-fold CV by location on the real sample.

Same folds, features and heads as ``cv_accuracy.py`` (the default recipe's frozen-lite0 heads trained on the
embedding cache for a fixed number of epochs, last weights). Every point mode reads the SAME held-out
outputs through ``geodemo.readout.Readout``, so the differences are paired per location.

Calibration of the default mode: the mean ``expected_error_km`` against the mean actual error, and the share
of truths inside the 50% / 90% credible regions (smallest cell sets holding that probability). Also with a
temperature fitted INSIDE each training fold: an inner 4-fold CV over the training locations gives
out-of-fold cell probabilities, and T minimises their negative log-likelihood of the true cell.

Usage (repo root): .venv/bin/python benchmarks/research/point_mode.py [--no-temperature]
Writes benchmarks/research/results/point_mode.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cv_accuracy import DEFAULT, RESULTS_DIR, SAMPLE, SEED, FeatureBank, K, fit_heads, head_outputs  # noqa: E402

from geodemo import geo  # noqa: E402
from geodemo.data import read_locations  # noqa: E402
from geodemo.dataset import kfold_splits  # noqa: E402
from geodemo.readout import Readout  # noqa: E402
from geodemo.readout import temper as tempered  # noqa: E402

RAW = "weighted_mean (old default) as it was: not snapped, county = county head's top class"
TEMPERATURES = np.exp(np.linspace(np.log(0.25), np.log(4.0), 81))


def variants(readout: Readout) -> dict[str, tuple[Readout, str]]:
    """Method name -> (readout, point mode)."""
    only = Readout(readout.config, with_land_grid=False)  # candidates: the cell centroids alone
    return {
        "min_expected_km (default)": (readout, "min_expected_km"),
        "min_expected_km, centroids only": (only, "min_expected_km"),
        "weighted_mean (old default), snapped to land": (readout, "weighted_mean"),
        "argmax cell": (readout, "argmax"),
    }


def nll(p: np.ndarray, cell: np.ndarray, t: float) -> float:
    """Summed negative log-likelihood of the true cells under the cell probabilities at temperature t."""
    return float(-np.log(tempered(p, t)[np.arange(len(cell)), cell].clip(1e-300)).sum())


def inner_temperature(cfg, frame, train_ids, bank) -> float:
    """T fitted on out-of-fold probabilities of an inner 4-fold CV over the training locations only."""
    folds = []
    for inner_train, inner_test in kfold_splits(train_ids, k=4, seed=SEED):
        task, model_config = fit_heads(cfg, frame, inner_train, bank)
        truth = frame.set_index("uuid").loc[inner_test]
        cell = Readout(model_config).cells.assign(truth["latitude"].to_numpy(), truth["longitude"].to_numpy())
        folds.append((head_outputs(task, model_config, inner_test, bank)["geocell"], cell))
    # each inner fold has its own cells (built from its training points): sum the NLL over folds
    return float(TEMPERATURES[int(np.argmin([sum(nll(p, c, t) for p, c in folds) for t in TEMPERATURES]))])


def calibration(readout: Readout, out: dict, lat: np.ndarray, lon: np.ndarray) -> dict:
    """Per-location expected km, actual km and whether the truth is inside the 50% / 90% regions."""
    r = readout.read(out)
    return {
        "expected_km": r.expected_km.tolist(),
        "actual_km": geo.haversine_km(lat, lon, r.lat, r.lon).tolist(),
        "in_50": readout.truth_in_region(out, lat, lon, 0.5).tolist(),
        "in_90": readout.truth_in_region(out, lat, lon, 0.9).tolist(),
        "cells_50": Readout.credible_set(out["geocell"], 0.5).sum(1).tolist(),
        "cells_90": Readout.credible_set(out["geocell"], 0.9).sum(1).tolist(),
    }


def summary_of(rows: dict) -> dict:
    expected, actual = np.mean(rows["expected_km"]), np.mean(rows["actual_km"])
    return {
        "mean_expected_km": float(expected),
        "mean_actual_km": float(actual),
        "expected_over_actual": float(expected / actual),
        "coverage_50": float(np.mean(rows["in_50"])),
        "coverage_90": float(np.mean(rows["in_90"])),
        "median_cells_50": float(np.median(rows["cells_50"])),
        "median_cells_90": float(np.median(rows["cells_90"])),
        "corr_expected_actual": float(np.corrcoef(rows["expected_km"], rows["actual_km"])[0, 1]),
    }


def paired(calib: dict) -> dict | None:
    """Mean km of the min_expected_km point with the fitted T minus with T = 1, and the paired s.e."""
    if not calib["T fitted in the training folds"]:
        return None
    d = np.subtract(calib["T fitted in the training folds"]["actual_km"], calib["T = 1"]["actual_km"])
    return {"delta_mean_km": float(d.mean()), "se_km": float(d.std(ddof=1) / np.sqrt(len(d)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-temperature", action="store_true", help="skip the nested temperature fit")
    parser.add_argument("--out", default="point_mode.json", help="file name in benchmarks/research/results")
    args = parser.parse_args()
    t0 = time.perf_counter()
    cfg = dataclasses.replace(DEFAULT, point_mode="min_expected_km")
    frame = read_locations(SAMPLE)
    bank = FeatureBank(cfg.backbone, frame)
    folds = kfold_splits(frame["uuid"], k=K, seed=SEED)
    errors: dict[str, list[float]] = {}
    outside_raw, county_hits = [], {}
    calib = {"T = 1": {}, "T fitted in the training folds": {}}
    temperatures = []
    for i, (train_ids, test_ids) in enumerate(folds):
        task, model_config = fit_heads(cfg, frame, train_ids, bank)
        out = head_outputs(task, model_config, test_ids, bank)
        truth = frame.set_index("uuid").loc[test_ids]
        lat, lon = truth["latitude"].to_numpy(float), truth["longitude"].to_numpy(float)
        true_county = geo.county_index(lat, lon)
        readout = Readout(model_config)
        for name, (ro, mode) in variants(readout).items():
            r = ro.read(out, mode)
            errors.setdefault(name, []).extend(geo.haversine_km(lat, lon, r.lat, r.lon).tolist())
            known = true_county >= 0
            hits = (np.array([geo.COUNTY_CODES.index(ro.codes[j]) for j in r.county]) == true_county)[known]
            county_hits.setdefault(name, []).extend(hits.tolist())
        p = out["geocell"]  # the old rule before snapping: how often it left the country, and its error
        raw_lat, raw_lon = geo.from_3765(p @ readout.cell_x, p @ readout.cell_y)
        outside_raw.extend((~geo.in_croatia(raw_lat, raw_lon, tolerance_km=0)).tolist())
        errors.setdefault(RAW, []).extend(geo.haversine_km(lat, lon, raw_lat, raw_lon).tolist())
        head = [geo.COUNTY_CODES.index(readout.codes[j]) for j in readout.read(out).county_p.argmax(1)]
        county_hits.setdefault(RAW, []).extend((np.array(head) == true_county)[true_county >= 0].tolist())
        for key, value in calibration(readout, out, lat, lon).items():
            calib["T = 1"].setdefault(key, []).extend(value)
        if not args.no_temperature:
            t = inner_temperature(cfg, frame, train_ids, bank)
            temperatures.append(t)
            warmed = {**out, "geocell": tempered(p, t)}
            for key, value in calibration(readout, warmed, lat, lon).items():
                calib["T fitted in the training folds"].setdefault(key, []).extend(value)
        print(
            f"fold {i}: {np.mean(errors['min_expected_km (default)'][-len(test_ids) :]):.1f} km "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )

    reference = RAW
    methods = {}
    for name, err in errors.items():
        e, d = np.asarray(err), np.asarray(err) - np.asarray(errors[reference])
        methods[name] = {
            "mean_km": float(e.mean()),
            "median_km": float(np.median(e)),
            "acc_25km": float((e <= 25).mean()),
            "acc_100km": float((e <= 100).mean()),
            "county_accuracy": float(np.mean(county_hits[name])),
            "delta_vs_weighted_mean_km": float(d.mean()),
            "se_km": float(d.std(ddof=1) / np.sqrt(len(d))),
            "errors_km": err,
        }
    report = {
        "protocol": f"{K}-fold CV by location (seed {SEED}) on {SAMPLE.name}; default recipe heads on cached "
        "frozen tf_efficientnet_lite0 features; every mode reads the same held-out outputs",
        "weighted_mean_outside_croatia_before_snapping": int(np.sum(outside_raw)),
        "locations": len(outside_raw),
        "methods": methods,
        "calibration": {k: {**summary_of(v), "per_location": v} for k, v in calib.items() if v},
        "temperatures": temperatures,
        "tempered_vs_untempered_point": paired(calib),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / args.out).write_text(json.dumps(report, indent=1))
    outside = report["weighted_mean_outside_croatia_before_snapping"]
    print(f"\nold rule outside Croatia before snapping: {outside} of {report['locations']}\n")
    print("| point mode | mean km | median km | ≤25 km | ≤100 km | county acc | Δ vs old rule (s.e.) |")
    print("|---|---|---|---|---|---|---|")
    for name, m in methods.items():
        cells = [f"{m['mean_km']:.1f}", f"{m['median_km']:.1f}"]
        cells += [f"{m['acc_25km']:.0%}", f"{m['acc_100km']:.0%}"]
        cells += [f"{m['county_accuracy']:.0%}", f"{m['delta_vs_weighted_mean_km']:+.1f} ({m['se_km']:.1f})"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n| calibration | mean expected km | mean actual km | ratio | truth in 50% region | in 90% region "
          "| median cells 50% / 90% | corr |")
    print("|---|---|---|---|---|---|---|---|")
    for name, c in report["calibration"].items():
        cells = [f"{c['mean_expected_km']:.1f}", f"{c['mean_actual_km']:.1f}"]
        cells += [f"{c['expected_over_actual']:.2f}"]
        cells += [f"{c['coverage_50']:.0%}", f"{c['coverage_90']:.0%}"]
        cells += [f"{c['median_cells_50']:.0f} / {c['median_cells_90']:.0f}"]
        cells += [f"{c['corr_expected_actual']:.2f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if temperatures:
        print(f"\ntemperatures per fold: {', '.join(f'{t:.2f}' for t in temperatures)}")
        t = report["tempered_vs_untempered_point"]
        print(f"min_expected_km point with T vs T = 1: {t['delta_mean_km']:+.1f} km (s.e. {t['se_km']:.1f})")


if __name__ == "__main__":
    main()
