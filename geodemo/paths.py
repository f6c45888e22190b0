"""Where the project's files are: the bundled assets, the real sample and the coordinate prior.

One lookup for every caller (tests, the CLI's defaults, the app's data roots, the README's examples):

- the bundled assets (default checkpoint, examples, geodata, the prior) sit in ``assets/`` of a source
  checkout, or in ``geodemo/assets/`` of an installed package;
- the LUMEN sample is found at ``$GEODEMO_SAMPLE`` when it is set (and only there: an explicit choice is
  not second-guessed), else at ``data/lumen-sample`` in the repository (where ``scripts/fetch_sample.py``
  puts it), else at ``../shared/data/lumen-sample`` (this project's own CI machines);
- scratch space (test caches, the app's upload cache) lives under one folder, ``<tmp>/geodemo``, one
  sub-folder per process, removed when the process exits and swept at the next start if it was killed.

Torch-free and cheap to import.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO = PACKAGE_DIR.parent  # the source checkout (meaningless for an installed package)
# An installed wheel carries the assets inside the package; a checkout keeps them at the top.
ASSETS_DIR = PACKAGE_DIR / "assets" if (PACKAGE_DIR / "assets").is_dir() else REPO / "assets"
GEO_DIR = ASSETS_DIR / "geo"
EXAMPLES_DIR = ASSETS_DIR / "examples"
CHECKPOINTS_DIR = ASSETS_DIR / "checkpoints"
PRIOR_CSV = ASSETS_DIR / "data" / "lumen-coords.csv"  # shipped: 4,732 real Street View coordinates
SAMPLE_ENV = "GEODEMO_SAMPLE"
SAMPLE_NAME = "lumen-sample"


class DataNotFound(FileNotFoundError):
    """The sample is nowhere this project looks; the message says how to get it."""


def sample_candidates() -> list[Path]:
    """Where the sample is looked for, in order (only ``$GEODEMO_SAMPLE`` when it is set)."""
    if os.environ.get(SAMPLE_ENV):
        return [Path(os.environ[SAMPLE_ENV]).expanduser().resolve()]
    return [REPO / "data" / SAMPLE_NAME, REPO.parent / "shared" / "data" / SAMPLE_NAME]


def find_sample() -> Path | None:
    """The first candidate folder holding a ``data.csv``, or None."""
    for path in sample_candidates():
        if (path / "data.csv").is_file():
            return path
    return None


def sample_dir() -> Path:
    """The LUMEN sample folder; raises DataNotFound with one sentence saying how to fetch it."""
    path = find_sample()
    if path is None:
        where = ", ".join(str(p) for p in sample_candidates())
        raise DataNotFound(
            f"The LUMEN sample was not found (looked in {where}); fetch it with "
            f"`python scripts/fetch_sample.py --if-missing` (needs internet) or point {SAMPLE_ENV} at a copy."
        )
    return path


def prior_csv() -> Path:
    """The shipped coordinate prior (``latitude,longitude`` of 4,732 real Street View locations)."""
    return PRIOR_CSV


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def scratch_dir(kind: str) -> Path:
    """A fresh ``<tmp>/geodemo/<kind>-<pid>`` folder, removed when this process exits.

    Folders of processes that no longer run (killed before their exit handler) are swept first, so
    nothing piles up in the system's temporary directory however a run ends.
    """
    root = Path(tempfile.gettempdir()) / "geodemo"
    root.mkdir(exist_ok=True)
    for old in root.iterdir():
        prefix, _, pid = old.name.rpartition("-")
        if prefix and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    path = root / f"{kind}-{os.getpid()}"
    path.mkdir(exist_ok=True)
    atexit.register(_remove_scratch, path)
    return path


def _remove_scratch(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    try:
        path.parent.rmdir()  # the shared parent goes too once it is empty
    except OSError:
        pass
