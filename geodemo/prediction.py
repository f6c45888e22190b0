"""What a prediction is: the Prediction dataclass (the /predict JSON) and how a location's views are named."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from geodemo.data import VIEW_HEADINGS

DIRECTIONS = {"north": 0, "east": 90, "south": 180, "west": 270}


@dataclass
class Prediction:
    """Where one location is, with everything the app shows. Degrees WGS84; probabilities sum to 1."""

    latitude: float  # the point (geodemo.readout): always on Croatian land
    longitude: float
    county: str  # name_hr of the county CONTAINING the point
    county_code: str  # its ISO 3166-2 code
    county_probabilities: dict[str, float]  # the county head's name_hr -> p, all 21, sorted descending
    cell_probabilities: np.ndarray | None  # (C,) or None without a geocell head
    top_cells: list[dict]  # [{latitude, longitude, probability}] top 10 centroids
    argmax_cell: tuple[float, float] | None  # (lat, lon) centroid of the most probable cell
    headings: dict[str, float]  # "0"/"90"/... (present views) -> predicted heading, degrees
    model: str  # checkpoint name
    elapsed_ms: float
    timings_ms: dict = field(default_factory=dict)  # decode, resize (+ crop, normalise), forward, post ms
    neighbours: list = field(default_factory=list)  # similar training locations (geodemo.retrieval)
    expected_error_km: float | None = None  # the model's own expected km to the truth (None: coords only)

    def to_json(self) -> dict:
        """The /predict API object: exactly the contract keys, plain JSON types."""
        return {
            "latitude": self.latitude,
            "longitude": self.longitude,
            "county": self.county,
            "county_probabilities": self.county_probabilities,
            "top_cells": self.top_cells,
            "headings": self.headings,
            "neighbours": self.neighbours,
            "expected_error_km": self.expected_error_km,
            "model": self.model,
            "elapsed_ms": self.elapsed_ms,
        }


def view_slots(views) -> dict[int, object]:
    """dict {0|90|180|270|"north"...: source|None} or list of up to 4 (N, E, S, W) -> {view index: source}."""
    if isinstance(views, dict):
        slots = {}
        for key, source in views.items():
            heading = DIRECTIONS.get(str(key).lower(), key)
            try:
                v = VIEW_HEADINGS.index(int(heading))
            except (ValueError, TypeError):
                raise ValueError(
                    f"unknown view {key!r}; use headings {VIEW_HEADINGS} or north/east/south/west"
                ) from None
            if source is not None:
                slots[v] = source
    elif isinstance(views, (list, tuple)):
        if len(views) > len(VIEW_HEADINGS):
            raise ValueError(
                f"got {len(views)} views; a location has at most {len(VIEW_HEADINGS)} (N, E, S, W)"
            )
        slots = {v: s for v, s in enumerate(views) if s is not None}
    else:
        raise ValueError(
            "views must be a dict {0, 90, 180, 270: image} or a list of up to 4 images (N, E, S, W)"
        )
    if not slots:
        raise ValueError("at least one view image is required (north, east, south or west)")
    return slots
