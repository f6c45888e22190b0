"""Checkpoint directories: `model.safetensors` + `config.json`, saved atomically, loaded without pickle.

A checkpoint needs nothing else to predict: the config holds the architecture, cells, county order and
normalisation. Every refusal is a CheckpointError with one sentence saying what is wrong and what to do.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import os
import shutil
import struct
import tempfile
from pathlib import Path

import torch
from torch import nn

from geodemo import quota
from geodemo.data import is_safe_id
from geodemo.geo import COUNTY_CODES
from geodemo.model import TEMPERATURE_RANGE, ModelConfig, build_model
from geodemo.paths import CHECKPOINTS_DIR

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
DEFAULT_CHECKPOINT = CHECKPOINTS_DIR / "default"
_CONVERT_HINT = (
    "convert it in a trusted Python session with safetensors.torch.save_file(torch.load(FILE, "
    "weights_only=True), 'model.safetensors') and add the config.json written at training time"
)


# Bounds checked before anything is allocated: an uploaded config.json is untrusted input.
MAX_CONFIG_BYTES = 16 * 2**20
MAX_HEADER_BYTES = 16 * 2**20  # safetensors JSON header
MAX_PARAMETERS = 100_000_000  # the model a config builds (400 MB of float32)
MAX_TENSOR_ELEMENTS = 150_000_000  # everything a safetensors header declares, together
IMAGE_SIZE_RANGE = (32, 1024)  # pixels
MAX_HIDDEN_DIM = 8192
MAX_CELLS = 20_000
MAX_NAMES = 10_000  # class names, tabular columns
MAX_NAME_CHARS = 200


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one sentence naming the problem and the fix."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _names(value, limit: int) -> bool:
    return (isinstance(value, list) and len(value) <= limit
            and all(isinstance(v, str) and 0 < len(v) <= MAX_NAME_CHARS for v in value))


def _numbers(value, positive: bool = False) -> bool:
    return (isinstance(value, list) and len(value) == 3
            and all(_is_number(v) and (v > 0 if positive else abs(v) <= 1e3) for v in value))


def _cells_ok(cells) -> bool:
    if cells is None:
        return True
    if not isinstance(cells, dict):
        return False
    lists = [v for v in cells.values() if isinstance(v, list)]
    return (all(len(v) <= MAX_CELLS for v in lists) and len({len(v) for v in lists}) <= 1
            and all(_is_number(x) for v in lists for x in v))


def _xy_ok(stats) -> bool:
    if stats is None:
        return True
    keys = ("mean_x", "mean_y", "std_x", "std_y")
    return (isinstance(stats, dict) and all(_is_number(stats.get(k)) for k in keys)
            and stats["std_x"] > 0 and stats["std_y"] > 0)


def _train_locations_ok(value) -> bool:
    """{} or {uuid: [str], latitude: [deg], longitude: [deg]} of one length (ModelConfig.train_locations)."""
    if value == {}:
        return True
    if not isinstance(value, dict) or set(value) != {"uuid", "latitude", "longitude"}:
        return False
    uuids, lat, lon = value["uuid"], value["latitude"], value["longitude"]
    return (all(isinstance(v, list) for v in (uuids, lat, lon)) and len(uuids) == len(lat) == len(lon)
            and all(isinstance(u, str) for u in uuids)
            and all(_is_number(x) and -90 <= x <= 90 for x in lat)
            and all(_is_number(x) and -180 <= x <= 180 for x in lon))


# key -> (test of the JSON value, what a valid value is); keys not listed are checked by ModelConfig itself
_SCHEMA = {
    "tasks": (lambda v: isinstance(v, str) or _names(v, 8), "a list of task names"),
    "backbone": (lambda v: isinstance(v, str), "a backbone name"),
    "image_size": (lambda v: _is_int(v) and IMAGE_SIZE_RANGE[0] <= v <= IMAGE_SIZE_RANGE[1],
                   f"a whole number of pixels from {IMAGE_SIZE_RANGE[0]} to {IMAGE_SIZE_RANGE[1]}"),
    "mean": (_numbers, "three finite numbers"),
    "std": (lambda v: _numbers(v, positive=True), "three finite numbers above 0"),
    "fusion": (lambda v: isinstance(v, str), "a fusion name"),
    "num_views": (lambda v: _is_int(v) and 1 <= v <= 4, "a whole number from 1 to 4"),
    "hidden_dim": (lambda v: _is_int(v) and 0 <= v <= MAX_HIDDEN_DIM,
                   f"a whole number from 0 to {MAX_HIDDEN_DIM}"),
    "dropout": (lambda v: _is_number(v) and 0 <= v < 1, "a number from 0 to below 1"),
    "cells": (_cells_ok, f"a cells dict of at most {MAX_CELLS} cells with finite numbers"),
    "counties": (lambda v: isinstance(v, list) and len(v) == len(set(map(str, v)))
                 and set(map(str, v)) <= set(COUNTY_CODES) and all(isinstance(c, str) for c in v),
                 "a list of distinct county codes HR-01..HR-21"),
    "xy_stats": (_xy_ok, "finite mean_x/mean_y and std_x/std_y above 0"),
    "class_names": (lambda v: v is None or _names(v, MAX_NAMES),
                    f"a list of at most {MAX_NAMES} names of at most {MAX_NAME_CHARS} characters"),
    "cbam": (lambda v: isinstance(v, bool), "true or false"),
    "tabular": (lambda v: _names(v, 64), "a list of at most 64 column names"),
    "point_mode": (lambda v: isinstance(v, str), "a point mode name"),
    "weighted_centroids": (lambda v: isinstance(v, bool), "true or false"),
    "tta_flip": (lambda v: isinstance(v, bool), "true or false"),
    "temperature": (lambda v: _is_number(v) and TEMPERATURE_RANGE[0] <= v <= TEMPERATURE_RANGE[1],
                    f"a finite number from {TEMPERATURE_RANGE[0]} to {TEMPERATURE_RANGE[1]}"),
    "train_locations": (_train_locations_ok, "{} or uuid/latitude/longitude lists of one length, in degrees"),
}


def check_config_dict(data: dict, where: str = "config.json") -> None:
    """Check the types and ranges of an untrusted config.json before anything is built from it.

    Raises:
        CheckpointError: naming the first bad key, its value and what a valid value is.
    """
    for key, (ok, expected) in _SCHEMA.items():
        if key in data and not ok(data[key]):
            shown = repr(data[key])
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise CheckpointError(
                f"{where} has {key} = {shown}, which must be {expected}; this checkpoint was not written "
                "by geodemo training or has been edited"
            )


def _versions() -> dict:
    import timm

    try:
        geodemo_version = importlib.metadata.version("geodemo")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        geodemo_version = "source"
    return {"torch": torch.__version__, "timm": timm.__version__, "geodemo": geodemo_version}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(model: nn.Module, config: ModelConfig, out_dir) -> Path:
    """Write `out_dir/model.safetensors` and `out_dir/config.json` atomically.

    Both files are written and fsynced in a hidden sibling directory which then replaces `out_dir`, so a
    kill leaves either the old checkpoint or the new one, never a mix. Other entries already in `out_dir`
    (logs, say) are carried over into the new directory.

    Returns:
        The checkpoint directory.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(config, versions=_versions())
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        with open(tmp / CONFIG_FILE, "w", encoding="utf-8") as f:
            json.dump(config.to_dict(), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp / WEIGHTS_FILE, "rb+") as f:
            os.fsync(f.fileno())
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / "ckpt")
            os.replace(tmp, out_dir)
            for entry in (old / "ckpt").iterdir():
                if entry.name not in (WEIGHTS_FILE, CONFIG_FILE):
                    os.replace(entry, out_dir / entry.name)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
        _fsync_dir(out_dir.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _checkpoint_dir(path) -> Path:
    """Resolve `path` to a checkpoint directory, refusing anything that is not one."""
    path = Path(path)
    if path.is_file() and path.name in (WEIGHTS_FILE, CONFIG_FILE):
        path = path.parent  # a file inside the checkpoint names the checkpoint
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {path} does not exist; pass a directory holding {WEIGHTS_FILE} and {CONFIG_FILE}"
        )
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise CheckpointError(f"refusing to unpickle {path} (a pickle can run code); {_CONVERT_HINT}")
        raise CheckpointError(
            f"checkpoint {path} is a file; a checkpoint is a directory with {WEIGHTS_FILE} and {CONFIG_FILE}"
        )
    if not (path / WEIGHTS_FILE).is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(
                f"refusing to unpickle {path / pickles[0]} (a pickle can run code) and there is no "
                f"{WEIGHTS_FILE}; {_CONVERT_HINT}"
            )
    return path


