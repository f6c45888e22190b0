"""Helpers for the app tests: a tiny random checkpoint over the test backbone, a free port."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

import pytest


def make_tiny_checkpoint(out_dir: Path, prior_csv: Path) -> Path:
    """A randomly initialised GeoModel (test backbone, 64 px, geocell + region + heading) saved to out_dir."""
    import torch

    from geodemo.cells import build_grid
    from geodemo.checkpoint import save_checkpoint
    from geodemo.geo import load_points_csv
    from geodemo.model import GeoModel, ModelConfig

    torch.manual_seed(0)
    lat, lon = load_points_csv(prior_csv)
    cells = build_grid(lat, lon, spacing_km=50.0)
    config = ModelConfig(
        tasks=["geocell", "region", "heading"],
        backbone="test_efficientnet",
        weights_source="none",
        image_size=64,
        cells=cells.to_dict(),
    )
    return save_checkpoint(GeoModel(config, backbone_weights="none"), config, out_dir)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_server(tmp_path_factory, sample_dir, prior_csv):
    """The whole app on a free port: tiny random checkpoint, temporary labels/jobs/checkpoint folders.

    Yields a SimpleNamespace(url, settings, demo). Started once per test session and shared.
    """
    from geodemo.ui import build_app, launch
    from geodemo.ui.settings import EXAMPLES_DIR, Settings

    root = tmp_path_factory.mktemp("app")
    settings = Settings(
        default_checkpoint=make_tiny_checkpoint(root / "tiny", prior_csv),
        labels_dir=root / "labels",
        jobs_dir=root / "jobs",
        checkpoints_dir=root / "checkpoints",
        data_roots=[EXAMPLES_DIR, Path(sample_dir).resolve(), root / "labels"],
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
