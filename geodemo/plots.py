"""Plotly charts that are not maps: the error histogram and CDF (Evaluate), the training curves (Train)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go


def error_histogram(frame: pd.DataFrame) -> go.Figure:
    """Histogram of error_km."""
    fig = go.Figure(go.Histogram(x=frame.error_km, nbinsx=30, marker={"color": "#4c78a8"}))
    fig.update_layout(
        xaxis_title="error (km)",
        yaxis_title="locations",
        height=300,
        margin={"l": 50, "r": 10, "t": 30, "b": 40},
        title="Error histogram",
    )
    return fig


def error_cdf(frame: pd.DataFrame) -> go.Figure:
    """Cumulative share of locations within x km, with the 25/50/100/200 km marks."""
    err = np.sort(frame.error_km.to_numpy(dtype=float))
    share = np.arange(1, len(err) + 1) / max(len(err), 1)
    fig = go.Figure(go.Scatter(x=err, y=share, mode="lines", line={"shape": "hv", "color": "#4c78a8"}))
    for km in (25, 50, 100, 200):
        fig.add_vline(x=km, line={"dash": "dot", "color": "#aaa", "width": 1})
    fig.update_layout(
        xaxis_title="error (km)",
        yaxis_title="share within",
        yaxis_tickformat=".0%",
        height=300,
        margin={"l": 50, "r": 10, "t": 30, "b": 40},
        title="Error CDF",
    )
    return fig


def training_curves(history: list[dict]) -> go.Figure:
    """Training loss and validation mean km per epoch (from a job's progress.json history)."""
    frame = pd.DataFrame(history or [], columns=["epoch", "train/loss", "val/mean_km"])
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=frame.epoch, y=frame["train/loss"], name="train loss", mode="lines+markers"))
    fig.add_trace(
        go.Scatter(
            x=frame.epoch, y=frame["val/mean_km"], name="val mean km", mode="lines+markers", yaxis="y2"
        )
    )
    fig.update_layout(
        height=280,
        margin={"l": 50, "r": 50, "t": 30, "b": 40},
        title="Training curves",
        xaxis_title="epoch",
        yaxis={"title": "loss"},
        yaxis2={"title": "val km", "overlaying": "y", "side": "right"},
        legend={"orientation": "h", "y": -0.3},
    )
    return fig