def read_config(path) -> ModelConfig:
    """Read and validate a checkpoint's config.json (no weights are read)."""
    path = _checkpoint_dir(path)
    file = path / CONFIG_FILE
    if not file.is_file():
        raise CheckpointError(
            f"checkpoint {path} has no {CONFIG_FILE}; a checkpoint is a directory with "
            f"{WEIGHTS_FILE} and {CONFIG_FILE}"
        )
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(
            f"{file} is {file.stat().st_size / 2**20:.0f} MB, over the {MAX_CONFIG_BYTES // 2**20} MB limit "
            "for a config; it is not a geodemo config"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"{file} is not valid JSON ({err}); restore it from the training output"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{file} holds a {type(data).__name__}, not a JSON object; it is not a geodemo config"
        )
    check_config_dict(data, str(file))
    try:
        return ModelConfig.from_dict(data)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{file} cannot be used: {err}") from None


def read_header_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors file's JSON header; no tensor data is read.

    Raises:
        CheckpointError: not a safetensors file, or a header over MAX_HEADER_BYTES / MAX_TENSOR_ELEMENTS.
    """
    bad = CheckpointError(f"{file} is corrupt or not a safetensors file; save the checkpoint again")
    try:
        with open(file, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise bad
            (length,) = struct.unpack("<Q", head)
            if length > file.stat().st_size - 8:
                raise bad
            if length > MAX_HEADER_BYTES:
                raise CheckpointError(f"{file} declares a {length:,}-byte header, over the "
                                      f"{MAX_HEADER_BYTES // 2**20} MB limit; it is not a geodemo checkpoint")
            header = json.loads(fh.read(length).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise bad from None
    if not isinstance(header, dict):
        raise bad
    shapes, total = {}, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise bad
        shapes[name] = tuple(shape)
        total += math.prod(shape)
    if total > MAX_TENSOR_ELEMENTS:
        raise CheckpointError(
            f"{file} declares {total:,} weights, over the limit of {MAX_TENSOR_ELEMENTS:,}; "
            "it is not a checkpoint this app can load"
        )
    return shapes


def _expected_shapes(path: Path, config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes `config` builds, from a model on the meta device (nothing allocated)."""
    try:
        with torch.device("meta"):
            model = build_model(config, backbone_weights="none")
    except ValueError as err:
        raise CheckpointError(f"{path / CONFIG_FILE} cannot be used: {err}") from None
    count = sum(p.numel() for p in model.parameters())
    if count > MAX_PARAMETERS:
        raise CheckpointError(
            f"{path / CONFIG_FILE} builds a model of {count:,} parameters, over the limit of "
            f"{MAX_PARAMETERS:,}; lower hidden_dim or the number of cells"
        )
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _read_weights(file: Path) -> dict:
    from safetensors.torch import load_file

    if not file.is_file():
        raise CheckpointError(
            f"checkpoint {file.parent} has no {WEIGHTS_FILE}; a checkpoint is a directory with "
            f"{WEIGHTS_FILE} and {CONFIG_FILE}"
        )
    try:
        return load_file(str(file))
    except Exception as err:  # noqa: BLE001 - SafetensorError, OSError, ... all mean "unreadable"
        raise CheckpointError(
            f"{file} is corrupt or not a safetensors file ({type(err).__name__}); save the checkpoint again"
        ) from None


