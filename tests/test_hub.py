"""The Hugging Face Hub, offline: checkpoints served from a folder laid out as the Hub's cache, the same
refusals as a local checkpoint, and `push`'s refusals. The upload itself needs the network: untested here."""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest

from geodemo.checkpoint import DEFAULT_CHECKPOINT, CheckpointError, read_config
from geodemo.data import view_paths
from geodemo.hub import HubError, hub_models, hub_reference
from geodemo.predict import Predictor
from training.card import write_card
from training.cliutil import UsageError
from training.push import check_pushable, push_checkpoint, resolve_hub_checkpoints

REPO = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
FILES = ("config.json", "model.safetensors", "retrieval.safetensors")


def hub_cache(root: Path, repo: str = "someone/geo-model", files=FILES, source=DEFAULT_CHECKPOINT) -> Path:
    """A Hub cache as snapshot_download leaves it: models--user--name/{refs/main, snapshots/<commit>/...}."""
    folder = root / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name in files:
        shutil.copyfile(source / name, snapshot / name)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture()
def offline_cache(tmp_path, monkeypatch):
    """The Hub cache under tmp_path, offline, as huggingface_hub reads it (constants are read at import)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def _views(sample_dir):
    from geodemo.data import read_locations

    uuid = read_locations(sample_dir)["uuid"].iloc[0]
    return {h: p for h, p in zip((0, 90, 180, 270), [view_paths(sample_dir, uuid).get(v) for v in range(4)])}


def test_from_pretrained_loads_a_hub_cache_snapshot_and_predicts(offline_cache, sample_dir):
    snapshot = hub_cache(offline_cache)
    views = _views(sample_dir)
    for name in ("someone/geo-model", "hf://someone/geo-model"):
        predictor = Predictor.from_pretrained(name)
        assert predictor.path == snapshot.resolve()
        got, want = predictor.predict(views), Predictor.load(DEFAULT_CHECKPOINT).predict(views)
        assert (got.latitude, got.longitude) == pytest.approx((want.latitude, want.longitude))
        assert np.allclose(got.cell_probabilities, want.cell_probabilities)
        assert got.neighbours == want.neighbours  # retrieval.safetensors came along
    local = Predictor.from_pretrained(DEFAULT_CHECKPOINT)  # a local folder
    assert local.path == DEFAULT_CHECKPOINT.resolve()


def test_hf_reference_works_wherever_a_checkpoint_path_does(offline_cache):
    """Predictor.load (the app's dropdowns) and every command's --checkpoint / train --init-from."""
    snapshot = hub_cache(offline_cache)
    assert Predictor.load("hf://someone/geo-model").path == snapshot.resolve()
    # argparse's type=Path folds "hf://" into "hf:/": still read as the Hub
    assert Predictor.load(Path("hf://someone/geo-model@main")).path == snapshot.resolve()
    args = argparse.Namespace(checkpoint=Path("hf://someone/geo-model"), init_from="hf://someone/geo-model")
    resolve_hub_checkpoints(args)
    assert args.checkpoint == args.init_from == snapshot
    assert read_config(args.checkpoint).cells == read_config(DEFAULT_CHECKPOINT).cells
    local = argparse.Namespace(checkpoint=DEFAULT_CHECKPOINT)
    resolve_hub_checkpoints(local)
    assert local.checkpoint == DEFAULT_CHECKPOINT
    with pytest.raises(UsageError, match="--update-card writes the card of a local checkpoint folder"):
        resolve_hub_checkpoints(argparse.Namespace(checkpoint="hf://someone/geo-model", update_card=True))
    with pytest.raises(UsageError, match="not in the local Hub cache"):
        resolve_hub_checkpoints(argparse.Namespace(checkpoint="hf://nobody/absent"))


def test_cli_evaluate_takes_an_hf_checkpoint(tmp_path, sample_dir):
    hub_cache(tmp_path / "hub")
    out = tmp_path / "m.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    done = subprocess.run([sys.executable, "-m", "training", "evaluate", "--checkpoint", "hf://someone/geo-model",
                           "--data", str(sample_dir), "--out", str(out), "--limit", "2"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["count"] == 2
    missing = subprocess.run([sys.executable, "-m", "training", "evaluate", "--checkpoint", "hf://nobody/none",
                              "--data", str(sample_dir), "--out", str(out)],
                             cwd=REPO, env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "not in the local Hub cache" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_tampered_config_in_a_snapshot_is_refused_like_a_local_one(offline_cache, tmp_path):
    snapshot = hub_cache(offline_cache)
    local = tmp_path / "local"
    shutil.copytree(snapshot, local)
    for folder in (snapshot, local):
        config = json.loads((folder / "config.json").read_text())
        config["image_size"] = 10**9  # would allocate a huge input
        (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as from_hub:
        Predictor.from_pretrained("someone/geo-model")
    with pytest.raises(CheckpointError) as from_folder:
        Predictor.from_pretrained(local)
    assert "image_size = 1000000000" in str(from_folder.value)
    assert str(from_hub.value).replace(str(snapshot), "X") == str(from_folder.value).replace(str(local), "X")


def test_a_pickle_only_repo_is_refused(offline_cache, tmp_path):
    snapshot = hub_cache(offline_cache, files=("config.json",))
    (snapshot / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        Predictor.from_pretrained("hf://someone/geo-model")


@pytest.mark.parametrize(
    ("name", "sentence"),
    [
        ("hf://nobody/absent", "not in the local Hub cache"),
        ("nobody/absent", "not in the local Hub cache"),
        ("hf://only-one-part", "does not name a Hub model"),
        ("no such thing at all", "neither a checkpoint folder nor a Hub model id"),
    ],
)
def test_unusable_hub_names_get_one_sentence(offline_cache, name, sentence):
    with pytest.raises(HubError, match=sentence) as err:
        Predictor.from_pretrained(name)
    assert "\n" not in str(err.value)


def test_a_repo_without_config_is_not_a_checkpoint(offline_cache):
    hub_cache(offline_cache, files=("model.safetensors",))
    with pytest.raises(HubError, match="holds no config.json"):
        Predictor.from_pretrained("someone/geo-model")


def test_hub_reference_parsing_and_the_apps_list(monkeypatch):
    assert hub_reference("hf://a-b/c.d@v1.0") == ("a-b/c.d", "v1.0")
    assert hub_reference("hf:/a/b") == ("a/b", None) and hub_reference("/models/a/b") is None
    monkeypatch.setenv("GEODEMO_HUB_MODELS", "hf://a/b, c/d  hf://a/b")
    assert hub_models() == ["hf://a/b", "hf://c/d"]
    from geodemo.ui.settings import Settings

    settings = Settings.from_env()
    assert ("hf://c/d", "hf://c/d") in settings.checkpoint_choices()
    from geodemo.jobform import JobError, evaluate_args

    data = str(REPO / "assets" / "examples")  # the Evaluate tab's job takes a listed Hub model as it is
    argv = evaluate_args("hf://c/d", data, [data], settings.checkpoints(), "m.json")
    assert argv[argv.index("--checkpoint") + 1] == "hf://c/d"
    with pytest.raises(JobError, match="not one of the available checkpoints"):
        evaluate_args("hf://not/listed", data, [data], settings.checkpoints(), "m.json")


# ----------------------------------------------------------------------------------------- push
@pytest.fixture()
def pushable(tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(DEFAULT_CHECKPOINT, ckpt, ignore=shutil.ignore_patterns("README.md"))
    (ckpt / "logs").mkdir()
    (ckpt / "logs" / "train.log").write_text("not for the Hub")
    (ckpt / "last.ckpt").write_bytes(b"a pickle")
    return ckpt


def test_push_refuses_a_checkpoint_without_a_card(pushable):
    with pytest.raises(UsageError, match=r"has no model card \(README.md\); write one with"):
        check_pushable(pushable, "someone/geo-model")


def test_push_refuses_bad_repo_ids_broken_checkpoints_and_offline(pushable, tmp_path, monkeypatch):
    write_card(pushable)
    with pytest.raises(UsageError, match="is not a Hub repo id"):
        check_pushable(pushable, "not a repo")
    broken = tmp_path / "broken"
    shutil.copytree(pushable, broken)
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt or not a safetensors file"):
        check_pushable(broken, "someone/geo-model")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UsageError, match="HF_HUB_OFFLINE is set"):
        push_checkpoint(pushable, "someone/geo-model")


def test_push_uploads_only_the_checkpoint_files(pushable, monkeypatch):
    """What push hands HfApi (the network call itself is replaced: offline tests never upload)."""
    write_card(pushable)
    calls = {}

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls["create"] = (repo_id, kwargs)

        def upload_folder(self, **kwargs):
            calls["upload"] = kwargs
            return type("Commit", (), {"commit_url": "https://huggingface.co/someone/geo-model/commit/1"})()

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    found = push_checkpoint(pushable, "someone/geo-model", private=True)
    assert calls["create"] == ("someone/geo-model", {"repo_type": "model", "private": True, "exist_ok": True})
    assert sorted(calls["upload"]["allow_patterns"]) == sorted([*FILES, "README.md"])
    assert calls["upload"]["folder_path"] == str(pushable)
    assert found["files"] == calls["upload"]["allow_patterns"]
