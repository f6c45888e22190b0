"""kNN vote as a second opinion: the 5 nearest training locations' cells (softmax of cosine / 0.05) mixed into
the cell head's probabilities before the point is read out, weight w in W. 5-fold CV by location on the sample
with the bundled recipe's heads (cv_accuracy.DEFAULT on cached frozen features, as cv_accuracy measures them);
each fold's index holds only its training locations. w is chosen for fold i on the OTHER folds' held-out
errors (cross-fitted: fold i's errors never choose its own w; the heads are not re-trained per w), then
the per-location paired difference against the head alone (w = 0). Adopt only if it wins by more than 2 SE.

Usage: .venv/bin/python benchmarks/research/knn_mix.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE.parent)]  # the repository, benchmarks/ (_common)

from _common import write_result  # noqa: E402
from cv_accuracy import (  # noqa: E402
    DEFAULT,
    RESULTS_DIR,
    SEED,
    FeatureBank,
    K,
    fit_heads,
    head_outputs,
    pooled_features,
    sample_frame,
)

from geodemo import geo  # noqa: E402
from geodemo.cells import CellSet  # noqa: E402
from geodemo.dataset import kfold_splits  # noqa: E402
from geodemo.readout import Readout  # noqa: E402
from geodemo.retrieval import K as NEIGHBOURS  # noqa: E402
from geodemo.retrieval import build_index, knn_vote, mix  # noqa: E402

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def main() -> None:
    start = time.perf_counter()
    frame = sample_frame()
    truth = frame.set_index("uuid")
    bank = FeatureBank(DEFAULT.backbone, frame)
    folds = kfold_splits(frame["uuid"], k=K, seed=SEED)
    errors = []  # per fold: (n_test, len(WEIGHTS)) km
    for train_ids, test_ids in folds:
        task, model_config = fit_heads(DEFAULT, frame, train_ids, bank)
        out = head_outputs(task, model_config, test_ids, bank)
        train = truth.loc[list(train_ids)]
        xtr = pooled_features(bank, train_ids)
        index = build_index(xtr, train.latitude, train.longitude, list(train_ids))
        idx, sims = index.search(pooled_features(bank, test_ids), NEIGHBOURS)
        cells = CellSet.from_dict(model_config.cells)
        vote = knn_vote(index, idx, sims, cells.assign, out["geocell"].shape[1])
        readout = Readout(model_config)
        lat_t, lon_t = truth.latitude[list(test_ids)].to_numpy(), truth.longitude[list(test_ids)].to_numpy()
        fold = []
        for w in WEIGHTS:
            r = readout.read({**out, "geocell": mix(out["geocell"], vote, w)})
            fold.append(geo.haversine_km(lat_t, lon_t, r.lat, r.lon))
        errors.append(np.stack(fold, 1))
    chosen, mixed, head = [], [], []
    for i, e in enumerate(errors):
        others = np.concatenate([x for j, x in enumerate(errors) if j != i])
        best = int(np.argmin(others.mean(0)))
        chosen.append(WEIGHTS[best])
        mixed.append(e[:, best])
        head.append(e[:, 0])
    mixed, head = np.concatenate(mixed), np.concatenate(head)
    diff = mixed - head
    se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    pooled = np.concatenate(errors)
    result = {
        "protocol": __doc__.split("\n\n")[0],
        "weights": list(WEIGHTS),
        "chosen_weight_per_fold": chosen,
        "mean_km_per_weight_pooled": [float(x) for x in pooled.mean(0)],
        "head_mean_km": float(head.mean()),
        "mixed_mean_km": float(mixed.mean()),
        "head_median_km": float(np.median(head)),
        "mixed_median_km": float(np.median(mixed)),
        "paired_diff_mean_km": float(diff.mean()),
        "paired_diff_se_km": se,
        "adopt": bool(diff.mean() < -2 * se),
        "n": int(len(diff)),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print({k: v for k, v in result.items() if k != "protocol"})
    print(f"wrote {write_result('knn_mix', result, RESULTS_DIR)}")


if __name__ == "__main__":
    main()
