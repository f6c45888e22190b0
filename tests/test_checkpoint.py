"""Checkpoint directories: round trip, atomic save, and every refusal (without ever unpickling)."""

import json
import pickle

import pytest
import torch

from geodemo.cells import build_grid
from geodemo.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from geodemo.geo import load_points_csv
from geodemo.model import POINT_TASKS, ModelConfig, build_model

TINY = "test_efficientnet"


@pytest.fixture(scope="module")
def config(prior_csv) -> ModelConfig:
    lat, lon = load_points_csv(prior_csv)
    cells = build_grid(lat[:300], lon[:300], spacing_km=100.0)
    return ModelConfig.for_backbone(
        TINY, ["geocell", "region", "heading"], cells=cells.to_dict(), fusion="attention"
    )


@pytest.fixture
def saved(tmp_path, config):
    model = build_model(config).eval()
    return model, save_checkpoint(model, config, tmp_path / "ckpt")


@pytest.fixture(autouse=True)
def no_unpickling(monkeypatch):
    """Loading must never unpickle: any attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint load tried to unpickle")

    for target, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(target, name, refuse)


def one_sentence(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_round_trip_gives_identical_outputs(saved, config):
    model, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    loaded, loaded_config = load_checkpoint(path, expect_tasks=["geocell"])
    assert not loaded.training
    assert loaded_config.to_dict() == {**config.to_dict(), "versions": loaded_config.versions}
    assert set(loaded_config.versions) == {"torch", "timm", "geodemo"}
    views, mask = torch.randn(2, 4, 3, 64, 64), torch.tensor([[1, 1, 1, 1], [0, 1, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        a, b = model(views, mask), loaded(views, mask)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_save_replaces_atomically_and_keeps_other_files(saved, config):
    _, path = saved
    (path / "log.txt").write_text("keep me")
    save_checkpoint(build_model(config), config, path)
    assert (path / "log.txt").read_text() == "keep me"
    assert [p.name for p in path.parent.iterdir()] == ["ckpt"]  # no temporary directories left behind
    load_checkpoint(path)


def test_refuses_missing_and_incomplete(tmp_path, saved):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    _, path = saved
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json; a checkpoint is a directory") as err:
        load_checkpoint(path)
    one_sentence(err)


def test_refuses_pickles_without_unpickling(tmp_path, saved):
    model, _ = saved
    with open(tmp_path / "model.pt", "wb") as f:
        pickle.Pickler(f).dump({"not": "run"})  # a pickle, written without the patched torch.save path
    with pytest.raises(CheckpointError, match="refusing to unpickle .*model.pt.*convert it") as err:
        load_checkpoint(tmp_path / "model.pt")
    one_sentence(err)
    with pytest.raises(CheckpointError, match="refusing to unpickle .*model.pt"):
        load_checkpoint(tmp_path)  # a directory holding only a pickle
    (tmp_path / "last.ckpt").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(CheckpointError, match="refusing to unpickle .*last.ckpt"):
        load_checkpoint(tmp_path / "last.ckpt")


def test_refuses_corrupt_files(saved):
    _, path = saved
    (path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt or not a safetensors file") as err:
        load_checkpoint(path)
    one_sentence(err)
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON") as err:
        load_checkpoint(path)
    one_sentence(err)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"tasks": ["teleport"]}, "unknown task.*teleport.*geocell"),
        ({"backbone": "alexnet"}, "unknown backbone.*alexnet.*tf_efficientnet_lite0"),
        ({"mystery": 1}, "unknown config key.*mystery"),
    ],
)
def test_refuses_unknown_config_values(saved, change, message):
    _, path = saved
    d = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**d, **change}))
    with pytest.raises(CheckpointError, match=message) as err:
        read_config(path)
    one_sentence(err)


def test_refuses_weights_of_another_shape(saved, config):
    _, path = saved
    d = json.loads((path / "config.json").read_text())
    cells = {k: (v[:-1] if isinstance(v, list) else v) for k, v in d["cells"].items()}  # one cell fewer
    (path / "config.json").write_text(json.dumps({**d, "cells": cells}))
    with pytest.raises(CheckpointError, match="heads.geocell.fc.weight .*has shape") as err:
        load_checkpoint(path)
    one_sentence(err)


def test_refuses_a_checkpoint_of_another_task(tmp_path):
    config = ModelConfig.for_backbone(TINY, ["classify"], class_names=["cat", "dog"])
    path = save_checkpoint(build_model(config), config, tmp_path / "classifier")
    with pytest.raises(CheckpointError, match="this checkpoint is for task classify, not geocell") as err:
        load_checkpoint(path, expect_tasks=list(POINT_TASKS))
    one_sentence(err)
    load_checkpoint(path, expect_tasks=["classify"])


def test_list_checkpoints_scans_two_levels(tmp_path, saved, config):
    model, first = saved
    nested = save_checkpoint(model, config, tmp_path / "runs" / "fold0")
    (tmp_path / "runs" / "empty").mkdir()
    (tmp_path / ".hidden").mkdir()
    save_checkpoint(model, config, tmp_path / "a" / "b" / "too_deep")
    assert list_checkpoints(tmp_path, tmp_path / "missing") == [first, nested]
    assert list_checkpoints(first) == [first]