def load_checkpoint(path, expect_tasks: list[str] | None = None) -> tuple[nn.Module, ModelConfig]:
    """Load a checkpoint directory into an eval-mode model; never unpickles anything.

    Args:
        path: checkpoint directory (or a file inside it).
        expect_tasks: the caller needs at least one of these tasks (e.g. POINT_TASKS); others are refused.

    Returns:
        (model in eval mode, its ModelConfig).
    """
    path = _checkpoint_dir(path)
    config = read_config(path)
    if expect_tasks is not None and not set(expect_tasks) & set(config.tasks):
        raise CheckpointError(
            f"this checkpoint is for task {'+'.join(config.tasks)}, not {'/'.join(expect_tasks)}; "
            f"choose a checkpoint trained for {'/'.join(expect_tasks)}"
        )
    # Shapes are compared from the file's header against a meta-device model before any allocation.
    own = _expected_shapes(path, config)
    if not (path / WEIGHTS_FILE).is_file():
        _read_weights(path / WEIGHTS_FILE)  # the "has no model.safetensors" error
    stored = read_header_shapes(path / WEIGHTS_FILE)
    missing, extra = sorted(set(own) - set(stored)), sorted(set(stored) - set(own))
    if missing or extra:
        raise CheckpointError(
            f"{path / WEIGHTS_FILE} does not match its config: {len(missing)} missing weights "
            f"(e.g. {missing[:2]}) and {len(extra)} unexpected (e.g. {extra[:2]})"
        )
    for key, shape in own.items():
        if stored[key] != shape:
            raise CheckpointError(
                f"weight {key} in {path / WEIGHTS_FILE} has shape {stored[key]} but the "
                f"config builds {shape}; the weights and config.json do not belong together"
            )
    state = _read_weights(path / WEIGHTS_FILE)
    model = build_model(config, backbone_weights="none")  # the file supplies every weight
    model.load_state_dict(state)
    return model.eval(), config


