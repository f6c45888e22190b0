"""progress.json: the one schema of the file a ``python -m training ...`` run keeps up to date for the app,
and the atomic JSON writer. Free of torch and Lightning: the app reads it without loading either.

Writers: training.fit.ProgressFile (train) and ``write_progress`` from the CLI (evaluate, predict and
collect progress, the end of an evaluation, an error). Reader: geodemo.jobs.JobManager.progress, which
the Train and Evaluate tabs show.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

# Stages the app words for people (geodemo.ui.widgets); any other text (e.g. "starting Python", "loading
# the checkpoint") is allowed and shown as it is.
STAGES = ("prepare", "cache", "train", "validate", "evaluate", "predict", "done")
# The prefix of a log line the training CLI prints for people; the app's curated job log shows only these.
PROGRESS_PREFIX = "[geodemo] "


def write_json_atomic(path, data: dict) -> None:
    """Write JSON via a temp file + os.replace, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    os.replace(tmp, path)


@dataclass
class Progress:
    """Where a training, evaluation or prediction run is; the whole content of progress.json.

    Attributes:
        stage: free text naming what the run does now (see STAGES for the ones the app words).
        epoch: the training epoch running now, 1-BASED (1 = the first; 0 = training has not started).
        max_epochs: epochs planned (0 when the run does not train).
        step, total_steps: progress within the stage: optimiser steps while training, locations while
            caching embeddings, evaluating or predicting.
        fraction: 0..1 of the whole run (the app's progress bar).
        metrics: the latest logged metrics, e.g. {"train/loss": 2.1, "val/mean_km": 88.0}; an evaluation's
            result at its end.
        history: one entry per finished epoch: {"epoch" (1-based), "train/loss", "val/mean_km"}.
        done: the run has ended (successfully unless ``error`` is set).
        error: one sentence when it failed ("cancelled" when stopped), else None.
    """

    stage: str = ""
    epoch: int = 0
    max_epochs: int = 0
    step: int = 0
    total_steps: int = 0
    fraction: float = 0.0
    metrics: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    done: bool = False
    error: str | None = None

    def to_dict(self) -> dict:
        """Plain JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data) -> Progress:
        """Tolerant inverse of ``to_dict``: a missing field, a field of the wrong type, or data that is not
        an object take the default; unknown keys (a newer writer's) are dropped."""
        data = data if isinstance(data, dict) else {}
        kept = {}
        for f in dataclasses.fields(cls):
            value = data.get(f.name)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            kept[f.name] = _coerce(value, default) if value is not None else default
        return cls(**kept)

    def write(self, path) -> None:
        """Write atomically to ``path`` (see write_json_atomic)."""
        write_json_atomic(path, self.to_dict())

    @classmethod
    def read(cls, path) -> Progress:
        """The progress at ``path``; the defaults (stage "", not done) when it is missing or unreadable."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError):  # not written yet, or not JSON (another program's file)
            return cls()


def write_progress(path, **fields) -> None:
    """Write a Progress of these fields (the others at their defaults) to ``path`` atomically; None: no-op."""
    if path is not None:
        Progress(**fields).write(path)


def _coerce(value, default):
    """``value`` as the type of ``default`` (None for an ``error`` that is a string), else ``default``."""
    if default is None:  # error: str | None
        return str(value)
    if isinstance(default, bool):
        return value if isinstance(value, bool) else default
    if isinstance(default, int):
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value) else default
    if isinstance(default, float):
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default
    return value if isinstance(value, type(default)) else default
