"""Known answers for the heads' losses (geodemo.losses)."""

import math

import torch
import torch.nn.functional as F

from geodemo import losses


def test_haversine_smoothing_with_tiny_tau_equals_one_hot_ce():
    logits = torch.randn(3, 5)
    true_cell = torch.tensor([0, 2, 4])
    dist = torch.rand(3, 5) * 100 + 10
    dist[torch.arange(3), true_cell] = 1.0  # the true cell's centroid is the nearest
    smoothed = losses.geocell_loss(logits, true_cell, dist, tau_km=1e-3)
    assert torch.allclose(smoothed, F.cross_entropy(logits, true_cell), atol=1e-5)


def test_haversine_soft_targets_follow_distance():
    dist = torch.tensor([[0.0, 10.0, 20.0]])
    q = losses.haversine_soft_targets(dist, torch.tensor([0]), tau_km=10.0)
    assert torch.allclose(q.sum(1), torch.ones(1))
    assert torch.allclose(q[0, 1] / q[0, 0], torch.tensor(math.exp(-1.0)))


def test_geocell_loss_ignores_unknown_cells():
    logits = torch.randn(2, 4)
    loss = losses.geocell_loss(logits, torch.tensor([1, -1]))
    assert torch.allclose(loss, F.cross_entropy(logits[:1], torch.tensor([1])))


def _sincos(deg):
    rad = torch.deg2rad(torch.tensor(deg, dtype=torch.float32))
    return torch.stack([torch.sin(rad), torch.cos(rad)], -1)


def test_circular_heading_loss_known_answers():
    true = torch.tensor([[0.0, 90.0, 180.0, float("nan")]])
    cardinal = torch.zeros(1, 4, 8)
    same = losses.heading_loss(_sincos([[0.0, 90.0, 180.0, 0.0]]) * 3.0, cardinal, true, alpha=0.0)
    opposite = losses.heading_loss(_sincos([[180.0, 270.0, 0.0, 0.0]]), cardinal, true, alpha=0.0)
    assert abs(float(same)) < 1e-6 and abs(float(opposite) - 2.0) < 1e-6
    # alpha x cardinal CE: uniform logits over 8 classes -> + 0.2 * ln 8
    with_ce = losses.heading_loss(_sincos([[0.0, 90.0, 180.0, 0.0]]), cardinal, true, alpha=0.2)
    assert abs(float(with_ce) - 0.2 * math.log(8)) < 1e-5


def test_cardinal_classes():
    assert losses.cardinal_class(torch.tensor([0.0, 44.0, 46.0, 180.0, 350.0])).tolist() == [0, 1, 1, 4, 0]


def test_focal_loss_gamma_zero_is_ce_and_down_weights_easy_examples():
    logits, target = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.allclose(
        losses.focal_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target), atol=1e-6
    )
    easy = torch.tensor([[10.0, 0.0, 0.0]])
    assert losses.focal_loss(easy, torch.tensor([0])) < 1e-3 * F.cross_entropy(easy, torch.tensor([0]))
