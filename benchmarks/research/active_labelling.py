"""Does labelling the most uncertain locations first help? Learning curves of two ways to grow a training set
from a 20-location start in steps of 10: add 10 at random, or add the 10 the current model is most uncertain
about (its expected_error_km, geodemo.active's order). 5-fold CV by location on the sample: fold i is the
test set, the other 80 the unlabelled pool; the bundled recipe's heads on cached frozen features
(cv_accuracy.fit_heads); the same random start per fold for both strategies; repeated over 3 start seeds.
Reports mean km on the test folds per training-set size and the paired difference (uncertain - random) with
its standard error over the 100 x 3 test predictions.

Usage: .venv/bin/python benchmarks/research/active_labelling.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE.parent)]  # the repository, benchmarks/ (_common)

from _common import write_result  # noqa: E402
from cv_accuracy import (  # noqa: E402
    RESULTS_DIR,
    SEED,
    SHIPPED,
    FeatureBank,
    K,
    fit_heads,
    head_outputs,
    sample_frame,
)

from geodemo import geo  # noqa: E402
from geodemo.dataset import kfold_splits  # noqa: E402
from geodemo.readout import Readout  # noqa: E402

START, STEP, ROUNDS = 20, 10, 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="random starts per fold (3 in the protocol)")
    seeds = tuple(range(parser.parse_args().seeds))
    start_time = time.perf_counter()
    frame = sample_frame()
    truth = frame.set_index("uuid")
    bank = FeatureBank(SHIPPED.backbone, frame)
    folds = kfold_splits(frame["uuid"], k=K, seed=SEED)
    sizes = [START + STEP * r for r in range(ROUNDS + 1)]
    errors = {s: {n: [] for n in sizes} for s in ("random", "uncertain")}

    def fit_and_read(train_ids, *id_lists):
        task, config = fit_heads(SHIPPED, frame, list(train_ids), bank)
        return [Readout(config).read(head_outputs(task, config, list(ids), bank)) for ids in id_lists]

    for seed in seeds:
        for train_pool, test_ids in folds:
            rng = np.random.default_rng(seed)
            pool = list(train_pool)
            first = list(rng.choice(pool, START, replace=False))
            test = truth.loc[list(test_ids)]
            lat_t, lon_t = test.latitude.to_numpy(), test.longitude.to_numpy()
            for strategy in errors:
                labelled = list(first)
                for n in sizes:
                    rest = [u for u in pool if u not in set(labelled)]
                    r, on_rest = fit_and_read(labelled, test_ids, rest)
                    errors[strategy][n].append(geo.haversine_km(lat_t, lon_t, r.lat, r.lon))
                    if strategy == "random":
                        labelled += list(np.random.default_rng([seed, n]).choice(rest, STEP, replace=False))
                    else:  # the model's own expected error on the unlabelled pool: most uncertain first
                        labelled += [rest[i] for i in np.argsort(-on_rest.expected_km, kind="stable")[:STEP]]
    curve = {}
    for n in sizes:
        rnd, unc = np.concatenate(errors["random"][n]), np.concatenate(errors["uncertain"][n])
        diff = unc - rnd
        curve[n] = {
            "random_mean_km": float(rnd.mean()),
            "uncertain_mean_km": float(unc.mean()),
            "paired_diff_mean_km": float(diff.mean()),
            "paired_diff_se_km": float(diff.std(ddof=1) / np.sqrt(len(diff))) if diff.any() else 0.0,
            "n": int(len(diff)),
        }
        print(n, curve[n], flush=True)
    result = {"protocol": __doc__.split("\n\n")[0], "start": START, "step": STEP, "seeds": list(seeds),
              "curve": curve, "seconds": round(time.perf_counter() - start_time, 1)}
    print(f"wrote {write_result('active_labelling', result, RESULTS_DIR)}")


if __name__ == "__main__":
    main()
