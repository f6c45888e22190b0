"""LabelStore: atomic appends, refusals that write nothing, undo, and two concurrent writers."""

import multiprocessing
import uuid

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from geodemo.data import view_paths
from geodemo.labels import LabelError, LabelStore
from geodemo.validate import validate_dataset

ZAGREB = (45.8150, 15.9819)
VIENNA = (48.2082, 16.3738)
TINY = np.full((40, 40, 3), 120, np.uint8)  # above the 32-pixel minimum side


@pytest.fixture(scope="module")
def real_views(sample_dir):
    folder = next((sample_dir / "images").iterdir())
    return {h: folder / f"{h}.jpg" for h in (0, 90, 180, 270)}


def _nothing_written(root):
    return not (root / "data.csv").exists() and not any((root / "images").iterdir())


def test_add_count_undo(tmp_path, real_views):
    store = LabelStore(tmp_path / "labels")
    assert store.count() == 0 and store.undo_last() is None and len(store.frame()) == 0
    views = {0: real_views[0], 90: real_views[90].read_bytes(), 180: None, 270: Image.open(real_views[270])}
    first = store.add(views, *ZAGREB, heading=10)
    assert first.count == 1 and first.root == str(tmp_path / "labels")
    assert sorted(view_paths(store.root, first.uuid)) == [0, 1, 3]
    second = store.add({"0": TINY}, "43.5081", "16.4402")  # Split, coordinates as text
    assert store.count() == 2
    frame = store.frame()
    assert list(frame["uuid"]) == [first.uuid, second.uuid]
    assert frame["county"].tolist() == ["HR-21", "HR-17"] and frame["heading"][0] == 10.0
    assert np.isnan(frame["heading"][1]) and frame["latitude"][0] == ZAGREB[0]
    assert store.undo_last() == second.uuid and store.count() == 1
    assert not (store.root / "images" / second.uuid).exists()


@pytest.mark.parametrize("views, lat, lon, message", [
    ({0: TINY}, *VIENNA, r"is 18\d km outside Croatia; click inside the country"),
    ({0: TINY}, "north", 16.0, "latitude 'north' is not a number"),
    ({0: None}, *ZAGREB, "No views"),
    ({0: TINY, 90: b"not an image"}, *ZAGREB, "90° view is not a readable image"),
    ({45: TINY}, *ZAGREB, "not a heading"),
])
def test_refusals_write_nothing(tmp_path, views, lat, lon, message):
    store = LabelStore(tmp_path)
    with pytest.raises(LabelError, match=message):
        store.add(views, lat, lon)
    assert _nothing_written(tmp_path)


def _add_many(root, n):
    store = LabelStore(root)
    for _ in range(n):
        store.add({0: TINY}, *ZAGREB)


def test_concurrent_writers_never_lose_a_row(tmp_path):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_add_many, args=(tmp_path, 4)) for _ in range(2)]
    for worker in workers:
        worker.start()
    _add_many(tmp_path, 2)
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    frame = pd.read_csv(tmp_path / "data.csv", dtype=str)
    assert len(frame) == 10 and frame["uuid"].is_unique
    assert all((tmp_path / "images" / u / "0.jpg").exists() for u in frame["uuid"])


def test_labelled_set_passes_validation(tmp_path, real_views):
    store = LabelStore(tmp_path)
    store.add(real_views, *ZAGREB)
    store.add({0: TINY, 180: TINY}, 43.5081, 16.4402)
    (tmp_path / "images" / str(uuid.uuid4())).mkdir()  # what a kill between images and CSV leaves behind
    report = validate_dataset(tmp_path)
    assert report.ok, report.format()
    assert (report.n_locations, report.n_views) == (2, 6) and len(report.warnings) == 1


def test_decimal_commas_and_source_uuid(tmp_path, real_views):
    """"45,8150" is 45.815 degrees (not 458150); a folder label keeps its source id (as uuid when free)."""
    store = LabelStore(tmp_path / "labels")
    source = real_views[0].parent.name
    first = store.add({0: real_views[0]}, "45,8150", "15,9819", source_uuid=source)
    again = store.add({0: real_views[0]}, "45.8150", "15.9819", source_uuid=source)  # labelled twice
    plain = store.add({0: TINY}, *ZAGREB)
    frame = store.frame()
    assert frame.latitude.tolist() == [45.815] * 3 and frame.longitude.tolist() == [15.9819] * 3
    assert first.uuid == source and again.uuid not in (source, plain.uuid)
    assert frame.source_uuid.tolist() == [source, source, ""]
    with pytest.raises(LabelError, match="not a number"):
        store.add({0: TINY}, "45,81,50", "15.98")
    with pytest.raises(LabelError, match="safe folder name"):
        store.add({0: TINY}, *ZAGREB, source_uuid="../evil")
    assert store.count() == 3
