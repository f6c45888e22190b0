"""Losses of the heads (torch only, no Lightning): haversine-smoothed cell cross-entropy, circular heading
loss, focal loss. Each head in geodemo.heads calls its own from `Head.loss`; training.tasks sums them."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def haversine_soft_targets(dist_km: torch.Tensor, true_cell: torch.Tensor, tau_km: float) -> torch.Tensor:
    """PIGEON soft targets over cells: q_i ∝ exp(-(d_i - d_true) / tau).

    Args:
        dist_km: (B, C) haversine km from each true point to every cell centroid.
        true_cell: (B,) int64 cell id of each true point.
        tau_km: temperature in km (> 0); small tau -> mass on the nearest centroids.

    Returns:
        (B, C) float32 rows summing to 1.
    """
    d_true = dist_km.gather(1, true_cell[:, None])
    # softmax == normalised exp; subtracting d_true only keeps the exponent near 0
    return torch.softmax(-(dist_km - d_true).float() / tau_km, dim=1)


def geocell_loss(
    logits: torch.Tensor,
    true_cell: torch.Tensor,
    dist_km: torch.Tensor | None = None,
    tau_km: float = 0.0,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy over cells, haversine-smoothed when ``tau_km > 0`` (then ``dist_km`` (B, C) is needed).

    Args:
        logits: (B, C) cell logits.
        true_cell: (B,) int64 cell ids (-1 rows are ignored).
    """
    keep = true_cell >= 0
    if not keep.any():
        return logits.sum() * 0.0
    logits, true_cell = logits[keep], true_cell[keep]
    if tau_km <= 0:
        return F.cross_entropy(logits.float(), true_cell, label_smoothing=label_smoothing)
    q = haversine_soft_targets(dist_km[keep], true_cell, tau_km)
    return -(q * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def cardinal_class(heading_deg: torch.Tensor) -> torch.Tensor:
    """Heading degrees -> 8 cardinal classes (N, NE, E, ... NW): round(h / 45) % 8, int64."""
    return torch.round(heading_deg / 45.0).long() % 8


def heading_loss(
    sincos: torch.Tensor, cardinal_logits: torch.Tensor, heading_deg: torch.Tensor, alpha: float = 0.2
) -> torch.Tensor:
    """Circular loss ``1 - cos(pred - true)`` on normalised (sin, cos) + alpha x cardinal CE.

    Args:
        sincos: (B, V, 2) raw (sin, cos) predictions; normalised here.
        cardinal_logits: (B, V, 8) logits over cardinal directions.
        heading_deg: (B, V) true heading in degrees clockwise from north; NaN where the view is missing.

    Returns:
        scalar, 0 when every angle matches; the circular part is 2 for opposite angles.
    """
    present = ~torch.isnan(heading_deg)
    if not present.any():
        return sincos.sum() * 0.0
    pred = F.normalize(sincos[present].float(), dim=-1)  # (N, 2) = (sin, cos)
    true = torch.deg2rad(heading_deg[present].float())
    cos_diff = pred[:, 0] * torch.sin(true) + pred[:, 1] * torch.cos(true)
    circular = (1.0 - cos_diff).mean()
    if alpha == 0:
        return circular
    ce = F.cross_entropy(cardinal_logits[present].float(), cardinal_class(heading_deg[present]))
    return circular + alpha * ce


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, ignore_index: int = -1
) -> torch.Tensor:
    """Focal loss ``-(1 - p_t)^gamma log p_t`` (Lin et al. 2017), mean over kept rows.

    Args:
        logits: (B, K). target: (B,) int64 class ids; ``ignore_index`` rows are dropped.
    """
    keep = target != ignore_index
    if not keep.any():
        return logits.sum() * 0.0
    logp = F.log_softmax(logits[keep].float(), dim=1).gather(1, target[keep][:, None]).squeeze(1)
    return (-((1.0 - logp.exp()) ** gamma) * logp).mean()
