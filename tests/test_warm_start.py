"""A warm training start: one walk over the dataset, no file read twice, keys in one go, no per-step sync."""

import hashlib
import json
import os
import shutil
import traceback

import pytest
import torch

import geodemo.data as gd
from geodemo.data import ImageScan, read_locations, view_paths
from training import cache as emb
from training.sources import data_fingerprint


@pytest.fixture()
def data(sample_copy):
    """Six real locations, copied (files get their own mtimes)."""
    return sample_copy(6)


def _keys(data, root):
    """(keys, files hashed) of every location, as a new training run computes them."""
    hashes = emb.FileHashes(root)
    keys = emb.location_keys(
        data, read_locations(data), "t", "w", 64, (0.5,) * 3, (0.5,) * 3, hashes, ImageScan(data)
    )
    return keys, hashes.hashed


def _walk_fingerprint(root) -> str:
    """The fingerprint's definition: data.csv bytes, then 'relative/path:size' of every file under images/."""
    digest = hashlib.sha256((root / "data.csv").read_bytes())
    files = []
    for top, _, names in os.walk(root / "images"):
        for name in names:
            path = os.path.join(top, name)
            if os.path.isfile(path):
                files.append((os.path.relpath(path, root / "images").split(os.sep), os.stat(path).st_size))
    for parts, size in sorted(files):
        digest.update(f"{'/'.join(parts)}:{size}\n".encode())
    return digest.hexdigest()


def test_the_scan_finds_what_view_paths_finds_and_fingerprints_as_before(data, tmp_path):
    ids = read_locations(data)["uuid"].tolist()
    folder = data / "images"
    (folder / ids[0] / "0.jpg").rename(folder / ids[0] / "0.JPG")  # any case
    shutil.copy(folder / ids[0] / "90.jpg", folder / ids[0] / "90.png")  # .jpg wins over .png
    (folder / ids[1] / "90.jpg").unlink()  # a missing view
    outside = tmp_path / "outside.jpg"
    shutil.copy(folder / ids[2] / "180.jpg", outside)
    (folder / ids[2] / "180.jpg").unlink()
    (folder / ids[2] / "180.jpg").symlink_to(outside)  # a link out of the dataset: never followed
    (folder / ids[3] / "270.jpg").unlink()
    (folder / ids[3] / "270.jpg").symlink_to(folder / ids[4] / "270.jpg")  # a link inside it: fine
    (folder / ids[5] / "notes.txt").write_text("not a view")
    scan = ImageScan(data)
    for uid in ids:
        expected = {v: os.path.abspath(p) for v, p in view_paths(data, uid).items()}
        assert {v: f[0] for v, f in scan.views(uid).items()} == expected
    assert sorted(scan.views(ids[1])) == [0, 2, 3] and sorted(scan.views(ids[2])) == [0, 1, 3]
    assert data_fingerprint(data) == data_fingerprint(data, scan) == _walk_fingerprint(data)
    before = data_fingerprint(data)
    (folder / ids[5] / "notes.txt").write_text("a longer note")
    assert data_fingerprint(data) != before


def test_a_warm_run_hashes_no_file_and_reads_its_keys_in_one_go(data, tmp_path, monkeypatch):
    keys, hashed = _keys(data, tmp_path / "c")
    assert hashed == 24  # 6 locations x 4 views, all new

    def boom(*args):
        raise AssertionError("a file was hashed or looked up one by one although nothing changed")

    monkeypatch.setattr(emb, "file_sha1", boom)
    monkeypatch.setattr(emb.FileHashes, "sha1s", boom)  # the keyset answers without the per-file index
    assert _keys(data, tmp_path / "c") == (keys, 0)


def test_a_changed_or_touched_file_is_hashed_again(data, tmp_path):
    keys, _ = _keys(data, tmp_path / "c")
    uid = read_locations(data)["uuid"][2]
    view = data / "images" / uid / "90.jpg"
    view.write_bytes(view.read_bytes() + b"\0")  # same path, new content: a new key
    changed, hashed = _keys(data, tmp_path / "c")
    assert hashed == 1 and changed[2][1] != keys[2][1]
    assert changed[2][0] == keys[2][0] and changed[:2] == keys[:2] and changed[3:] == keys[3:]
    st = os.stat(view)
    os.utime(view, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: read again, same content
    assert _keys(data, tmp_path / "c") == (changed, 1)
    assert _keys(data, tmp_path / "c") == (changed, 0)


def test_a_training_run_walks_the_data_once_and_does_not_read_the_loss_every_step(
    data, tmp_path, monkeypatch
):
    from training import fit
    from training.config import TrainConfig, tasks_for

    walks = []
    walk_files = gd.walk_files
    monkeypatch.setattr(gd, "walk_files", lambda folder: walks.append(folder) or walk_files(folder))

    reads = {"n": 0, "on": False, "steps": 0}  # tensor -> Python number: a GPU -> CPU sync on a GPU
    for name in ("item", "__float__", "__int__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            # not the optimiser's step counter or a loader's seed: CPU tensors on every device (no sync)
            caller = traceback.extract_stack(limit=2)[0].filename
            if reads["on"] and "torch/optim/" not in caller and "torch/utils/data/" not in caller:
                reads["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)

    def batch_start(self, trainer, pl_module, batch, batch_idx):  # from the 2nd step on: whole steps
        reads["on"], reads["steps"] = batch_idx >= 1, reads["steps"] + (batch_idx >= 1)

    def steps_end(self, *args):  # validation and the epoch's end read their metrics once: not counted
        reads["on"] = False

    batch_end = fit.ProgressFile.on_train_batch_end

    def progress_batch_end(self, *args):  # the progress file reads its mean loss on its own schedule
        on, reads["on"] = reads["on"], False
        batch_end(self, *args)
        reads["on"] = on

    monkeypatch.setattr(fit.ProgressFile, "on_train_batch_start", batch_start, raising=False)
    monkeypatch.setattr(fit.ProgressFile, "on_validation_start", steps_end)
    monkeypatch.setattr(fit.ProgressFile, "on_train_batch_end", progress_batch_end)
    cfg = TrainConfig(
        tasks=tasks_for("multi"), backbone="test_efficientnet", weights="none", image_size=64, max_epochs=1,
        batch_size=1, num_workers=0, val_fraction=0.2,  # a split: validation ends the counted steps
    )
    out = fit.train(data, tmp_path / "ckpt", cfg, limit_val_batches=1, enable_progress_bar=False,
                    progress_file=tmp_path / "progress.json",
                    cache_dir=tmp_path / "c")
    assert len(walks) == 1  # one walk gave the fingerprint and every view's size and mtime
    assert json.loads((out / "config.json").read_text())["data_fingerprint"] == data_fingerprint(data)
    assert reads["steps"] >= 3
    assert reads["n"] <= 1, f"{reads['n']} tensor reads in {reads['steps']} steps (one logger write allowed)"
    assert json.loads((tmp_path / "progress.json").read_text())["history"][0]["train/loss"] > 0
