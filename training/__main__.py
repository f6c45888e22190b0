"""``python -m training {train,evaluate,predict,embed,validate-data,optimize,export}``: parse, then call one
library function.

Arguments are parsed and checked before torch is imported, so a bad value is refused at once. User errors
print one line to stderr, never a traceback: exit 2 for a bad argument (value out of range, a path that does
not exist, an unusable checkpoint) and 1 for bad data (a dataset or image that cannot be used, naming the
location and the file). Progress goes to stderr; stdout holds only the result (one JSON document).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import sys
from pathlib import Path

from geodemo.progress import write_json_atomic, write_progress
from training.card import add_card_flags, update_from_evaluate
from training.cliutil import (
    CHECKPOINT_HELP,
    UsageError,
    add_backbone_flags,
    add_config_options,
    add_trainer_flags,
    backbone_weights,
    bounded,
    config_from_args,
    progress_writer,
    quiet_output,
    trainer_kwargs,
)
from training.config import task_choices, tasks_for
from training.push import resolve_hub_checkpoints

__all__ = ["UsageError", "build_parser", "main"]

# Subcommands defined in their own modules, each exposing add_parser(subparsers) and run(args) (or binding
# its run function with set_defaults(run=...)): registering one is one line here.
COMMAND_MODULES = ("training.commands", "training.collect", "training.card", "training.push")
TOLERANCE_KM = 5.0  # how far outside Croatia a location may lie (validate-data's default)
STAGES = {
    "train": "starting: reading the data",
    "evaluate": "loading the checkpoint",
    "predict": "loading the checkpoint",
}


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage dump) and exit 2."""

    def error(self, message: str):
        # "argument --limit: -3 is out of range" -> "--limit -3 is out of range": the flag and value as typed
        message = re.sub(r"^argument (--[\w-]+): (\S+) is out of range", r"\1 \2 is out of range", message)
        self.exit(2, f"error: {message}; see `{self.prog} --help`.\n")


def _batches(text: str):
    """``--limit-*-batches``: an int is a batch count, a float in (0, 1] a fraction of the epoch."""
    try:
        value = float(text) if "." in text else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a batch count or a fraction") from None
    if not (value >= 1 if isinstance(value, int) else 0.0 < value <= 1.0):
        raise argparse.ArgumentTypeError(
            f"{text} is out of range; give at least 1 batch or a fraction in (0, 1]"
        )
    return value


def _data_path(text: str):
    """A --data value: a Path, or the URL string of chunks in object storage (kept as typed: Path('s3://x')
    would drop a slash)."""
    return text if "://" in text or text.startswith("local:") else Path(text)


# ----------------------------------------------------------------------------------------- train
def _add_train(sub, full_help: bool = True) -> None:
    p = sub.add_parser(
        "train",
        help="train a model and write a checkpoint directory (defaults: the cross-validated recipe)",
        description="Train a model. Every recipe option defaults to the recipe that cross-validation chose "
        "(the bundled checkpoint is this recipe on the whole sample), so --task, --data and --out suffice.",
    )
    p.add_argument(
        "--task",
        required=True,
        # the head registry imports torch: its names are listed for --help and checked after parsing
        choices=task_choices() if full_help else None,
        metavar=None if full_help else "TASK",
        help="heads to train; multi = geocell + region + heading; classify = ImageFolder classifier",
    )
    p.add_argument(
        "--data",
        required=True,
        type=_data_path,
        action="append",
        help="dataset folder (LUMEN layout; ImageFolder for classify); repeat it to train on several "
        "LUMEN folders as one (uuids kept distinct, each folder's fingerprint recorded); or litdata "
        "chunks from `optimize`, in a folder or in object storage (s3://, gs://, azure://, r2://, hf://)",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="checkpoint directory to write (logs/ and lightning/ inside; logs/train.log keeps the full log)",
    )
    p.add_argument(
        "--init-from",
        type=Path,
        help="checkpoint directory to start from: its weights where shapes match (same backbone); "
        "heads whose shape changed, e.g. new cells, start fresh",
    )
    p.add_argument(
        "--prior",
        type=Path,
        help="CSV of latitude,longitude points added to the cell-building points (default: the "
        "shipped coordinate prior, assets/data/lumen-coords.csv)",
    )
    p.add_argument("--progress-file", type=Path, help="JSON file kept up to date with progress (for the app)")
    p.add_argument(
        "--cache-dir",
        type=Path,
        help="embedding cache folder (default $GEODEMO_CACHE_DIR or ~/.cache/geodemo/embeddings)",
    )
    m = p.add_argument_group("backbone")
    add_backbone_flags(m)
    r = p.add_argument_group("recipe (every TrainConfig field; the defaults are the cross-validated recipe)")
    add_config_options(r, skip=("backbone", "image_size"))
    t = add_trainer_flags(p, accelerator="auto")
    t.add_argument("--limit-train-batches", type=_batches, help="batches (int) or fraction per epoch")
    t.add_argument("--limit-val-batches", type=_batches, help="batches (int) or fraction per epoch")
    t.add_argument("--no-progress-bar", action="store_true", help="hide Lightning's progress bar")
    p.set_defaults(run=_train)


