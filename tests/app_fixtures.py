"""Helpers for the app tests: the running app on a free port."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

import pytest


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_server(tmp_path_factory, sample_dir):
    """The whole app on a free port, on the bundled default checkpoint (what ships; the README screenshots
    come from these tests), with temporary labels/jobs/checkpoint folders.

    Yields a SimpleNamespace(url, settings, demo). Started once per test session and shared.
    """
    from geodemo.checkpoint import DEFAULT_CHECKPOINT
    from geodemo.ui import build_app, launch
    from geodemo.ui.settings import EXAMPLES_DIR, Settings

    root = tmp_path_factory.mktemp("app")
    settings = Settings(
        default_checkpoint=DEFAULT_CHECKPOINT,
        labels_dir=root / "labels",
        jobs_dir=root / "jobs",
        checkpoints_dir=root / "checkpoints",
        data_roots=[EXAMPLES_DIR, Path(sample_dir).resolve(), root / "labels"],
        show_test_backbones=True,  # tiny training budgets in the browser tests
    )
    demo = build_app(settings)
    port = free_port()
    launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}", settings=settings, demo=demo)
    manager = demo.geodemo_jobs
    for job in manager.list():
        if job.status in ("queued", "running"):
            manager.cancel(job.id)
    manager.shutdown()
    demo.close()
