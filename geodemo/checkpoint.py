"""Checkpoint directories: `model.safetensors` + `config.json`, saved atomically, loaded without pickle.

A checkpoint needs nothing else to predict: the config holds the architecture, cells, county order and
normalisation. Every refusal is a CheckpointError with one sentence saying what is wrong and what to do.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from geodemo.geo import ASSETS_DIR
from geodemo.model import ModelConfig, build_model

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
DEFAULT_CHECKPOINT = ASSETS_DIR / "checkpoints" / "default"
_CONVERT_HINT = (
    "convert it in a trusted Python session with safetensors.torch.save_file(torch.load(FILE, "
    "weights_only=True), 'model.safetensors') and add the config.json written at training time"
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one sentence naming the problem and the fix."""


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
    try:
        return ModelConfig.from_dict(data)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{file} cannot be used: {err}") from None


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
    state = _read_weights(path / WEIGHTS_FILE)
    try:
        model = build_model(config, backbone_weights="none")  # the file supplies every weight
    except ValueError as err:
        raise CheckpointError(f"{path / CONFIG_FILE} cannot be used: {err}") from None
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise CheckpointError(
            f"{path / WEIGHTS_FILE} does not match its config: {len(missing)} missing weights "
            f"(e.g. {missing[:2]}) and {len(extra)} unexpected (e.g. {extra[:2]})"
        )
    for key, value in own.items():
        if state[key].shape != value.shape:
            raise CheckpointError(
                f"weight {key} in {path / WEIGHTS_FILE} has shape {tuple(state[key].shape)} but the "
                f"config builds {tuple(value.shape)}; the weights and config.json do not belong together"
            )
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