def _train(args) -> None:
    from geodemo.paths import prior_csv

    if args.task not in task_choices():
        raise UsageError(f"--task {args.task} is not a task; choose one of {', '.join(task_choices())}.")
    try:  # argparse checked each value; what is left is a combination (e.g. classify with other heads)
        cfg = config_from_args(
            args,
            tasks=tasks_for(args.task),
            weights=backbone_weights(args),
            init_from=str(args.init_from.resolve()) if args.init_from else "",
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    quiet_output(Path(args.out) / "logs" / "train.log")
    prior = args.prior
    if prior is None and cfg.tasks != ["classify"] and prior_csv().is_file():
        prior = prior_csv()
    from training.fit import train

    out = train(
        args.data if len(args.data) > 1 else args.data[0],
        args.out,
        cfg,
        prior_csv=prior,
        progress_file=args.progress_file,
        **trainer_kwargs(args),
        limit_train_batches=args.limit_train_batches,
        limit_val_batches=args.limit_val_batches,
        cache_dir=args.cache_dir,
        enable_progress_bar=not args.no_progress_bar,
    )
    config_file = Path(out) / "config.json"
    if config_file.exists():  # rank 0
        metrics = json.loads(config_file.read_text()).get("metrics", {})
        print(json.dumps({"checkpoint": str(out), **metrics}, default=str))


# ----------------------------------------------------------------------------------------- evaluate
def _add_evaluate(sub) -> None:
    e = sub.add_parser(
        "evaluate", help="metrics of a checkpoint on a dataset (JSON + per-location CSV beside it)"
    )
    e.add_argument("--checkpoint", type=Path, help=CHECKPOINT_HELP)
    e.add_argument(
        "--data",
        required=True,
        type=Path,
        help="dataset folder (LUMEN layout; ImageFolder for classify) or a .zip of a LUMEN-layout folder",
    )
    e.add_argument(
        "--out", required=True, type=Path, help="metrics JSON to write; <stem>.csv is written beside it"
    )
    e.add_argument("--limit", type=bounded(int, 1), help="evaluate only the first N locations")
    e.add_argument(
        "--batch-size",
        type=bounded(int, 1, 65_536),
        default=16,
        help="locations per forward pass (default: 16)",
    )
    e.add_argument(
        "--point-mode",
        help="geocell -> point: min_expected_km | weighted_mean | argmax (default: the checkpoint's)",
    )
    e.add_argument("--progress-file", type=Path, help="JSON file kept up to date with progress")
    add_card_flags(e)  # --update-card, --dataset-name (training.card)
    e.set_defaults(run=_evaluate)


def _evaluate(args) -> None:
    import tempfile

    from geodemo.archive import unpack_dataset
    from training.evaluate import evaluate

    with tempfile.TemporaryDirectory(prefix="geodemo-eval-") as uploads:
        # a .zip in the LUMEN layout is unpacked (checked: no escapes, links or bombs) into a temp folder
        data = unpack_dataset(args.data, uploads) if Path(args.data).is_file() else args.data
        _check_dataset(data)
        found, table = evaluate(
            args.checkpoint,
            data,
            limit=args.limit,
            batch_size=args.batch_size,
            progress=progress_writer(args.progress_file, "evaluating"),
            point_mode=args.point_mode,
        )
    _check_metrics(found)
    if found.get("train_overlap"):
        print(
            f"warning: {found['train_overlap']} of these {found['count']} locations were used to train "
            "this checkpoint; these figures are not a test.",
            file=sys.stderr,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, found)
    table.to_csv(args.out.with_suffix(".csv"), index=False)
    update_from_evaluate(args, found)  # --update-card: the figures go onto the checkpoint's model card
    write_progress(args.progress_file, stage="evaluate", fraction=1.0, metrics=found, done=True)
    print(json.dumps(found))


# ----------------------------------------------------------------------------------------- the parser
def build_parser(full_help: bool = True) -> argparse.ArgumentParser:
    """The parser; ``full_help=False`` leaves out what needs torch to list (--task's choices)."""
    parser = _Parser(
        prog="python -m training",
        description="geodemo training: train, evaluate, predict, embed, validate-data, optimize, export.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    _add_train(sub, full_help)
    _add_evaluate(sub)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        before = set(sub.choices)
        module.add_parser(sub)
        for command in set(sub.choices) - before:
            if sub.choices[command].get_default("run") is None:
                sub.choices[command].set_defaults(run=module.run)
    return parser


def _resolve_remote(args) -> None:
    """`train --data s3://bucket/chunks`: a local folder of the chunks' metadata stands in for the URL."""
    data = _as_list(getattr(args, "data", None))
    remote = [d for d in data if isinstance(d, str)]
    if not remote:
        return
    if args.command != "train" or len(data) > 1:
        raise UsageError(
            f"{remote[0]} names litdata chunks in object storage, which only `train` reads, "
            "as its one --data."
        )
    from training.cache import default_cache_dir
    from training.streaming import is_remote, remote_chunks

    if not is_remote(remote[0]):
        raise UsageError(
            f"--data {remote[0]} is not a folder or a supported storage URL; use a folder, or "
            "s3://, gs://, azure://, r2:// or hf:// chunks written by `optimize`."
        )
    args.data = [remote_chunks(remote[0], args.cache_dir or default_cache_dir())]


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def _check_args(args) -> None:
    """Paths that must exist and devices the machine has (ranges are checked by argparse): UsageError."""
    for key, flag in (("data", "--data"), ("dir", "DIR"), ("init_from", "--init-from")):
        for path in _as_list(getattr(args, key, None)):
            if not Path(path).exists():
                what = (
                    "a checkpoint folder holding config.json and model.safetensors"
                    if key == "init_from"
                    else "a dataset folder holding data.csv and images/"
                )
                raise UsageError(f"{flag} {path} does not exist; pass {what}.")
    devices = getattr(args, "devices", None)
    if isinstance(devices, int):
        from geodemo.jobform import max_devices

        most, kind = max_devices(getattr(args, "accelerator", "auto"))
        if not 1 <= devices <= max(1, most):
            raise UsageError(
                f"--devices {devices} is more than this machine has; use 1 to {max(1, most)} "
                f"({most} {kind}s here)."
            )


def _check_data(args) -> None:
    """Refuse a dataset without locations, images or possible coordinates before anything runs (exit 1)."""
    if args.command not in ("train", "predict", "optimize", "embed"):  # evaluate: after unpacking a .zip
        return
    chunks = [p for p in _as_list(args.data) if (Path(p) / "index.json").is_file()]  # training.streaming
    if chunks and (args.command != "train" or len(_as_list(args.data)) > 1):
        raise UsageError(
            f"{chunks[0]} holds litdata chunks, which only `train` reads, as its one --data; "
            "combine folders when optimizing (optimize --data A --data B)."
        )
    for path in _as_list(args.data):
        if path not in chunks:
            _check_dataset(path)


def _check_dataset(path) -> None:
    """A LUMEN folder must have rows, a view, and every location in Croatia (a DatasetError names the first
    that is not); other folders (ImageFolder, archives) are checked where they are read."""
    if not (Path(path).is_dir() and (Path(path) / "data.csv").exists()):
        return
    import numpy as np

    from geodemo import geo
    from geodemo.data import DatasetError, read_usable

    frame = read_usable(path)
    lat, lon = frame["latitude"].to_numpy(np.float64), frame["longitude"].to_numpy(np.float64)
    invalid = (np.abs(lat) > 90) | (np.abs(lon) > 180)
    far = np.zeros(len(frame), bool)
    far[~invalid] = geo.distance_to_croatia_km(lat[~invalid], lon[~invalid]) > TOLERANCE_KM
    for bad, what in (
        (invalid, "is not a valid coordinate (latitude -90..90, longitude -180..180)"),
        (far, f"lies more than {TOLERANCE_KM:g} km outside Croatia"),
    ):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            more = f" (and {int(bad.sum()) - 1} more)" if bad.sum() > 1 else ""
            raise DatasetError(
                f"location {frame['uuid'].iloc[i]!r} in {Path(path) / 'data.csv'} has latitude "
                f"{lat[i]:g}, longitude {lon[i]:g}, which {what}{more}; fix data.csv "
                "(`python -m training validate-data` lists every problem)."
            )


def _check_metrics(found: dict) -> None:
    """An evaluation with no finite metric evaluated nothing: a data error, never exit 0 with nulls."""
    values = [v for k, v in found.items() if k not in ("count", "train_overlap")]
    if not any(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        from geodemo.data import DatasetError

        raise DatasetError(
            f"none of the {found.get('count', 0)} locations could be evaluated (no readable "
            "view or no finite prediction); check the data with `validate-data`."
        )


# ----------------------------------------------------------------------------------------- errors
def _message(err: Exception) -> str:
    """The user's one sentence: a DataLoader worker's error is unwrapped to the worker's own message, and a
    view file's path is prefixed with its location id."""
    text = str(err).strip()
    if "Original Traceback" in text:  # torch re-raises a worker's error with its traceback in the message
        text = re.sub(r"^[\w.]+: ", "", text.splitlines()[-1].strip())
    text = text.splitlines()[0] if text else ""
    view = re.search(r"[/\\](?:images|data)[/\\]([A-Za-z0-9][A-Za-z0-9._-]*)[/\\][^/\\\s]+", text)
    if view and not text.startswith("location"):
        text = f"location {view.group(1)!r}: {text}"
    return text


def _exit_code(err: Exception) -> int:
    """2: an argument that cannot be used (range, path, checkpoint); 1: bad data (or an unexpected error)."""
    checkpoint = sys.modules.get("geodemo.checkpoint")  # not imported: cannot be a CheckpointError
    usage = (UsageError, FileNotFoundError, PermissionError, IsADirectoryError)
    usage += (checkpoint.CheckpointError,) if checkpoint else ()
    return 2 if isinstance(err, usage) else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(full_help=bool({"-h", "--help"} & set(argv))).parse_args(argv)
    if getattr(args, "progress_file", None) and args.command in STAGES:
        write_progress(args.progress_file, stage=STAGES[args.command])
    from geodemo import images

    # errors name a view file by its whole path: every location has a 0.jpg, its folder is the location
    full_paths, images.FULL_PATHS = images.FULL_PATHS, True
    try:
        return _run(args)
    finally:
        images.FULL_PATHS = full_paths


def _run(args) -> int:
    """Check, run, and turn an exception into one line and an exit code."""
    try:
        _resolve_remote(args)
        resolve_hub_checkpoints(args)  # --checkpoint / --init-from hf://user/name: the downloaded folder
        _check_args(args)
        _check_data(args)
        return args.run(args) or 0
    except Exception as err:  # noqa: BLE001 - the user gets one line; GEODEMO_DEBUG=1 shows the traceback
        if os.environ.get("GEODEMO_DEBUG"):
            raise
        code, message = _exit_code(err), _message(err)
        if not isinstance(err, (ValueError, OSError)):  # a bug, not the user's input
            message = (
                f"unexpected {type(err).__name__} ({message or 'no message'}); rerun with "
                "GEODEMO_DEBUG=1 for the traceback and report it"
            )
        print(f"error: {message or type(err).__name__}", file=sys.stderr)
        if getattr(args, "progress_file", None):
            write_progress(args.progress_file, stage=args.command, done=True, error=message)
        return code


if __name__ == "__main__":
    sys.exit(main())
