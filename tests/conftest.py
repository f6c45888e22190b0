"""Shared test fixtures: real sample data, offline settings, tiny budgets."""

import os
from pathlib import Path

from geodemo.paths import DataNotFound, scratch_dir
from geodemo.paths import prior_csv as _prior_csv
from geodemo.paths import sample_dir as _sample_dir

# Hub access must never be needed: tests run offline, as CI does.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# One scratch folder for this test session (<tmp>/geodemo/tests-<pid>), removed when pytest exits: exported
# ONNX backbones (geodemo.onnx_engine) go there instead of the user's ~/.cache, and so do the apps' uploads
# (an app deletes its uploads when it stops, which in a shared /tmp/gradio would pull files from under
# another test session's app).
_SCRATCH = scratch_dir("tests")
os.environ.setdefault("GEODEMO_CACHE_DIR", str(_SCRATCH / "cache"))
os.environ.setdefault("GRADIO_TEMP_DIR", str(_SCRATCH / "uploads"))

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PRIOR_CSV = _prior_csv()  # shipped with the project (assets/data/lumen-coords.csv)
# The /predict JSON contract fixed by the issues (spelled out here, not imported from the code under test).
PREDICT_CONTRACT = frozenset(
    {"latitude", "longitude", "county", "county_probabilities"}
    | {"top_cells", "headings", "expected_error_km", "model", "elapsed_ms"}
    | {"neighbours"}
)


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real LUMEN sample: 100 locations x 4 views (read-only: copy before breaking it).

    Found through geodemo.paths: $GEODEMO_SAMPLE, else data/lumen-sample, else ../shared/data/lumen-sample.
    """
    try:
        return _sample_dir()
    except DataNotFound as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def prior_csv() -> Path:
    """4,732 real Street View coordinates used as the cell prior (shipped with the project)."""
    assert PRIOR_CSV.is_file(), f"the shipped coordinate prior is missing at {PRIOR_CSV}"
    return PRIOR_CSV


def copy_locations(src: Path, frame, dst: Path) -> Path:
    """``dst``: the locations of ``frame`` (rows of ``src``'s data.csv) and their views, copied."""
    import shutil

    for uid in frame["uuid"]:
        shutil.copytree(src / "images" / uid, dst / "images" / uid)
    frame.to_csv(dst / "data.csv", index=False)
    return dst


@pytest.fixture()
def sample_copy(sample_dir, tmp_path):
    """copy(n) -> ``tmp_path/data``: the sample's first n locations, copied (files get their own mtimes)."""

    def copy(n: int) -> Path:
        from geodemo.data import read_locations

        return copy_locations(sample_dir, read_locations(sample_dir).head(n), tmp_path / "data")

    return copy


# Nothing a test session makes may stay in the system's temporary directory (<tmp>/geodemo, the scratch
# root, goes at exit): a new geodemo-* folder there fails the session.
_TMP = Path(_SCRATCH).parent.parent
_BEFORE = {p.name for p in _TMP.glob("geodemo*")}


def pytest_sessionfinish(session, exitstatus):
    left = sorted({p.name for p in _TMP.glob("geodemo*")} - _BEFORE - {"geodemo"})
    if left:
        print(f"\nerror: the test session left {left} in {_TMP}; clean up in the code that made them")
        session.exitstatus = 1
