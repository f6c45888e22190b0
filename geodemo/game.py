"""You vs the model: pick locations for a game, score guesses GeoGuessr-style, summarise a game.

Score: GeoGuessr's rule, 5000 * exp(-d / s) points for a guess d km from the truth, where s is a tenth of
the map's diagonal. On the world map s = 14,927 km / 10 = 1,492.7 km; here the map is Croatia, whose
bounding-box diagonal is 661 km, so s = 66.1 km: 0 km scores 5000, 10 km 4300, 50 km 2350, 200 km 240.

The truth lives only in the server-side game state until the guess is in; the UI and `/play` API never send
it earlier.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from geodemo import geo
from geodemo.data import VIEW_HEADINGS, read_locations, view_paths
from geodemo.truth import train_overlap

MAX_SCORE = 5000
ROUNDS = 5
SUMMARY_COLUMNS = ["round", "you (km)", "you (points)", "model (km)", "model (points)"]


# GeoGuessr's s = map diagonal / 10; Croatia's bounding-box diagonal is 661.4 km (tests check it).
SCORE_SCALE_KM = 66.1
WORLD_SCALE_KM = 1492.7  # the world map's s: OSV-5M's GeoScore (evaluations report both)
# Where a game's rounds come from (Game.fairness).
UNSEEN, TRAINING, UNKNOWN = "unseen", "training", "unknown"


def geoscore(distance_km, scale_km: float = WORLD_SCALE_KM) -> np.ndarray:
    """GeoScore points (0..5000, not rounded) for distances in km: 5000 * exp(-d / scale_km)."""
    return MAX_SCORE * np.exp(-np.asarray(distance_km, dtype=np.float64) / scale_km)


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
    fairness: str = UNKNOWN  # UNSEEN: none of the rounds trained the model; TRAINING: all did; UNKNOWN
    pool: int = 0  # how many locations the rounds were drawn from

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
        """One row per guessed round (km, points for you and the model), then a "mean" row (the km
        columns' mean) and a "total" row (the points' sum): a mean km never sits beside summed points."""
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
            mean = {"round": "mean", "you (km)": round(frame["you (km)"].mean(), 1), "you (points)": "",
                    "model (km)": round(frame["model (km)"].mean(), 1), "model (points)": ""}
            total = {"round": "total", "you (km)": "", "you (points)": int(frame["you (points)"].sum()),
                     "model (km)": "", "model (points)": int(frame["model (points)"].sum())}
            frame = pd.concat([frame.astype(object), pd.DataFrame([mean, total])], ignore_index=True)
        return frame


def _locations(roots) -> pd.DataFrame:
    """Every location of the datasets (uuid, latitude, longitude, root; source_uuid where recorded)."""
    frames = []
    for root in roots:
        frame = read_locations(Path(root))
        frames.append(frame.assign(root=str(root)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["uuid", "root"])


def seen_in_training(frame: pd.DataFrame, train_locations: dict | None) -> np.ndarray | None:
    """(N,) bool: the location trained the checkpoint (its uuid, its `source_uuid` - a label made from a
    training location - or a point within 10 m of one); None when the checkpoint does not record them."""
    config = SimpleNamespace(train_locations=train_locations)
    seen = train_overlap(config, frame["latitude"].to_numpy(float), frame["longitude"].to_numpy(float),
                         frame["uuid"].astype(str))
    if seen is None:
        return None
    if "source_uuid" in frame:
        sources = frame["source_uuid"].fillna("").astype(str)
        seen = seen | np.isin(sources, np.asarray(train_locations["uuid"], dtype=str))
    return seen


def new_game(root, rounds: int = ROUNDS, seed: int | None = None,
             train_locations: dict | None = None) -> Game:
    """Draw `rounds` distinct random locations (with at least one view) of one or more LUMEN datasets.

    With the checkpoint's `train_locations` (its config's record) the game is fair: it draws only from
    locations the model did not train on, and from its training locations only when no other exists
    (`Game.fairness` says which).

    Args:
        root: dataset folder (data.csv + images/), or a list of them; seed: for a reproducible draw (None:
            fresh each game); train_locations: {uuid, latitude, longitude} lists, None when unknown.

    Raises:
        DatasetError / ValueError: unreadable dataset, or no location with views.
    """
    roots = [Path(r) for r in root] if isinstance(root, (list, tuple)) else [Path(root)]
    frame = _locations(roots)
    seen = seen_in_training(frame, train_locations) if train_locations and len(frame) else None
    fairness = UNKNOWN
    if seen is not None:
        unseen = frame[~seen]
        has_views = [bool(view_paths(Path(r.root), str(r.uuid))) for r in unseen.itertuples()]
        fairness = UNSEEN if any(has_views) else TRAINING
        frame = unseen[has_views] if any(has_views) else frame
    order = np.random.default_rng(seed).permutation(len(frame))
    chosen = []
    for i in order:
        row = frame.iloc[int(i)]
        paths = view_paths(Path(row.root), str(row.uuid))
        if paths:
            views = {VIEW_HEADINGS[v]: p for v, p in sorted(paths.items())}
            chosen.append(Round(str(row.uuid), (float(row.latitude), float(row.longitude)), views))
        if len(chosen) == rounds:
            break
    if not chosen:
        where = ", ".join(r.name for r in roots)
        raise ValueError(f"{where} has no location with view images; choose another dataset.")
    return Game(", ".join(str(r) for r in roots), chosen, fairness=fairness, pool=len(frame))


def honest_error_km(checkpoint) -> float | None:
    """The checkpoint's cross-validated mean error (km) on locations it did not train on, or None.

    Read from its config.json (`metrics` holding `cv_mean_km` or a `cv`/`cross_validation` dict with
    `mean_km`) or from its model card (README.md: a `model-index` result on a cross-validated dataset).
    """
    folder = Path(str(checkpoint))
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for holder in (config.get("metrics") or {}, config):
        if not isinstance(holder, dict):
            continue
        if _finite(holder.get("cv_mean_km")):
            return float(holder["cv_mean_km"])
        for key in ("cv", "cross_validation", "cross_validated"):
            inner = holder.get(key)
            if isinstance(inner, dict) and _finite(inner.get("mean_km")):
                return float(inner["mean_km"])
    return _card_cv_mean_km(folder / "README.md")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _card_cv_mean_km(card: Path) -> float | None:
    """The mean-km metric of a cross-validated result in a model card's front matter, or None."""
    import yaml

    try:
        text = card.read_text(encoding="utf-8")
        front = yaml.safe_load(text.split("---", 2)[1]) if text.startswith("---") else None
    except (OSError, IndexError, yaml.YAMLError):
        return None
    for model in (front or {}).get("model-index") or []:
        for result in (model or {}).get("results") or []:
            dataset = (result or {}).get("dataset") or {}
            about = f"{dataset.get('name', '')} {dataset.get('type', '')} {dataset.get('split', '')}".lower()
            if "cross" not in about and "cv" not in about.split():
                continue
            for metric in result.get("metrics") or []:
                kind = f"{metric.get('type', '')} {metric.get('name', '')}".lower()
                if "mean" in kind and "km" in kind and _finite(metric.get("value")):
                    return float(metric["value"])
    return None
