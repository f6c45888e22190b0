"""Shared test fixtures: real sample data, offline settings, tiny budgets."""

import os
import tempfile
from pathlib import Path

# Hub access must never be needed: tests run offline, as CI does.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Exported ONNX backbones (geodemo.onnx_engine) go to a throwaway cache, not the user's ~/.cache.
os.environ.setdefault("GEODEMO_CACHE_DIR", tempfile.mkdtemp(prefix="geodemo-test-cache-"))
# Uploads in this session's own folder: an app deletes its uploads when it stops (delete_cache), which in a
# shared /tmp/gradio would pull files from under another test session's app.
os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="geodemo-test-uploads-"))

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLE_DIR = SHARED / "data" / "lumen-sample"
PRIOR_CSV = SHARED / "data" / "lumen-coords.csv"
# The /predict JSON contract fixed by the issues (spelled out here, not imported from the code under test).
PREDICT_CONTRACT = frozenset(
    {"latitude", "longitude", "county", "county_probabilities"}
    | {"top_cells", "headings", "expected_error_km", "model", "elapsed_ms"}
    | {"neighbours"}
)


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real LUMEN sample: 100 locations x 4 views (read-only: copy before breaking it)."""
    if not (SAMPLE_DIR / "data.csv").exists():
        pytest.fail(f"the real sample data is missing at {SAMPLE_DIR}; fetch it with "
                    f"`python scripts/fetch_sample.py --out {SAMPLE_DIR}` (needs internet)")
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def prior_csv() -> Path:
    """4,732 real Street View coordinates used as the cell prior."""
    if not PRIOR_CSV.is_file():
        pytest.fail(f"the coordinate prior is missing at {PRIOR_CSV}; "
                    "see README.md, 'Where the data comes from'")
    return PRIOR_CSV


@pytest.fixture()
def sample_copy(sample_dir, tmp_path):
    """copy(n) -> ``tmp_path/data``: the sample's first n locations, copied (files get their own mtimes)."""

    def copy(n: int) -> Path:
        import shutil

        from geodemo.data import read_locations

        frame = read_locations(sample_dir).head(n)
        for uid in frame["uuid"]:
            shutil.copytree(sample_dir / "images" / uid, tmp_path / "data" / "images" / uid)
        frame.to_csv(tmp_path / "data" / "data.csv", index=False)
        return tmp_path / "data"

    return copy
