"""Most-uncertain-first ordering: the model's expected error (else cell entropy), on real sample locations."""

from types import SimpleNamespace

import numpy as np
import pytest

from geodemo.active import order_by_uncertainty, uncertainty
from geodemo.data import VIEW_HEADINGS, read_locations, view_paths


def test_uncertainty_prefers_expected_error_then_entropy():
    assert uncertainty(SimpleNamespace(expected_error_km=42.0, cell_probabilities=None)) == (42.0, "km")
    flat = SimpleNamespace(expected_error_km=None, cell_probabilities=np.full(4, 0.25))
    sure = SimpleNamespace(expected_error_km=None, cell_probabilities=np.array([1.0, 0, 0, 0]))
    assert uncertainty(flat) == (pytest.approx(np.log(4)), "nats")
    assert uncertainty(sure)[0] == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(uncertainty(SimpleNamespace(expected_error_km=None, cell_probabilities=None))[0])


def test_order_is_most_uncertain_first(sample_dir, tmp_path):
    from geodemo.predict import Predictor

    predictor = Predictor.load()
    ids = read_locations(sample_dir).uuid.iloc[:8].tolist()
    ordered, scores, unit = order_by_uncertainty(predictor, sample_dir, ids)
    assert sorted(ordered) == sorted(ids) and unit in ("km", "nats")
    values = [scores[u] for u in ordered]
    assert values == sorted(values, reverse=True) and len(set(values)) > 1
    one = predictor.predict({VIEW_HEADINGS[v]: p for v, p in view_paths(sample_dir, ordered[0]).items()})
    assert uncertainty(one)[0] == pytest.approx(scores[ordered[0]], rel=1e-4)
