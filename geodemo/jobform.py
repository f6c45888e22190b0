"""The app's job forms: what a person typed -> a validated ``python -m training train|evaluate`` argv.

Every check names the field the person sees and says what to do (JobError, one sentence). The training
parameters' bounds, help and defaults live on TrainConfig's fields (geodemo.trainconfig); nothing a user
types ever becomes a shell string. geodemo.jobs runs the argv lists this module builds.
"""

from __future__ import annotations

import os
from pathlib import Path

from geodemo import trainconfig
from geodemo.data import is_safe_id
from geodemo.hub import hub_models

ACCELERATORS = ("auto", "cpu", "gpu")
# Bounds of the job options that are not training parameters (where a job runs, how much it reads). The
# training parameters' bounds, help and defaults live on TrainConfig's fields (geodemo.trainconfig): the
# form's values are checked against those, and any field the form sends becomes its `train` option.
RUN_RANGES = {
    "devices": (1, 64),
    "limit_train_batches": (1, 100_000),
    "limit_val_batches": (1, 100_000),
    "limit": (1, 10_000_000),
}
# The form's field names, so an error names the field the user sees.
FIELD_LABELS = {
    "max_epochs": "Epochs",
    "image_size": "Image size",
    "batch_size": "Batch size",
    "lr": "The learning rate",
    "unfreeze_epoch": "Unfreeze backbone at epoch",
    "devices": "Devices",
    "limit_train_batches": "Batches per epoch",
    "limit_val_batches": "Batches per epoch",
    "limit": "Locations",
}


class JobError(ValueError):
    """A job request that cannot be run; the message is one sentence for the user."""


def train_tasks() -> tuple[str, ...]:
    """The job form's tasks: ``multi``, then every registered head (geodemo.heads; imported here, not at
    the top, so that `import geodemo.jobform` does not load torch)."""
    from geodemo.heads import TASKS

    return ("multi", *TASKS)


def _label(key: str) -> str:
    return FIELD_LABELS.get(key, key.replace("_", " ").capitalize())


def _int(params: dict, key: str) -> int:
    """A run option (devices, batch limits, locations): a whole number within RUN_RANGES."""
    low, high = RUN_RANGES[key]
    try:
        value = int(params[key])
    except (TypeError, ValueError, OverflowError):
        raise JobError(f"{_label(key)} must be a whole number between {low} and {high}.") from None
    if not low <= value <= high or value != float(params[key]):
        raise JobError(f"{_label(key)} must be a whole number between {low} and {high}, not {params[key]!r}.")
    return value


def _param(params: dict, key: str):
    """A training parameter from the form, checked against its TrainConfig field (type, bounds, choices)."""
    f = trainconfig.get_field(key)
    try:
        return trainconfig.parse_value(f, params[key])
    except (KeyError, ValueError):
        raise JobError(f"{_label(key)} must be {trainconfig.describe(f)}, not {params.get(key)!r}.") from None


def _recipe_args(params: dict) -> list[str]:
    """`train` options for every TrainConfig field the form sends (generated: a new field needs no edit).

    ``unfreeze_epoch`` -1 (or empty) keeps the backbone frozen all run (the embedding cache)."""
    args = []
    for f in trainconfig.cli_fields():
        value = params.get(f.name)
        if f.name == "backbone" or value is None or value == "":
            continue
        if f.name == "unfreeze_epoch" and str(value).strip() in ("-1", "-1.0"):
            continue
        if trainconfig.base_type(f) == "bool":
            if not isinstance(value, bool):
                raise JobError(f"{_label(f.name)} must be ticked or not, not {value!r}.")
            args += [trainconfig.option(f)] if value != f.default else []
            continue
        args += [trainconfig.option(f), str(_param(params, f.name))]
    return args


def max_devices(accelerator: str = "auto") -> tuple[int, str]:
    """(how many devices a job may use here, their kind): GPUs for gpu (and auto with GPUs), else CPU cores.

    More CPU processes than cores only thrash (each DDP process holds a full model and loader).
    """
    import torch

    gpus = torch.cuda.device_count() if accelerator in ("gpu", "auto") else 0
    if accelerator == "gpu" or gpus:
        return gpus, "GPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores, "CPU core"


def _devices(params: dict) -> int:
    devices = _int(params, "devices")
    most, kind = max_devices(params.get("accelerator", "auto"))
    if most == 0:
        raise JobError("This machine has no GPU; choose the cpu or auto accelerator.")
    if devices > most:
        raise JobError(f"Devices must be at most {most}, the number of {kind}s on this machine.")
    return devices


def _dataset(path, data_roots) -> Path:
    """The dataset path if it is one of the configured data roots, else JobError."""
    roots = {Path(r).resolve() for r in data_roots}
    chosen = Path(str(path or "")).resolve()
    if chosen not in roots:
        raise JobError(f"Dataset {path!r} is not one of the configured data roots; pick one from the list.")
    return chosen


