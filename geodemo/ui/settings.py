"""App settings from the environment (read once when the app is built)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from geodemo.paths import EXAMPLES_DIR, REPO, find_sample  # noqa: F401 (EXAMPLES_DIR: tabs import it here)

SPACE_DATA = Path("/data")  # a Hugging Face Space's persistent storage, when the Space has it


def _default_dir(name: str) -> str:
    """``./name``, or ``/data/geodemo/name`` inside a Space with persistent storage (the working directory
    of a Space is lost at every restart)."""
    if os.environ.get("SPACE_ID") and SPACE_DATA.is_dir() and os.access(SPACE_DATA, os.W_OK):
        return str(SPACE_DATA / "geodemo" / name)
    return name


def single_user_default() -> bool:
    """GEODEMO_SINGLE_USER=0/1 if set; else on for a local app, off in a Space (SPACE_ID) or on a public
    address (GRADIO_SERVER_NAME other than localhost)."""
    chosen = os.environ.get("GEODEMO_SINGLE_USER", "").strip()
    if chosen in ("0", "1"):
        return chosen == "1"
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1").strip().lower()
    return not os.environ.get("SPACE_ID") and host in ("", "127.0.0.1", "localhost", "::1")


@dataclass
class Settings:
    """Where the app reads and writes.

    Env: GEODEMO_DEFAULT_CHECKPOINT, GEODEMO_LABELS_DIR (./labels), GEODEMO_JOBS_DIR (./jobs),
    GEODEMO_CHECKPOINTS_DIR (./checkpoints), (in a Space with persistent storage, these three and the uploads
    default to /data/geodemo/<name>), GEODEMO_DATA_ROOTS (os.pathsep list; default: the
    bundled sample when present, assets/examples and the labels dir), GEODEMO_UPLOAD_TTL_S (3600: how
    long uploads stay in Gradio's cache, seconds), GEODEMO_MAX_SESSIONS (200: browser sessions whose state
    the server keeps, newest first), GEODEMO_UPLOADS_DIR (./uploads: unpacked dataset zips),
    GEODEMO_SINGLE_USER (0/1; default 1 on localhost, 0 in a Hugging Face Space or on another address: with 0,
    only the browser session that started a job may cancel, resume or delete it).
    """

    default_checkpoint: Path
    labels_dir: Path
    jobs_dir: Path
    checkpoints_dir: Path
    data_roots: list[Path]
    upload_ttl_s: int = 3600
    max_sessions: int = 200
    show_test_backbones: bool = False  # offer the internal test backbone in the Train tab (tests only)
    uploads_dir: Path | None = None  # uploaded dataset zips unpacked here (default: <jobs_dir>/../uploads)
    single_user: bool = False  # True: every visitor may cancel/resume/delete every job (one trusted user)

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from the environment, with the documented defaults."""
        from geodemo.checkpoint import DEFAULT_CHECKPOINT

        env = os.environ.get
        labels = Path(env("GEODEMO_LABELS_DIR", _default_dir("labels"))).resolve()
        roots = [Path(p).resolve() for p in env("GEODEMO_DATA_ROOTS", "").split(os.pathsep) if p.strip()]
        if not roots:
            roots = [d.resolve() for d in (find_sample(), EXAMPLES_DIR) if d and (d / "data.csv").exists()]
        roots = [r for r in roots if r != labels] + [labels]
        return cls(
            default_checkpoint=Path(env("GEODEMO_DEFAULT_CHECKPOINT", str(DEFAULT_CHECKPOINT))).resolve(),
            labels_dir=labels,
            jobs_dir=Path(env("GEODEMO_JOBS_DIR", _default_dir("jobs"))).resolve(),
            checkpoints_dir=Path(env("GEODEMO_CHECKPOINTS_DIR", _default_dir("checkpoints"))).resolve(),
            data_roots=roots,
            upload_ttl_s=max(1, int(env("GEODEMO_UPLOAD_TTL_S", "3600"))),
            max_sessions=max(1, int(env("GEODEMO_MAX_SESSIONS", "200"))),
            show_test_backbones=env("GEODEMO_TEST_BACKBONES", "") == "1",
            uploads_dir=Path(env("GEODEMO_UPLOADS_DIR", _default_dir("uploads"))).resolve(),
            single_user=single_user_default(),
        )

    def __post_init__(self):
        if self.uploads_dir is None:
            self.uploads_dir = Path(self.jobs_dir).parent / "uploads"

    def uploaded_datasets(self) -> list[Path]:
        """Dataset folders unpacked from uploaded zips (geodemo.archive), newest first."""
        if not self.uploads_dir.is_dir():
            return []
        found = [d for d in self.uploads_dir.iterdir()
                 if not d.name.startswith(".") and (d / "data.csv").is_file()]
        return sorted(found, key=lambda d: d.stat().st_mtime, reverse=True)

    def checkpoints(self) -> list[Path]:
        """Every usable checkpoint: the default one first, then trained/uploaded ones (newest first)."""
        from geodemo.checkpoint import list_checkpoints

        found = [Path(p).resolve() for p in list_checkpoints(self.checkpoints_dir)]
        found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        default = [self.default_checkpoint] if (self.default_checkpoint / "config.json").exists() else []
        return default + [p for p in found if p != self.default_checkpoint]

    def checkpoint_choices(self) -> list[tuple[str, str]]:
        """(label, path) pairs for a dropdown; then the hf://user/name models of GEODEMO_HUB_MODELS."""
        from geodemo.hub import hub_models

        local = [("default" if p == self.default_checkpoint else p.name, str(p)) for p in self.checkpoints()]
        return local + [(ref, ref) for ref in hub_models()]

    def path_names(self) -> dict[Path, str]:
        """Folder -> the name a user knows it by (what error messages show instead of server paths)."""
        names = {REPO: "the app folder"}
        names.update({Path(r): f"data root {label!r}" for label, r in self.dataset_choices()})
        names.update({self.labels_dir: "the labels folder", self.jobs_dir: "the jobs folder",
                      self.checkpoints_dir: "the checkpoints folder",
                      self.default_checkpoint: "the default checkpoint"})
        return {Path(p): n for p, n in names.items()}

    def dataset_choices(self) -> list[tuple[str, str]]:
        """(label, path) pairs for the configured data roots."""
        sample = find_sample()
        names = {
            **({sample.resolve(): "LUMEN sample (100)"} if sample else {}),
            EXAMPLES_DIR.resolve(): "bundled examples (3)",
            self.labels_dir: "my labels",
        }
        return [(names.get(r, r.name), str(r)) for r in self.data_roots]