def is_checkpoint(path) -> bool:
    """True when `path` is a directory holding both checkpoint files."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:  # unreadable directory: nothing to list
        return []


def list_checkpoints(*roots) -> list[Path]:
    """Checkpoint directories among each root, its children and grandchildren (hidden/temp dirs skipped).

    Args:
        roots: directories to scan; none given means `assets/checkpoints`.
    """
    found = []
    for root in roots or (DEFAULT_CHECKPOINT.parent,):
        root = Path(root)
        if not root.is_dir():
            continue
        candidates = [root]
        for child in _subdirs(root):
            candidates += [child, *_subdirs(child)]
        found += [c.absolute() for c in candidates if is_checkpoint(c)]
    return list(dict.fromkeys(found))


def install_checkpoint(files, name: str, checkpoints_dir, owner: str | None = None) -> Path:
    """Check an uploaded `model.safetensors` + `config.json` and install them as `checkpoints_dir/name`.

    The files are copied into a hidden temporary folder beside the target, loaded in full (every check of
    `load_checkpoint`), and only then renamed into place, so a refused upload leaves nothing behind.

    Args:
        files: paths of the uploaded files (exactly the two checkpoint files, by name).
        name: the new checkpoint's folder name (letters, digits, '.', '_', '-').
        checkpoints_dir: where uploaded checkpoints live; owner: the uploading browser session (recorded).

    Returns:
        The installed checkpoint directory.

    Raises:
        CheckpointError: a bad name, other files than the two, a name already taken, or a checkpoint that
            does not load. QuotaError: over the count or size cap of uploaded checkpoints (geodemo.quota).
    """
    name = (name or "").strip()
    if not is_safe_id(name):
        raise CheckpointError("Give the checkpoint a name of letters, digits, '.', '_' or '-'.")
    by_name = {Path(f).name: Path(f) for f in files or []}
    if set(by_name) != {WEIGHTS_FILE, CONFIG_FILE}:
        raise CheckpointError(
            f"Upload exactly two files, {WEIGHTS_FILE} and {CONFIG_FILE}; "
            f"pickled checkpoints ({', '.join(PICKLE_SUFFIXES[:4])}) are refused."
        )
    checkpoints_dir = Path(checkpoints_dir)
    out = checkpoints_dir / name
    if out.exists():
        raise CheckpointError(f"A checkpoint named {name!r} already exists; choose another name.")
    quota.admit(checkpoints_dir, by_name.values())
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".upload-", dir=checkpoints_dir))
    try:
        for fname, path in by_name.items():
            shutil.copyfile(path, tmp / fname)
        load_checkpoint(tmp)  # raises CheckpointError naming what is wrong
        quota.mark(tmp, owner)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
