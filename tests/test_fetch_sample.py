"""scripts/fetch_sample.py: the public sample's upstream layout in, a clean LUMEN folder out (offline, file://)."""

import shutil
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO

from geodemo.data import read_locations
from geodemo.validate import validate_dataset

SCRIPT = REPO / "scripts" / "fetch_sample.py"


@pytest.fixture
def upstream(tmp_path, sample_dir):
    """A local copy of the repository's raw tree, data.csv with the upstream's extra columns (3 locations)."""
    frame = pd.read_csv(sample_dir / "data.csv").head(3)
    folder = tmp_path / "repo" / "HEAD" / "data" / "dataset_external_subset"
    for uuid in frame["uuid"]:
        shutil.copytree(sample_dir / "images" / uuid, folder / "images" / uuid)
    raw = pd.DataFrame({
        "Unnamed: 0": [71, 634, 1543],
        "sample_longitude": frame["longitude"] + 0.01,
        "sample_latitude": frame["latitude"] - 0.01,
        "status": "OK",
        "latitude": frame["latitude"],
        "longitude": frame["longitude"],
        "panorama_id": ["a", "b", "c"],
        "uuid": frame["uuid"],
    })
    raw.to_csv(folder / "data.csv")  # with pandas' own unnamed index column, as upstream has
    return tmp_path / "repo", frame


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_fetch_writes_a_clean_lumen_folder(upstream, tmp_path):
    repo, frame = upstream
    out = tmp_path / "data" / "lumen-sample"
    r = _run("--out", str(out), "--base-url", repo.as_uri())
    assert r.returncode == 0, r.stderr
    assert (out / "data.csv").read_text().splitlines()[0] == "uuid,latitude,longitude"
    got = read_locations(out)
    assert list(got["uuid"]) == list(frame["uuid"])
    assert got["latitude"].tolist() == pytest.approx(frame["latitude"].tolist())
    assert validate_dataset(out).ok
    assert sorted(p.name for p in (out / "images" / frame["uuid"][0]).iterdir()) == [
        "0.jpg", "180.jpg", "270.jpg", "90.jpg"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_fetch_failure_is_one_sentence_and_leaves_nothing(upstream, tmp_path):
    repo, frame = upstream
    (repo / "HEAD" / "data" / "dataset_external_subset" / "images" / frame["uuid"][1] / "90.jpg").write_bytes(
        b"not a jpeg")
    out = tmp_path / "data" / "lumen-sample"
    r = _run("--out", str(out), "--base-url", repo.as_uri())
    assert r.returncode == 1
    assert "is not a usable image" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and not list(out.parent.iterdir())
    missing = _run("--out", str(tmp_path / "x"), "--base-url", (tmp_path / "nowhere").as_uri())
    assert missing.returncode == 1 and "could not download" in missing.stderr
    assert _run("--out", str(repo)).returncode == 2  # an existing folder is never overwritten
