"""Issue 20, library level: only photo formats are decoded, a request's decoding is bounded in pixels and
time, zips cost no more than the dataset they hold, uploads expire, and the small refusals."""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from geodemo import quota
from geodemo.archive import MAX_LOCATIONS, ArchiveError, prune_uploads, unpack_dataset
from geodemo.data import read_locations, view_paths
from geodemo.images import REQUEST_PIXELS, ImageError, decode_budget, load_rgb, probe
from geodemo.jobs import JobError, JobManager
from geodemo.labels import LabelConflict, LabelError, LabelStore
from geodemo.panorama import PanoramaError, panorama_views
from geodemo.ui.common import display_paths
from geodemo.validate import validate_dataset

ZAGREB = (45.8150, 15.9819)
# PostScript that never ends: Ghostscript would spin on it forever
LOOP_PS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n{ } loop\n"


def children() -> set[int]:
    """Pids of this process's live child processes (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def png_16bit_rgba(width: int, height: int) -> bytes:
    """A zero-filled 16-bit RGBA PNG (tiny on disk, 8 bytes per pixel to decode)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pack = zlib.compressobj(9)
    row = b"\0" * (1 + 8 * width)
    idat = b"".join(pack.compress(row) for _ in range(height)) + pack.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def encoded(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def real_jpeg(sample_dir) -> Path:
    return view_paths(sample_dir, read_locations(sample_dir).uuid.iloc[0])[0]


# ------------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize("data, kind", [
    (LOOP_PS, "PostScript"),
    (b"\xc5\xd0\xd3\xc6" + b"\0" * 40, "PostScript"),  # DOS EPS binary header
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "PDF"),
    (b"8BPS\x00\x01" + b"\0" * 40, "PSD"),
    (b"GIF89a\x01\x00\x01\x00" + b"\0" * 20, "GIF"),
])
def test_non_photo_formats_are_refused_from_the_header(tmp_path, data, kind):
    path = tmp_path / "holiday.jpg"  # the name lies; the header decides
    path.write_bytes(data)
    before = children()
    start = time.perf_counter()
    with pytest.raises(ImageError, match=kind) as info:
        load_rgb(path)
    assert time.perf_counter() - start < 1.0
    message = str(info.value)
    assert "holiday.jpg" in message and "JPEG, PNG" in message and "\n" not in message
    with pytest.raises(ImageError, match=kind):
        probe(data)
    assert children() <= before  # no decoder process was started


def test_ghostscript_is_switched_off_for_the_whole_process():
    assert EpsImagePlugin.gs_binary is False and not EpsImagePlugin.has_ghostscript()


def test_supported_formats_still_decode(real_jpeg):
    rgb = load_rgb(real_jpeg)
    for fmt in ("PNG", "WEBP", "BMP", "TIFF"):
        back = load_rgb(encoded(rgb, fmt))
        assert back.shape == rgb.shape and np.abs(back.astype(int) - rgb).mean() < 8, fmt


# -------------------------------------------------------------------------------- pixel budget, time
def test_the_attack_png_is_refused_from_its_header_within_the_budget():
    bomb = png_16bit_rgba(7990, 7990)  # ~0.5 MB on disk, 64 MP of 16-bit RGBA to decode
    assert len(bomb) < 1_000_000
    start = time.process_time()
    with pytest.raises(ImageError, match="megapixel budget"):
        load_rgb(bomb, min_side=224)
    assert time.process_time() - start < 0.5


def test_views_of_one_request_share_the_budget():
    side = int((REQUEST_PIXELS / 3) ** 0.5)  # three such views fit, a fourth does not
    view = png_16bit_rgba(side, side)
    with decode_budget():
        for _ in range(3):
            load_rgb(view, min_side=224)
        with pytest.raises(ImageError, match="left of the 36-megapixel budget"):
            load_rgb(view, min_side=224)
    load_rgb(view, min_side=224)  # outside the request, a fresh budget


