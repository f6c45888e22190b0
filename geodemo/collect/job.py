"""The app's Collect form -> a validated ``python -m training collect`` argv for geodemo.jobs.JobManager.

The key or token is never a job argument (job.json and the process list would show it): the job reads
``$GEODEMO_STREETVIEW_KEY`` / ``$GEODEMO_MAPILLARY_TOKEN`` from the app's environment, which it inherits.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from geodemo.collect.run import SOURCES, CollectConfig
from geodemo.collect.vocab import SAMPLINGS
from geodemo.data import is_safe_id

KEY_ENV = {"streetview": "GEODEMO_STREETVIEW_KEY", "mapillary": "GEODEMO_MAPILLARY_TOKEN"}
# form field -> (label, low, high, whole number)
FIELDS = {
    "points": ("Points", 1, 20_000, True),
    "seed": ("Seed", 0, 2**31 - 1, True),
    "min_spacing_km": ("Min spacing (km)", 0.0, 100.0, False),
    "radius_m": ("Search radius (m)", 1.0, 5000.0, False),
}


class CollectFormError(ValueError):
    """A Collect form value that cannot be used; one sentence for the user."""


def _number(params: dict, key: str):
    label, low, high, whole = FIELDS[key]
    try:
        value = float(params.get(key))
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high) or (whole and value != int(value)):
        kind = "a whole number" if whole else "a number"
        raise CollectFormError(f"{label} must be {kind} between {low:g} and {high:g}.")
    return int(value) if whole else value


def key_status() -> dict[str, bool]:
    """Source -> whether its key or token is set in this process's environment."""
    return {source: bool(os.environ.get(env, "").strip()) for source, env in KEY_ENV.items()}


def checked(params: dict, data_roots, out_root) -> tuple[dict, Path]:
    """The form's values, validated ({source, sampling, points, seed, min_spacing_km, radius_m, exclude}),
    and the dataset folder ``out_root/collect-<name>``; CollectFormError names the first bad field."""
    source = params.get("source")
    if source not in SOURCES:
        raise CollectFormError(f"Source {source!r} is not one of {', '.join(SOURCES)}.")
    sampling = params.get("sampling")
    if sampling not in SAMPLINGS:
        raise CollectFormError(f"Sampling {sampling!r} is not one of {', '.join(SAMPLINGS)}.")
    name = str(params.get("name") or "").strip()
    if not is_safe_id(name):
        raise CollectFormError("The name may use only letters, digits, '.', '_' and '-' (at most 128).")
    out = Path(out_root).resolve() / f"collect-{name}"
    if out.exists() and not (out / ".collect" / "settings.json").is_file() and (out / "data.csv").exists():
        raise CollectFormError(f"A dataset named {name!r} already exists and was not collected; choose "
                               "another name.")
    roots = {str(Path(r).resolve()) for r in data_roots}
    exclude = [str(Path(p).resolve()) for p in params.get("exclude") or []]
    if any(p not in roots for p in exclude):
        raise CollectFormError("Keep away from: pick datasets from the list only.")
    values = {key: _number(params, key) for key in FIELDS}
    return {"source": source, "sampling": sampling, **values, "exclude": exclude}, out


def form_config(params: dict, data_roots, out_root) -> CollectConfig:
    """The CollectConfig of the form (for the estimate: no key needed)."""
    values, out = checked(params, data_roots, out_root)
    return CollectConfig(out=str(out), **values)


def collect_args(params: dict, data_roots, out_root) -> tuple[list[str], Path]:
    """Validated `collect` argv and its dataset folder ``out_root/collect-<name>``.

    Args:
        params: source, points, sampling, seed, min_spacing_km, radius_m, name, exclude (data roots).
        data_roots: the folders `exclude` may name.
        out_root: where collected datasets go (the app's uploads folder, which Evaluate lists).

    Raises:
        CollectFormError: a bad value, a missing key, or a name taken by another kind of folder.
    """
    values, out = checked(params, data_roots, out_root)
    source = values["source"]
    if not key_status()[source]:
        raise CollectFormError(f"No {source} key: set ${KEY_ENV[source]} in the app's environment and "
                               "restart the app (keys are never typed into the page).")
    args = ["collect", "--source", source, "--out", str(out), "--sampling", values["sampling"]]
    for key in FIELDS:
        args += [f"--{key.replace('_', '-')}", str(values[key])]
    for path in values["exclude"]:
        args += ["--exclude", path]
    return args, out
