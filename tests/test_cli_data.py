"""Bad data is named (location id and file) with exit 1 by every command; long commands show progress on
stderr while stdout holds only the result."""

import json
import shutil

import pandas as pd
import pytest
from conftest import copy_locations

from training.__main__ import main
from training.config import TrainConfig
from training.fit import train

TINY = ["--backbone", "test_efficientnet", "--pretrained", "none", "--image-size", "64", "--max-epochs", "1",
        "--batch-size", "4", "--no-progress-bar"]


@pytest.fixture(scope="module")
def tiny(sample_dir, tmp_path_factory):
    """The first 8 sample locations, copied."""
    return copy_locations(sample_dir, pd.read_csv(sample_dir / "data.csv").head(8),
                          tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def checkpoint(tiny, tmp_path_factory):
    cfg = TrainConfig(tasks=["geocell", "region"], backbone="test_efficientnet", weights="none",
                      image_size=64, max_epochs=1, batch_size=4, num_workers=0)
    return train(tiny, tmp_path_factory.mktemp("ckpt") / "c", cfg, enable_progress_bar=False,
                 cache_dir=tmp_path_factory.mktemp("cache"))


def _broken_copy(tiny, tmp_path, row: int = 2):
    """(copy of tiny with one truncated view, the location's id, the file)."""
    data = tmp_path / "broken"
    shutil.copytree(tiny, data)
    uuid = pd.read_csv(data / "data.csv")["uuid"].iloc[row]
    view = data / "images" / uuid / "90.jpg"
    view.write_bytes(view.read_bytes()[:300])
    return data, uuid, view


def _moved_copy(tiny, tmp_path, lat, lon, row: int = 3):
    data = tmp_path / "moved"
    shutil.copytree(tiny, data)
    frame = pd.read_csv(data / "data.csv")
    frame.loc[row, ["latitude", "longitude"]] = [lat, lon]
    frame.to_csv(data / "data.csv", index=False)
    return data, frame["uuid"].iloc[row]


def _commands(data, checkpoint, tmp_path):
    return {
        "train": ["train", "--task", "multi", "--data", str(data), "--out", str(tmp_path / "t"),
                  "--cache-dir", str(tmp_path / "cache"), *TINY],
        "train-images": ["train", "--task", "multi", "--data", str(data), "--out", str(tmp_path / "ti"),
                         "--no-cache", "--num-workers", "1", *TINY],
        "evaluate": ["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--out",
                     str(tmp_path / "e.json")],
        "predict": ["predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out",
                    str(tmp_path / "p.csv")],
    }


@pytest.mark.parametrize("command", ["train", "train-images", "evaluate", "predict"])
def test_unreadable_image_names_location_and_file(command, tiny, checkpoint, tmp_path, capsys):
    data, uuid, view = _broken_copy(tiny, tmp_path)
    assert main(_commands(data, checkpoint, tmp_path)[command]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: location") and uuid in err and str(view) in err, err
    assert not (tmp_path / "e.json").exists()


@pytest.mark.parametrize("lat, lon, words", [(91.5, 15.9, "not a valid coordinate"),
                                             (48.21, 16.37, "outside Croatia")])  # Vienna
@pytest.mark.parametrize("command", ["train", "evaluate", "predict"])
def test_impossible_coordinates_are_refused_by_every_command(command, lat, lon, words, tiny, checkpoint,
                                                             tmp_path, capsys):
    data, uuid = _moved_copy(tiny, tmp_path, lat, lon)
    assert main(_commands(data, checkpoint, tmp_path)[command]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: location") and uuid in err and words in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "e.json").exists()


def test_evaluate_and_predict_show_progress_on_stderr_and_one_json_on_stdout(tiny, checkpoint, tmp_path,
                                                                           capsys):
    assert main(_commands(tiny, checkpoint, tmp_path)["evaluate"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["count"] == 8  # stdout is exactly one JSON document
    assert "[geodemo] evaluating: 8 / 8 locations" in err
    assert main([*_commands(tiny, checkpoint, tmp_path)["predict"], "--progress-file",
                 str(tmp_path / "progress.json")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["predictions"] == 8 and "[geodemo] predicting: 8 / 8 locations" in err
    assert json.loads((tmp_path / "progress.json").read_text())["total_steps"] == 8


def test_validate_data_shows_progress_on_stderr_only(tiny, capsys):
    assert main(["validate-data", str(tiny)]) == 0
    out, err = capsys.readouterr()
    assert "[geodemo] checking locations: 8 / 8 locations" in err and "[geodemo]" not in out
    assert out.startswith(f"Dataset {tiny}: 8 locations")


def test_a_job_shows_its_stage_from_the_first_second(tmp_path):
    """Before the CLI has imported anything, the job's progress already says what is happening."""
    import sys
    import threading
    import time

    from geodemo.jobs import JobManager

    manager = JobManager(tmp_path / "jobs", start=False,
                         command=[sys.executable, "-c", "import time; time.sleep(2)"])
    job = manager.submit("evaluate", ["evaluate"], tmp_path / "e.json")
    worker = threading.Thread(target=manager.run_next)
    worker.start()
    deadline, stage = time.monotonic() + 1.5, ""
    while time.monotonic() < deadline and not stage:
        stage = manager.progress(job.id).get("stage", "")
        time.sleep(0.05)
    worker.join()
    assert stage == "starting Python"
