"""Dataset zips: a real 10-location archive unpacks and validates; zip-slip, zip bombs, symlinks and
non-image files are each refused with one sentence, and nothing lands outside the upload folder."""

import os
import stat
import zipfile

import pandas as pd
import pytest

from geodemo.archive import ArchiveError, unpack_dataset
from geodemo.data import read_locations, view_paths


def sample_zip(sample_dir, path, n=10, folder="mydata/", extra=()):
    """The first n real sample locations as a LUMEN zip (inside one folder, as zipping a folder does)."""
    frame = read_locations(sample_dir).head(n)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{folder}data.csv", frame[["uuid", "latitude", "longitude"]].to_csv(index=False))
        for uid in frame.uuid:
            for view in view_paths(sample_dir, uid).values():
                zf.write(view, f"{folder}images/{uid}/{view.name}")
        for name, data in extra:
            zf.writestr(name, data)
    return path


def _left_behind(root):
    return sorted(p.relative_to(root) for p in root.rglob("*"))


@pytest.fixture
def outside(tmp_path):
    """Where an escaping entry would land (the upload folder is tmp_path/uploads)."""
    return tmp_path


def test_a_real_archive_unpacks_and_validates(sample_dir, tmp_path):
    archive = sample_zip(sample_dir, tmp_path / "ten.zip", extra=[("mydata/.DS_Store", b"x"),
                                                                  ("__MACOSX/._data.csv", b"x")])
    folder = unpack_dataset(archive, tmp_path / "uploads")
    assert folder.parent == tmp_path / "uploads"
    frame = read_locations(folder)
    assert len(frame) == 10 and all(len(view_paths(folder, u)) == 4 for u in frame.uuid)
    assert frame.latitude.tolist() == read_locations(sample_dir).latitude.head(10).tolist()
    assert not (folder / ".DS_Store").exists() and not (folder / "__MACOSX").exists()


def test_zip_slip_is_refused_and_writes_nothing(sample_dir, tmp_path, outside):
    for evil in ("../evil.txt", "mydata/images/../../../evil.jpg", "/tmp/evil.jpg"):
        archive = sample_zip(sample_dir, tmp_path / "slip.zip", n=1, extra=[(evil, b"boom")])
        with pytest.raises(ArchiveError, match="zip-slip"):
            unpack_dataset(archive, tmp_path / "uploads")
        assert _left_behind(tmp_path / "uploads") == []
    assert not (outside / "evil.txt").exists() and not (outside.parent / "evil.jpg").exists()


def test_zip_bomb_is_refused(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.csv", "uuid,latitude,longitude\na,45.8,15.9\n")
        zf.writestr("images/a/0.jpg", b"\0" * (50 * 1024 * 1024))  # 50 MB of zeros: ~50 kB packed
    assert os.path.getsize(archive) < 1024 * 1024
    with pytest.raises(ArchiveError, match="zip bomb"):
        unpack_dataset(archive, tmp_path / "uploads")
    assert _left_behind(tmp_path / "uploads") == []


def test_symlinks_are_refused(sample_dir, tmp_path):
    archive = sample_zip(sample_dir, tmp_path / "link.zip", n=1)
    link = zipfile.ZipInfo("mydata/images/passwd.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symbolic link"):
        unpack_dataset(archive, tmp_path / "uploads")
    assert _left_behind(tmp_path / "uploads") == []


def test_non_image_views_and_non_zips_are_refused(sample_dir, tmp_path):
    frame = read_locations(sample_dir).head(2)
    archive = tmp_path / "text.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data.csv", frame[["uuid", "latitude", "longitude"]].to_csv(index=False))
        for uid in frame.uuid:
            zf.writestr(f"images/{uid}/0.jpg", b"this is not a picture, only text")
    with pytest.raises(ArchiveError, match=r"not a usable dataset: \[.*\] .*image"):
        unpack_dataset(archive, tmp_path / "uploads")
    assert _left_behind(tmp_path / "uploads") == []
    not_zip = tmp_path / "data.zip"
    not_zip.write_text("uuid,latitude,longitude\n")
    with pytest.raises(ArchiveError, match="not a zip archive"):
        unpack_dataset(not_zip, tmp_path / "uploads")
    no_csv = tmp_path / "nocsv.zip"
    with zipfile.ZipFile(no_csv, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ArchiveError, match="no data.csv"):
        unpack_dataset(no_csv, tmp_path / "uploads")


def test_cli_evaluates_a_zip(sample_dir, tmp_path):
    import subprocess
    import sys

    archive = sample_zip(sample_dir, tmp_path / "ten.zip", n=4)
    out = tmp_path / "eval.json"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, "-m", "training", "evaluate", "--out", str(out), "--data"]
    r = subprocess.run([*command, str(archive)], cwd=repo, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    table = pd.read_csv(out.with_suffix(".csv"))
    assert len(table) == 4 and set(table.uuid) == set(read_locations(sample_dir).uuid.head(4))
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../x.csv", "x")
    r = subprocess.run([*command, str(bad)], cwd=repo, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "zip-slip" in r.stderr and "Traceback" not in r.stderr
