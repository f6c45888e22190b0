"""``python -m training push --checkpoint DIR --repo user/name [--private]``: share a checkpoint on the Hub.

Uploads only the checkpoint's own files (geodemo.hub.HUB_FILES: config.json, model.safetensors,
retrieval.safetensors, README.md; never logs, Lightning state or a pickle) with ``HfApi.upload_folder``,
after the checkpoint passes every check a download will face (``load_checkpoint``) and only when it has a
model card (training.card). Log in first with ``hf auth login`` or set ``HF_TOKEN``. The offline tests cover
the refusals and what would be uploaded; the upload itself needs the network and is not exercised by them.
"""

from __future__ import annotations

import json
from pathlib import Path

from training.cliutil import UsageError


def add_parser(sub) -> None:
    """Register ``push``."""
    p = sub.add_parser("push", help="upload a checkpoint with its model card to the Hugging Face Hub")
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="checkpoint folder (config.json, model.safetensors and README.md, the model card)")
    p.add_argument("--repo", required=True, help="Hub model repo to create or update, USER/NAME")
    p.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps "
                   "its visibility)")
    p.add_argument("--message", default="Upload geodemo checkpoint", help="commit message on the Hub")


def resolve_hub_checkpoints(args) -> None:
    """Every command's ``--checkpoint`` and ``train --init-from`` may be ``hf://user/name[@revision]``:
    replace it by the downloaded folder (only the checkpoint's files; geodemo.hub), which the command then
    checks exactly as a local one. argparse's Path folds "hf://" into "hf:/"; both spellings are read.

    Raises:
        UsageError: a bad hf:// name, a download that failed, or --update-card on a Hub model.
    """
    from geodemo.hub import HubError, hub_reference, local_checkpoint

    for key in ("checkpoint", "init_from"):
        value = getattr(args, key, None)
        try:
            found = hub_reference(value)
            if found is None:
                continue
            if getattr(args, "update_card", False):
                name = f"hf://{found[0]}"
                raise UsageError(f"--update-card writes the card of a local checkpoint folder and {name} is "
                                 "a Hub model; evaluate a local copy, then `training push` it again.")
            setattr(args, key, local_checkpoint(value))
        except HubError as err:
            raise UsageError(str(err)) from None


def check_pushable(ckpt_dir, repo_id: str) -> list[str]:
    """Refuse what must not be uploaded; returns the files that would be (names, in HUB_FILES order).

    Raises:
        UsageError: a bad repo id, a folder that is not a loadable checkpoint, or a checkpoint without card.
    """
    from geodemo.hub import HUB_FILES, is_repo_id
    from training.card import CARD_FILE, has_card

    if not is_repo_id(repo_id):
        raise UsageError(f"--repo {repo_id} is not a Hub repo id; write USER/NAME (letters, digits, '-', "
                         "'_', '.').")
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise UsageError(f"--checkpoint {ckpt_dir} is not a folder; pass a checkpoint folder written by "
                         "`train`.")
    from geodemo.checkpoint import load_checkpoint

    load_checkpoint(ckpt_dir)  # a CheckpointError names what is wrong: never upload what cannot be loaded
    if not has_card(ckpt_dir):
        raise UsageError(f"{ckpt_dir} has no model card ({CARD_FILE}); write one with `python -m training "
                         f"card --checkpoint {ckpt_dir}` (or `evaluate --update-card`), read it, then push.")
    return [name for name in HUB_FILES if (ckpt_dir / name).is_file()]


def push_checkpoint(ckpt_dir, repo_id: str, private: bool = False,
                    message: str = "Upload geodemo checkpoint") -> dict:
    """Upload a checkpoint folder to the Hub model repo ``repo_id`` (created if missing).

    Returns:
        {repo, url (of the commit), files}.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    files = check_pushable(ckpt_dir, repo_id)
    if constants.HF_HUB_OFFLINE:
        raise UsageError("HF_HUB_OFFLINE is set, so nothing can be uploaded; unset it to push.")
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(ckpt_dir), repo_id=repo_id, repo_type="model",
                                   allow_patterns=files, commit_message=message)
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        hint = ("log in with `hf auth login` or set HF_TOKEN to a token that can write to it"
                if status in (401, 403) else "check the repo name and the network")
        raise UsageError(f"the Hub refused the upload to {repo_id} (HTTP {status}); {hint}.") from None
    except OSError as err:
        raise UsageError(f"could not reach the Hub ({type(err).__name__}); check the network and try again."
                         ) from None
    return {"repo": repo_id, "url": str(getattr(commit, "commit_url", commit)), "files": files}


def run(args) -> None:
    """The ``push`` subcommand."""
    print(json.dumps(push_checkpoint(args.checkpoint, args.repo, args.private, args.message)))
