"""geodemo.progress: the schema of progress.json and its atomic writer (round trip, atomicity, tolerance)."""

import json
import subprocess
import sys
import threading

import pytest

from geodemo.progress import Progress, write_json_atomic, write_progress


def test_round_trip_through_the_file(tmp_path):
    path = tmp_path / "jobs" / "progress.json"  # the folder is made on first write
    state = Progress(stage="train", epoch=2, max_epochs=5, step=30, total_steps=75, fraction=0.4,
                     metrics={"train/loss": 1.25, "val/mean_km": 88.5},
                     history=[{"epoch": 1, "train/loss": 2.0, "val/mean_km": 120.0}])
    state.write(path)
    assert Progress.read(path) == state
    assert json.loads(path.read_text()) == state.to_dict()  # plain JSON, every field named
    write_progress(path, stage="done", fraction=1.0, done=True, error="cancelled")
    again = Progress.read(path)
    assert (again.stage, again.done, again.error) == ("done", True, "cancelled")
    assert (again.epoch, again.history) == (0, [])  # a write is the whole state, never a patch
    write_progress(None, stage="ignored")  # no progress file asked for: nothing to do, no error


def test_missing_unknown_and_wrong_fields_take_the_defaults(tmp_path):
    old = Progress.from_dict({"done": True, "error": None})  # e.g. an error write of an older CLI
    assert old == Progress(done=True)
    newer = Progress.from_dict({"stage": "starting Python", "eta_s": 12, "epoch": 3})  # a newer writer's key
    assert newer.stage == "starting Python" and newer.epoch == 3 and not hasattr(newer, "eta_s")
    wrong = Progress.from_dict({"epoch": "three", "fraction": "half", "done": "yes", "metrics": [],
                                "step": 4.0})
    assert (wrong.epoch, wrong.fraction, wrong.done, wrong.metrics, wrong.step) == (0, 0.0, False, {}, 4)
    assert Progress.from_dict(["not", "an", "object"]) == Progress()
    assert Progress.read(tmp_path / "never-written.json") == Progress()
    (tmp_path / "broken.json").write_text('{"stage": "tra')
    assert Progress.read(tmp_path / "broken.json") == Progress()


def test_a_reader_holding_the_old_file_never_sees_the_new_one_half_written(tmp_path):
    path = tmp_path / "progress.json"
    write_json_atomic(path, {"n": 1, "pad": "x" * 100_000})
    with open(path) as held:
        write_json_atomic(path, {"n": 2, "pad": "y" * 100_000})  # replaces the file; never truncates it
        assert json.loads(held.read())["n"] == 1
    assert json.loads(path.read_text())["n"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]  # no temp file left behind


def test_concurrent_reads_always_parse(tmp_path):
    """A reader polling while the writer rewrites a large file always gets a whole, valid state."""
    path = tmp_path / "progress.json"
    history = [{"epoch": e, "train/loss": 1.0 / e, "val/mean_km": 100.0} for e in range(1, 3000)]
    write_progress(path, stage="train", history=history)
    stop, seen, errors = threading.Event(), [], []

    def read():
        while not stop.is_set():
            try:
                seen.append(len(json.loads(path.read_text())["history"]))
            except (ValueError, OSError) as err:  # a half-written or missing file
                errors.append(err)

    reader = threading.Thread(target=read)
    reader.start()
    for step in range(150):
        write_progress(path, stage="train", step=step, history=history)
    stop.set()
    reader.join()
    assert not errors and seen and set(seen) == {len(history)}


@pytest.mark.parametrize("module", ["geodemo.progress", "geodemo.jobs"])
def test_reading_progress_loads_neither_torch_nor_lightning(module):
    code = f"import sys, {module}; print(sorted({{'torch', 'lightning'}} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