def test_jpegs_decode_at_reduced_scale_and_cost_only_that(real_jpeg):
    big = np.asarray(Image.open(real_jpeg).resize((6400, 6400)))  # 41 MP: over the budget at full size
    data = encoded(big, "JPEG")
    with pytest.raises(ImageError, match="budget"):
        load_rgb(data)
    small = load_rgb(data, min_side=640)  # DCT-scaled by 1/8 while decoding
    assert small.shape == (800, 800, 3)


def test_large_pngs_are_box_reduced_when_much_larger_than_needed(real_jpeg):
    assert load_rgb(encoded(np.asarray(Image.open(real_jpeg))), min_side=224).shape == (640, 640, 3)  # exact
    rgb = np.asarray(Image.open(real_jpeg).resize((4000, 2000)))
    out = load_rgb(encoded(rgb), min_side=500)
    assert out.shape == (500, 1000, 3)
    assert np.abs(out.astype(int) - np.asarray(Image.fromarray(rgb).reduce(4)).astype(int)).max() <= 1


def test_a_slow_decode_stops_at_the_deadline(real_jpeg):
    rgb = np.tile(np.asarray(Image.open(real_jpeg)), (5, 5, 1))  # 3200 x 3200 PNG, decoded in chunks
    data = encoded(rgb)
    start = time.perf_counter()
    load_rgb(data)
    full = time.perf_counter() - start
    with decode_budget(seconds=0.0):
        start = time.perf_counter()
        with pytest.raises(ImageError, match=r"took over 0 s to decode"):
            load_rgb(data, name="slow.png")
    assert time.perf_counter() - start < max(0.05, full / 2)


# --------------------------------------------------------------------------------------- small ones
def test_labels_refuse_tiny_views_headings_and_a_reused_request_id(tmp_path, real_jpeg):
    store = LabelStore(tmp_path / "labels")
    for size in ((1, 1), (8, 1), (31, 200)):
        tiny = encoded(np.full((size[1], size[0], 3), 99, np.uint8))
        with pytest.raises(LabelError, match="minimum side"):
            store.add({0: tiny}, *ZAGREB)
    for heading in (1e308, -720, 360.5):
        with pytest.raises(LabelError, match=r"outside -360\.\.360"):
            store.add({0: real_jpeg}, *ZAGREB, heading=heading)
    assert store.count() == 0
    first = store.add({0: real_jpeg}, *ZAGREB, heading=-90, request_id="r-1")
    assert store.add({0: real_jpeg}, *ZAGREB, heading=-90, request_id="r-1").uuid == first.uuid  # a retry
    other = view_paths(real_jpeg.parents[2], real_jpeg.parent.name)[1]  # the east view
    changed = [({0: other}, ZAGREB), ({0: real_jpeg}, (45.5, 16.0)), ({0: real_jpeg, 90: other}, ZAGREB)]
    for views, point in changed:
        with pytest.raises(LabelConflict, match="'r-1' was already used for a different label"):
            store.add(views, *point, request_id="r-1")
    assert store.count() == 1 and store.frame().heading.tolist() == [270.0]


def test_panorama_headings_outside_a_turn_are_refused(real_jpeg):
    panorama = np.zeros((128, 256, 3), np.uint8)
    for heading in (1e308, -720, 361, float("nan"), "east"):
        with pytest.raises(PanoramaError, match="centre heading"):
            panorama_views(panorama, heading, size=32)
    assert set(panorama_views(panorama, -360, size=32)) == {0, 90, 180, 270}


def test_validation_refuses_views_under_32_pixels(sample_copy):
    root = sample_copy(2)
    uid = read_locations(root).uuid.iloc[0]
    view = view_paths(root, uid)[0]
    Image.new("RGB", (31, 31), (90, 120, 60)).save(view, format="JPEG")
    report = validate_dataset(root)
    assert not report.ok and any(p.where == uid and "minimum side" in p.what for p in report.errors)


def test_a_quoted_archive_entry_is_not_rewritten_as_a_server_path():
    message = "The archive entry '/tmp/not-here/abs.txt' points outside the archive's folder (zip-slip)."
    assert display_paths(message) == message
    assert "/etc" not in display_paths("cannot read /etc/hostname now")  # server paths are still hidden


