"""You vs the model: pick locations for a game, score guesses GeoGuessr-style, summarise a game.

Score: GeoGuessr's rule, 5000 * exp(-d / s) points for a guess d km from the truth, where s is a tenth of
the map's diagonal. On the world map s = 14,927 km / 10 = 1,492.7 km; here the map is Croatia, whose
bounding-box diagonal is 661 km, so s = 66.1 km: 0 km scores 5000, 10 km 4300, 50 km 2350, 200 km 240.

The truth lives only in the server-side game state until the guess is in; the UI and `/play` API never send
it earlier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from geodemo import geo
from geodemo.data import VIEW_HEADINGS, read_locations, view_paths

MAX_SCORE = 5000
ROUNDS = 5
SUMMARY_COLUMNS = ["round", "you (km)", "you (points)", "model (km)", "model (points)"]


# GeoGuessr's s = map diagonal / 10; Croatia's bounding-box diagonal is 661.4 km (tests check it).
SCORE_SCALE_KM = 66.1


def score(distance_km: float) -> int:
    """GeoGuessr-style points, 0..5000, for a guess `distance_km` km from the truth."""
    if not math.isfinite(distance_km) or distance_km < 0:
        raise ValueError(f"a distance must be a finite number of km >= 0, not {distance_km!r}")
    return int(round(MAX_SCORE * math.exp(-distance_km / SCORE_SCALE_KM)))


@dataclass
class Round:
    """One location of a game; `guess`/`model` are (lat, lon) degrees once the player has guessed."""

    uuid: str
    truth: tuple[float, float]
    views: dict[int, Path]  # heading -> view file
    guess: tuple[float, float] | None = None
    model: tuple[float, float] | None = None

    def result(self) -> dict:
        """The reveal: truth, guess and model points with km and score (only after the guess)."""
        if self.guess is None or self.model is None:
            raise ValueError("this round has no guess yet; click the map and press Guess first")
        you_km = float(geo.haversine_km(*self.truth, *self.guess))
        model_km = float(geo.haversine_km(*self.truth, *self.model))
        return {
            "truth": {"latitude": self.truth[0], "longitude": self.truth[1]},
            "guess": {"latitude": self.guess[0], "longitude": self.guess[1]},
            "model": {"latitude": self.model[0], "longitude": self.model[1]},
            "you_km": you_km,
            "you_score": score(you_km),
            "model_km": model_km,
            "model_score": score(model_km),
        }


@dataclass
class Game:
    """A game of `ROUNDS` locations from one dataset; `current` is the round being played."""

    dataset: str
    rounds: list[Round]
    current: int = 0
    results: list[dict] = field(default_factory=list)

    @property
    def round(self) -> Round:
        """The round being played (or the last one when the game is over)."""
        return self.rounds[min(self.current, len(self.rounds) - 1)]

    @property
    def over(self) -> bool:
        """True when every round has been guessed."""
        return len(self.results) == len(self.rounds)

    def guess(self, latitude, longitude, model_point: tuple[float, float]) -> dict:
        """Record the player's guess (degrees) and the model's point for the current round; the reveal.

        Raises:
            ValueError: no guess given, not a number, outside Croatia, or the round already guessed.
        """
        if latitude is None or longitude is None:
            raise ValueError("Click the map where you think the photos were taken, then press Guess.")
        try:
            lat, lon = float(latitude), float(longitude)
        except (TypeError, ValueError):
            raise ValueError(f"a guess must be numbers in degrees, not {latitude!r}, {longitude!r}") from None
        if not (math.isfinite(lat) and math.isfinite(lon)) or not geo.in_croatia(lat, lon, tolerance_km=25.0):
            raise ValueError(f"{lat:.4f}, {lon:.4f} is outside Croatia; click on the map of Croatia.")
        if self.over or self.round.guess is not None:
            raise ValueError("This round is already guessed; press Next round (or New game).")
        self.round.guess, self.round.model = (lat, lon), (float(model_point[0]), float(model_point[1]))
        self.results.append({"round": self.current + 1, **self.round.result()})
        return self.results[-1]

    def next_round(self) -> Round:
        """Move on after a guess; refuses to skip an unguessed round or to run past the last one."""
        if self.round.guess is None:
            raise ValueError("Guess this round first: click the map and press Guess.")
        if self.current + 1 >= len(self.rounds):
            raise ValueError("The game is over; press New game to play again.")
        self.current += 1
        return self.round

    def summary(self) -> pd.DataFrame:
        """One row per guessed round (km, points for you and the model) plus a total row."""
        rows = [
            {
                "round": r["round"],
                "you (km)": round(r["you_km"], 1),
                "you (points)": r["you_score"],
                "model (km)": round(r["model_km"], 1),
                "model (points)": r["model_score"],
            }
            for r in self.results
        ]
        frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
        if rows:
            total = {
                "round": "total",
                "you (km)": round(frame["you (km)"].mean(), 1),
                "you (points)": int(frame["you (points)"].sum()),
                "model (km)": round(frame["model (km)"].mean(), 1),
                "model (points)": int(frame["model (points)"].sum()),
            }
            frame = pd.concat([frame.astype(object), pd.DataFrame([total])], ignore_index=True)
        return frame


def new_game(root, rounds: int = ROUNDS, seed: int | None = None) -> Game:
    """Draw `rounds` distinct random locations (with at least one view) of a LUMEN-layout dataset.

    Args:
        root: dataset folder (data.csv + images/); seed: for a reproducible draw (None: fresh each game).

    Raises:
        DatasetError / ValueError: unreadable dataset, or no location with views.
    """
    root = Path(root)
    frame = read_locations(root)
    order = np.random.default_rng(seed).permutation(len(frame))
    chosen = []
    for i in order:
        row = frame.iloc[int(i)]
        paths = view_paths(root, str(row.uuid))
        if paths:
            views = {VIEW_HEADINGS[v]: p for v, p in sorted(paths.items())}
            chosen.append(Round(str(row.uuid), (float(row.latitude), float(row.longitude)), views))
        if len(chosen) == rounds:
            break
    if not chosen:
        raise ValueError(f"{root} has no location with view images; choose another dataset.")
    return Game(str(root), chosen)
