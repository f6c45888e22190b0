"""Learning curve: cross-validated error of the default recipe against the number of training locations.

Same 5 held-out folds as cv_accuracy.py; each fold's training set is subsampled to n locations
(``--repeats`` random subsets per n below the full 80, seeds fixed), with the mean-coordinate baseline on
the very same subsets. A log-linear trend mean_km = a + b * ln(n) is fitted to the default recipe's
points and extrapolated to 1k and 16k locations, with a bootstrap interval over the 100 held-out locations.

Usage (repo root):
    .venv/bin/python benchmarks/research/learning_curve.py [--sizes 10,20,40,60,80] [--repeats 3]
Writes benchmarks/research/results/cv_learning_curve.json and learning_curve.png.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
import torch
from cv_accuracy import (
    RESULTS_DIR,
    SEED,
    SHIPPED,
    FeatureBank,
    K,
    fit_heads,
    mean_coordinate,
    predict_heads,
    sample_frame,
    score,
)

from geodemo.dataset import kfold_splits

TARGETS = {"1k": 1_000, "16k": 16_000}  # training locations: a labelled extension; a full LUMEN-size run


def loglinear(n: np.ndarray, km: np.ndarray) -> tuple[float, float]:
    """Least-squares (a, b) of km = a + b ln(n)."""
    b, a = np.polyfit(np.log(n), km, 1)
    return float(a), float(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,20,40,60,80", help="training locations per fold")
    parser.add_argument(
        "--repeats", type=int, default=3, help="random subsets per size (below the full fold)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: tiny heads, shared CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    frame = sample_frame()
    folds = kfold_splits(frame["uuid"], k=K, seed=SEED)
    bank = FeatureBank(SHIPPED.backbone, frame)
    sizes = [int(s) for s in args.sizes.split(",")]
    # per size, per repeat: one (100,) error vector pooled over the 5 held-out folds
    errors = {"default": {}, "mean coordinate": {}}
    for n in sizes:
        for method in errors:
            errors[method][n] = []
        repeats = 1 if n >= min(len(tr) for tr, _ in folds) else args.repeats
        for r in range(repeats):
            rng = np.random.default_rng(1000 * n + r)
            pooled = {m: [] for m in errors}
            for tr, te in folds:
                sub = sorted(rng.choice(tr, size=min(n, len(tr)), replace=False))
                rows = frame[frame["uuid"].isin(set(sub))]
                task, config = fit_heads(SHIPPED, frame, sub, bank)
                pooled["default"].append(score(frame, predict_heads(task, config, frame, te, bank)))
                pooled["mean coordinate"].append(score(frame, mean_coordinate(rows, te)))
            for m, tables in pooled.items():
                errors[m][n].append(pd.concat(tables)["error_km"].to_numpy())
        print(n, {m: round(float(np.mean([e.mean() for e in errors[m][n]])), 1) for m in errors}, flush=True)

    curve = {
        m: {
            str(n): {
                "mean_km": float(np.mean([e.mean() for e in errs])),
                "median_km": float(np.mean([np.median(e) for e in errs])),
                "repeat_mean_km": [float(e.mean()) for e in errs],
                # standard error of the pooled mean over the 100 held-out locations
                "sem_km": float(np.mean([e.std(ddof=1) / np.sqrt(len(e)) for e in errs])),
            }
            for n, errs in per_n.items()
        }
        for m, per_n in errors.items()
    }
    n_arr = np.array(sizes, float)
    km = np.array([curve["default"][str(n)]["mean_km"] for n in sizes])
    a, b = loglinear(n_arr, km)
    # bootstrap over held-out locations (same resample for every size) -> spread of the extrapolation
    rng = np.random.default_rng(0)
    mats = [np.mean(errors["default"][n], axis=0) for n in sizes]  # (100,) per size, repeats averaged
    boot = []
    for _ in range(2000):
        pick = rng.integers(0, len(mats[0]), len(mats[0]))
        boot.append(a_b_at(n_arr, np.array([m[pick].mean() for m in mats])))
    boot = np.array(boot)
    report = {
        "protocol": "5-fold CV by location, training folds subsampled to n; same held-out folds; "
        f"{args.repeats} random subsets per n < full fold; "
        "default recipe = cv_accuracy.SHIPPED (the bundled recipe, T = 0.57)",
        "sizes": sizes,
        "curve": curve,
        "loglinear_fit": {
            "a": a,
            "b_km_per_ln_n": b,
            **{f"extrapolated_mean_km_at_{name}": a + b * np.log(n) for name, n in TARGETS.items()},
            **{
                f"bootstrap_90pct_at_{name}": [
                    float(np.percentile(boot[:, 1 + i], 5)),
                    float(np.percentile(boot[:, 1 + i], 95)),
                ]
                for i, name in enumerate(TARGETS)
            },
            "bootstrap_90pct_slope": [
                float(np.percentile(boot[:, 0], 5)),
                float(np.percentile(boot[:, 0], 95)),
            ],
        },
        "seconds": round(time.perf_counter() - start, 1),
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "cv_learning_curve.json").write_text(json.dumps(report, indent=1))
    plot(curve, sizes, a, b, RESULTS_DIR / "learning_curve.png")
    print(json.dumps(report["loglinear_fit"], indent=1))
    print(f"total {time.perf_counter() - start:.0f} s")


def a_b_at(n: np.ndarray, km: np.ndarray) -> tuple[float, ...]:
    """(slope km per ln n, extrapolated mean km at each of TARGETS) of a log-linear fit."""
    a, b = loglinear(n, km)
    return (b, *(a + b * np.log(t) for t in TARGETS.values()))


def plot(curve: dict, sizes: list[int], a: float, b: float, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    for m, style in (("default", "o-"), ("mean coordinate", "s--")):
        km = [curve[m][str(n)]["mean_km"] for n in sizes]
        sem = [curve[m][str(n)]["sem_km"] for n in sizes]
        ax.errorbar(sizes, km, yerr=sem, fmt=style, capsize=3, label=m)
    grid = np.geomspace(min(sizes), max(sizes), 50)
    ax.plot(grid, a + b * np.log(grid), ":", color="grey", label=f"fit {a:.0f} {b:+.1f}·ln(n)")
    ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(n) for n in sizes])
    ax.set_xlabel("training locations per fold (log scale)")
    ax.set_ylabel("mean error on held-out fold (km)")
    ax.set_title("Learning curve, 5-fold CV on lumen-sample (±1 s.e.)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