def _datasets(params: dict, data_roots) -> list[Path]:
    """The ticked datasets (`datasets`, a list, or one `dataset`), each a configured root, no repeats."""
    chosen = params.get("datasets")
    if chosen is None:
        chosen = [params.get("dataset")]
    if isinstance(chosen, (str, Path)):
        chosen = [chosen]
    paths = list(dict.fromkeys(_dataset(p, data_roots) for p in chosen if p))
    if not paths:
        raise JobError("Datasets: tick at least one dataset to train on.")
    for path in paths:
        if not (path / "data.csv").is_file():  # e.g. "my labels" before the first label
            raise JobError(f"Datasets: {path.name!r} has no data.csv yet; label some locations first or "
                           "untick it.")
    return paths


def _name(name: str) -> str:
    if not is_safe_id(str(name or "")):
        raise JobError("The name may use only letters, digits, '.', '_' and '-' (at most 128, no '..').")
    return str(name)


def train_args(
    params: dict, data_roots, checkpoints_dir, backbones=(), checkpoints=()
) -> tuple[list[str], Path]:
    """Validated `train` argv and its output checkpoint dir.

    Args:
        params: task, backbone, datasets (list; or one dataset), name, max_epochs, image_size, batch_size,
            lr, unfreeze_epoch, accelerator, devices, optional limit_train_batches / limit_val_batches /
            prior / init_from (a checkpoint to start from).
        data_roots: the allowed dataset directories.
        checkpoints_dir: where trained checkpoints go (the output is <checkpoints_dir>/<name>).
        backbones: allowed backbone names (empty = do not check).
        checkpoints: the checkpoint dirs `init_from` may name.
    """
    task = params.get("task")
    if task not in train_tasks():
        raise JobError(f"Task {task!r} is not one of {', '.join(train_tasks())}.")
    backbone = str(params.get("backbone") or "")
    if backbones and backbone not in backbones:
        raise JobError(f"Backbone {backbone!r} is not one of {', '.join(backbones)}.")
    for key in ("max_epochs", "batch_size", "lr"):  # the form always sends these
        _param(params, key)
    accelerator = params.get("accelerator", "auto")
    if accelerator not in ACCELERATORS:
        raise JobError(f"Accelerator {accelerator!r} is not one of {', '.join(ACCELERATORS)}.")
    out = Path(checkpoints_dir).resolve() / _name(params.get("name"))
    if out.exists():
        raise JobError(f"A checkpoint named {out.name!r} already exists; choose another name.")
    args = [
        "train",
        "--task",
        task,
        *[a for path in _datasets(params, data_roots) for a in ("--data", str(path))],
        "--out",
        str(out),
        "--backbone",
        backbone,
        "--accelerator",
        accelerator,
        "--no-progress-bar",
    ]
    args += _recipe_args(params)
    args += ["--devices", str(_devices(params))]
    if 0 < int(_param(params, "image_size") if params.get("image_size") not in (None, "") else 0) < 32:
        raise JobError("Image size must be 0 (the backbone's own) or at least 32 pixels.")
    for key in ("limit_train_batches", "limit_val_batches"):
        if params.get(key) not in (None, "", 0):
            args += [f"--{key.replace('_', '-')}", str(_int(params, key))]
    if params.get("prior"):
        args += ["--prior", str(Path(params["prior"]).resolve())]
    if params.get("init_from"):
        known = {Path(c).resolve() for c in checkpoints} | set(hub_models())  # + hf://user/name
        start = params["init_from"] if params["init_from"] in hub_models() else Path(str(params["init_from"]))
        start = start if isinstance(start, str) else start.resolve()
        if start not in known:
            raise JobError(f"Start from: {params['init_from']!r} is not one of the available checkpoints.")
        args += ["--init-from", str(start)]
    return args, out


def evaluate_args(checkpoint, dataset, data_roots, checkpoints, out_json, limit=None) -> list[str]:
    """Validated `evaluate` argv; `checkpoint` must be one of `checkpoints` (known checkpoint dirs)."""
    known = {Path(c).resolve() for c in checkpoints} | set(hub_models())  # + hf://user/name (geodemo.hub)
    chosen = checkpoint if checkpoint in hub_models() else Path(str(checkpoint or "")).resolve()
    if chosen not in known:
        raise JobError(
            f"Checkpoint {checkpoint!r} is not one of the available checkpoints; pick one from the list."
        )
    args = [
        "evaluate",
        "--checkpoint",
        str(chosen),
        "--data",
        str(_dataset(dataset, data_roots)),
        "--out",
        str(out_json),
    ]
    if limit not in (None, "", 0):
        args += ["--limit", str(_int({"limit": limit}, "limit"))]
    return args
