"""Caps on what visitors may store: uploaded checkpoints (count and total size) and who uploaded each.

An uploaded checkpoint folder carries a small marker, ``.uploaded.json`` ({"owner", "time"}): it tells
uploads apart from trained checkpoints (which the job queue already bounds) and records the browser
session that made it. The caps come from GEODEMO_MAX_UPLOADED_CHECKPOINTS and
GEODEMO_MAX_UPLOADED_CHECKPOINT_MB.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

MARKER = ".uploaded.json"
MAX_UPLOADED = int(os.environ.get("GEODEMO_MAX_UPLOADED_CHECKPOINTS", 20))
MAX_UPLOADED_BYTES = int(os.environ.get("GEODEMO_MAX_UPLOADED_CHECKPOINT_MB", 1024)) * 1024**2


class QuotaError(ValueError):
    """An upload over a cap; the message says which cap and what to do."""


def uploaded(checkpoints_dir) -> list[Path]:
    """The uploaded checkpoint folders under `checkpoints_dir` (those with the marker)."""
    root = Path(checkpoints_dir)
    return [d for d in root.iterdir() if (d / MARKER).is_file()] if root.is_dir() else []


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def admit(checkpoints_dir, files) -> None:
    """QuotaError unless one more upload of `files` (paths) fits both caps."""
    present = uploaded(checkpoints_dir)
    if len(present) >= MAX_UPLOADED:
        raise QuotaError(f"The server already holds {len(present)} uploaded checkpoints, its limit; ask its "
                         "admin to remove some (or raise GEODEMO_MAX_UPLOADED_CHECKPOINTS).")
    total = sum(_bytes(d) for d in present) + sum(Path(f).stat().st_size for f in files)
    if total > MAX_UPLOADED_BYTES:
        raise QuotaError(f"This upload would bring uploaded checkpoints to {total / 1024**2:,.0f} MB, over "
                         f"the {MAX_UPLOADED_BYTES // 1024**2:,} MB limit; upload a smaller model or ask the "
                         "admin to remove old ones.")


def mark(folder, owner: str | None) -> None:
    """Record that `folder` was uploaded, by `owner` (a browser session; None: single-user mode)."""
    (Path(folder) / MARKER).write_text(json.dumps({"owner": owner or "", "time": time.time()}),
                                       encoding="utf-8")


def owner(folder) -> str | None:
    """Who uploaded `folder` ("" = anyone), or None when it was not uploaded."""
    try:
        return str(json.loads((Path(folder) / MARKER).read_text(encoding="utf-8")).get("owner", ""))
    except (OSError, ValueError, AttributeError):
        return None
