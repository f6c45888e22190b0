"""Checkpoints on the Hugging Face Hub: ``hf://user/name`` (or a repo id) -> a local checkpoint folder.

Only the checkpoint's own files are downloaded (``HUB_FILES``: never a pickle, whatever the repo holds), into
the Hub's usual cache (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``); the folder returned is then
validated exactly like a local checkpoint by ``geodemo.checkpoint``. With ``HF_HUB_OFFLINE=1`` a model that
was downloaded before is served from that cache, and one that was not is refused in one sentence.

Uploading lives in ``training.push`` (``python -m training push``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

HUB_PREFIX = "hf://"
HUB_FILES = ("config.json", "model.safetensors", "retrieval.safetensors", "README.md")
HUB_MODELS_ENV = "GEODEMO_HUB_MODELS"  # extra hf:// models offered in the app's checkpoint lists
# hf://user/name[@revision]; a Path folds "hf://" to "hf:/", so that spelling is accepted too
_REFERENCE = re.compile(r"hf:/{1,2}(?P<repo>[^@\s]+?)/?(?:@(?P<revision>[\w.\-/]+))?")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.\-]{0,95}/[A-Za-z0-9][\w.\-]{0,95}")


class HubError(ValueError):
    """A Hub model that cannot be fetched; the message is one sentence naming the problem and the fix."""


def hub_reference(value) -> tuple[str, str | None] | None:
    """(repo id, revision or None) when ``value`` is ``hf://user/name[@revision]``, else None.

    Raises:
        HubError: an ``hf://`` value whose repo id is not ``user/name``.
    """
    if value is None:
        return None
    match = _REFERENCE.fullmatch(str(value).strip())
    if match is None:
        return None
    repo = match["repo"]
    if not _REPO_ID.fullmatch(repo) or ".." in repo:
        raise HubError(f"{value} does not name a Hub model; write hf://USER/NAME (optionally @REVISION).")
    return repo, match["revision"]


def is_repo_id(value) -> bool:
    """True for a bare ``user/name`` that could be a Hub repo id (no scheme, two parts, safe characters)."""
    return isinstance(value, str) and bool(_REPO_ID.fullmatch(value)) and ".." not in value


def download(repo_id: str, revision: str | None = None, cache_dir=None) -> Path:
    """Fetch a Hub model's checkpoint files (``HUB_FILES`` only) and return the local snapshot folder.

    Raises:
        HubError: offline and not cached, no such repo or revision, no network, or no config.json in it.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"hf://{repo_id}" + (f"@{revision}" if revision else "")
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                        allow_patterns=list(HUB_FILES)))
    except LocalEntryNotFoundError:
        raise HubError(f"{where} is not in the local Hub cache and the Hub cannot be reached (HF_HUB_OFFLINE "
                       "or no network); download it once online, or pass a local checkpoint folder."
                       ) from None
    except RevisionNotFoundError:
        raise HubError(f"{where} has no revision {revision!r}; use a branch, tag or commit of the repo."
                       ) from None
    except RepositoryNotFoundError:
        raise HubError(f"{where} does not exist on the Hub or is private; check the name, or log in with "
                       "`hf auth login` (or set HF_TOKEN) for a private model.") from None
    except (HfHubHTTPError, OSError) as err:
        raise HubError(f"{where} could not be downloaded ({type(err).__name__}); check the network and "
                       "try again.") from None
    if not (folder / "config.json").is_file():
        raise HubError(f"{where} holds no config.json, so it is not a geodemo checkpoint; a checkpoint repo "
                       "holds config.json and model.safetensors (`python -m training push` uploads one).")
    return folder


def local_checkpoint(value, cache_dir=None) -> Path:
    """The local folder a checkpoint reference names: ``hf://user/name`` is downloaded, anything else a Path.

    Raises:
        HubError: see ``download``.
    """
    found = hub_reference(value)
    if found is None:
        return Path(value)
    return download(*found, cache_dir=cache_dir)


def pretrained_folder(name_or_path, revision: str | None = None, cache_dir=None) -> Path:
    """``Predictor.from_pretrained``'s argument -> a local checkpoint folder: an existing folder as it is,
    ``hf://user/name[@revision]`` or a bare ``user/name`` downloaded (see ``download``).

    Raises:
        HubError: neither a folder nor a Hub model id, or the download failed.
    """
    if Path(str(name_or_path)).is_dir():
        return Path(name_or_path)
    found = hub_reference(name_or_path) or ((str(name_or_path), None) if is_repo_id(name_or_path) else None)
    if found is None:
        raise HubError(f"{name_or_path} is neither a checkpoint folder nor a Hub model id; pass a folder "
                       "holding config.json and model.safetensors, or USER/NAME.")
    return download(found[0], revision or found[1], cache_dir=cache_dir)


def hub_models() -> list[str]:
    """The ``hf://`` models named in ``GEODEMO_HUB_MODELS`` (comma- or space-separated; a bare repo id
    gets the prefix), for the app's checkpoint lists. Nothing is downloaded until one is chosen."""
    names = [n for n in re.split(r"[\s,]+", os.environ.get(HUB_MODELS_ENV, "")) if n]
    return list(dict.fromkeys(n if n.startswith(HUB_PREFIX) else HUB_PREFIX + n for n in names))