# --------------------------------------------------------------------------------------------- zips
def sample_zip(sample_dir, path: Path, n: int, extra=()) -> Path:
    frame = read_locations(sample_dir).head(n)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.csv", frame[["uuid", "latitude", "longitude"]].to_csv(index=False))
        for uid in frame.uuid:
            for view in view_paths(sample_dir, uid).values():
                zf.write(view, f"images/{uid}/{view.name}")
        for name, data in extra:
            zf.writestr(name, data)
    return path


def _disk(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_small_compressible_entries_count_as_a_bomb(sample_dir, tmp_path):
    """The attack: 1 MiB entries of zeros (the old check started above 1 MiB) under unlisted ids."""
    pad = [(f"images/pad{i:04d}/0.jpg", b"\0" * 2**20) for i in range(40)]
    archive = sample_zip(sample_dir, tmp_path / "padded.zip", 2, extra=pad)
    with pytest.raises(ArchiveError, match="expands .* times"):
        unpack_dataset(archive, tmp_path / "uploads")
    assert _disk(tmp_path / "uploads") == 0


def test_entries_outside_the_dataset_are_never_extracted(sample_dir, tmp_path):
    rng = np.random.default_rng(0)
    pad = [(f"images/not-listed-{i}/0.jpg", rng.bytes(256 * 1024)) for i in range(40)]  # incompressible
    pad.append(("notes/readme.txt", b"not part of the dataset"))
    archive = sample_zip(sample_dir, tmp_path / "padded.zip", 3, extra=pad)
    folder = unpack_dataset(archive, tmp_path / "uploads")
    dataset = sum(p.stat().st_size for uid in read_locations(sample_dir).uuid.head(3)
                  for p in view_paths(sample_dir, uid).values())
    assert _disk(tmp_path / "uploads") < dataset + 10_000 < archive.stat().st_size
    assert sorted(p.name for p in (folder / "images").iterdir()) == sorted(read_locations(folder).uuid)
    assert not (folder / "notes").exists()


def test_too_many_locations_are_refused_with_the_cap(tmp_path):
    pixel = encoded(np.full((1, 1, 3), 7, np.uint8))
    archive = tmp_path / "many.zip"
    rows = [f"loc{i},45.8,15.9" for i in range(12_000)]
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.csv", "uuid,latitude,longitude\n" + "\n".join(rows) + "\n")
        for i in range(12_000):
            zf.writestr(f"images/loc{i}/0.png", pixel)
    start = time.perf_counter()
    with pytest.raises(ArchiveError, match=f"12,000 locations, more than the {MAX_LOCATIONS:,} one upload"):
        unpack_dataset(archive, tmp_path / "uploads")
    assert time.perf_counter() - start < 10 and _disk(tmp_path / "uploads") == 0


def looping_zip(sample_dir, path: Path) -> Path:
    """A one-location dataset zip whose north view is the looping PostScript file, named 0.jpg."""
    frame = read_locations(sample_dir).head(1)
    uid = frame.uuid.iloc[0]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data.csv", frame[["uuid", "latitude", "longitude"]].to_csv(index=False))
        zf.writestr(f"images/{uid}/0.jpg", LOOP_PS)
        for view in list(view_paths(sample_dir, uid).values())[1:]:
            zf.write(view, f"images/{uid}/{view.name}")
    return path


def test_a_looping_postscript_view_in_a_zip_is_refused_at_once(sample_dir, tmp_path):
    archive = looping_zip(sample_dir, tmp_path / "ps.zip")
    start = time.perf_counter()
    with pytest.raises(ArchiveError, match="PostScript"):
        unpack_dataset(archive, tmp_path / "uploads")
    assert time.perf_counter() - start < 5 and _disk(tmp_path / "uploads") == 0


def test_uploads_expire_oldest_first_by_age_and_size(tmp_path, caplog):
    root = tmp_path / "uploads"
    now = time.time()
    for i, age in enumerate((10, 20, 30, 4000)):  # seconds old; d3 is past the age limit
        folder = root / f"d{i}"
        folder.mkdir(parents=True)
        (folder / "data.csv").write_bytes(b"x" * 1000)
        os.utime(folder, (now - age, now - age))
    leftover = root / ".unpack-killed"
    leftover.mkdir()
    os.utime(leftover, (now - 7200, now - 7200))
    with caplog.at_level(logging.INFO, logger="geodemo.archive"):
        removed = prune_uploads(root, max_age_s=3600, max_bytes=2500)
    assert removed == [".unpack-killed", "d3", "d2"]  # expired, then the oldest until 2 x 1000 B remain
    assert sorted(p.name for p in root.iterdir()) == ["d0", "d1"]
    assert "expired" in caplog.text and "size limit" in caplog.text


# ----------------------------------------------------------------------------------- ownership, jobs
FAKE_CLI = r"""
import sys, time
time.sleep(float(sys.argv[sys.argv.index("--sleep") + 1]))
"""


@pytest.fixture
def manager(tmp_path):
    script = tmp_path / "fake_training.py"
    script.write_text(FAKE_CLI)
    jobs = JobManager(tmp_path / "jobs", command=[sys.executable, str(script)], grace_s=1.0)
    yield jobs
    jobs.shutdown()


def _running(manager, job_id):
    deadline = time.monotonic() + 20
    while manager.get(job_id).status != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    return manager.get(job_id)


def test_only_the_owner_may_cancel_resume_or_delete(manager):
    job = manager.submit("train", ["train", "--sleep", "60"], out="x", owner="session-a")
    for action in (manager.cancel, manager.resume, manager.delete):
        with pytest.raises(JobError, match="started by another visitor; you can follow it, but only they"):
            action(job.id, "session-b")
    assert manager.get(job.id).status in ("queued", "running")
    manager.cancel(job.id, "session-a")
    assert manager.wait(job.id, 20).status == "cancelled"
    shared = manager.submit("train", ["train", "--sleep", "60"], out="y")  # single-user mode: no owner
    manager.cancel(shared.id, "session-b")
    assert manager.wait(shared.id, 20).status == "cancelled"


def test_a_job_killed_from_outside_says_so(manager):
    job = _running(manager, manager.submit("train", ["train", "--sleep", "60"], out="x").id)
    os.kill(job.pid, 9)
    done = manager.wait(job.id, 20)
    assert done.status == "failed" and done.message.startswith("killed by SIGKILL from outside the app")


def test_uploaded_checkpoints_are_capped_in_count_and_size(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\0" * 1000)
    monkeypatch.setattr(quota, "MAX_UPLOADED", 2)
    monkeypatch.setattr(quota, "MAX_UPLOADED_BYTES", 2500)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        quota.admit(root, [weights])
        (root / name / "model.safetensors").write_bytes(weights.read_bytes())
        quota.mark(root / name, f"owner-{name}")
    (root / "trained").mkdir()  # a trained checkpoint (no marker) does not count
    with pytest.raises(quota.QuotaError, match="already holds 2 uploaded checkpoints"):
        quota.admit(root, [weights])
    monkeypatch.setattr(quota, "MAX_UPLOADED", 5)
    with pytest.raises(quota.QuotaError, match="over the 0 MB limit"):
        quota.admit(root, [weights])
    assert quota.owner(root / "a") == "owner-a" and quota.owner(root / "trained") is None
    assert json.loads((root / "b" / quota.MARKER).read_text())["owner"] == "owner-b"


@pytest.mark.parametrize("env, expected", [
    ({}, True),  # python app.py on localhost
    ({"SPACE_ID": "me/geodemo"}, False),  # a Hugging Face Space serves many visitors
    ({"GRADIO_SERVER_NAME": "0.0.0.0"}, False),
    ({"SPACE_ID": "me/geodemo", "GEODEMO_SINGLE_USER": "1"}, True),
    ({"GEODEMO_SINGLE_USER": "0"}, False),
])
def test_single_user_mode_defaults(monkeypatch, env, expected):
    from geodemo.ui.common import session_owner
    from geodemo.ui.settings import Settings

    for name in ("SPACE_ID", "GRADIO_SERVER_NAME", "GEODEMO_SINGLE_USER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.single_user is expected
    request = type("Request", (), {"session_hash": "abc"})()
    assert session_owner(settings.single_user, request) == (None if expected else "abc")
