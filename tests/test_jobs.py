"""JobManager: validation, FIFO queue, persistence across restarts, cancel (with a fake training CLI)."""

import json
import sys
import time

import pytest

from geodemo.jobform import JobError, evaluate_args, train_args
from geodemo.jobs import JobManager

# A stand-in for `python -m training`: logs its args, writes progress, sleeps if asked, exits with a code.
FAKE_CLI = r"""
import json, os, sys, time
args = sys.argv[1:]
progress = args[args.index("--progress-file") + 1]
print("started", " ".join(args[:2]), flush=True)
with open(os.path.join(os.path.dirname(progress), "order.txt"), "a") as f:
    f.write(f"{time.monotonic()}\n")
sleep = float(args[args.index("--sleep") + 1]) if "--sleep" in args else 0
time.sleep(sleep)
with open(progress, "w") as f:
    json.dump({"stage": "train", "fraction": 1.0, "done": True, "error": None, "history": []}, f)
sys.exit(int(args[args.index("--exit") + 1]) if "--exit" in args else 0)
"""


@pytest.fixture
def fake_cli(tmp_path):
    path = tmp_path / "fake_training.py"
    path.write_text(FAKE_CLI)
    return [sys.executable, str(path)]


def test_queue_runs_fifo_one_at_a_time(tmp_path, fake_cli):
    manager = JobManager(tmp_path / "jobs", command=fake_cli)
    try:
        jobs = [manager.submit("train", ["train", str(i), "--sleep", "0.3"], out="x") for i in range(3)]
        done = [manager.wait(j.id, timeout=30) for j in jobs]
    finally:
        manager.shutdown()
    assert [j.status for j in done] == ["done"] * 3
    # each started after the previous finished
    for earlier, later in zip(done, done[1:]):
        assert earlier.finished <= later.started
    assert "started train 0" in manager.log_tail(jobs[0].id)
    assert manager.progress(jobs[0].id)["done"] is True


def test_failed_job_keeps_its_message(tmp_path, fake_cli):
    manager = JobManager(tmp_path / "jobs", command=fake_cli)
    try:
        job = manager.wait(manager.submit("train", ["train", "x", "--exit", "3"], out="x").id, timeout=30)
    finally:
        manager.shutdown()
    assert job.status == "failed" and job.returncode == 3


def test_cancel_running_and_queued(tmp_path, fake_cli):
    manager = JobManager(tmp_path / "jobs", command=fake_cli, grace_s=1.0)
    try:
        running = manager.submit("train", ["train", "a", "--sleep", "60"], out="x")
        queued = manager.submit("train", ["train", "b"], out="x")
        deadline = time.monotonic() + 20
        while manager.get(running.id).status != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert manager.cancel(queued.id).status == "cancelled"
        manager.cancel(running.id)
        assert manager.wait(running.id, timeout=20).status == "cancelled"
    finally:
        manager.shutdown()
    assert manager.get(queued.id).started is None  # never ran


def test_records_survive_a_restart_and_lost_runs_become_interrupted(tmp_path, fake_cli):
    root = tmp_path / "jobs"
    first = JobManager(root, command=fake_cli, start=False)
    queued = first.submit("evaluate", ["evaluate", "x"], out="x", params={"dataset": "d"})
    ghost = first.submit("train", ["train", "y"], out="y")
    record = json.loads((root / ghost.id / "job.json").read_text())
    record.update(status="running", pid=2**22 + 12345)  # a pid that is not a live training process
    (root / ghost.id / "job.json").write_text(json.dumps(record))

    second = JobManager(root, command=fake_cli, start=False)
    assert second.get(ghost.id).status == "failed"
    assert "interrupted" in second.get(ghost.id).message
    assert second.get(queued.id).status == "queued" and second.get(queued.id).params == {"dataset": "d"}
    assert second.run_next() and second.get(queued.id).status == "done"


def test_an_interrupted_training_job_resumes_with_the_same_arguments(tmp_path, fake_cli):
    root = tmp_path / "jobs"
    first = JobManager(root, command=fake_cli, start=False)
    args = ["train", "--task", "multi", "--out", str(tmp_path / "ckpt")]
    lost = first.submit("train", args, out=tmp_path / "ckpt", title="run1", params={"name": "run1"})
    record = json.loads((root / lost.id / "job.json").read_text())
    record.update(status="running", pid=2**22 + 12345)  # the app died while it was training
    (root / lost.id / "job.json").write_text(json.dumps(record))

    second = JobManager(root, command=fake_cli, start=False)
    assert second.get(lost.id).status == "failed"
    again = second.resume(lost.id)
    assert again.id != lost.id and again.args == args and again.out == lost.out
    assert again.params == {"name": "run1", "resumed_from": lost.id} and again.title == "run1 (resumed)"
    with pytest.raises(JobError, match="already trains"):
        second.resume(lost.id)  # no second copy while one is queued
    assert second.run_next() and second.get(again.id).status == "done"
    assert "started train --task" in second.log_tail(again.id)
    with pytest.raises(JobError, match="done train job"):
        second.resume(again.id)
    evaluation = second.submit("evaluate", ["evaluate", "x"], out="x")
    second.cancel(evaluation.id)
    with pytest.raises(JobError, match="cancelled evaluate job"):
        second.resume(evaluation.id)


def test_train_args_are_validated(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "data.csv").write_text("uuid,latitude,longitude\n")
    good = {
        "task": "multi",
        "backbone": "b",
        "dataset": str(data),
        "name": "run1",
        "max_epochs": 2,
        "image_size": 64,
        "batch_size": 4,
        "lr": 1e-3,
        "unfreeze_epoch": -1,
        "accelerator": "cpu",
        "devices": 1,
        "limit_train_batches": 2,
    }
    args, out = train_args(good, [data], tmp_path / "ckpts", backbones=("b",))
    assert args[:3] == ["train", "--task", "multi"] and out == (tmp_path / "ckpts" / "run1").resolve()
    assert "--limit-train-batches" in args and all(isinstance(a, str) for a in args)
    bad = [
        {"task": "rm -rf /"},
        {"backbone": "evil"},
        {"dataset": "/etc"},
        {"name": "../up"},
        {"name": "a b; ls"},
        {"max_epochs": 0},
        {"max_epochs": "2; ls"},
        {"batch_size": 2.5},
        {"lr": "nan"},
        {"lr": 5},
        {"accelerator": "tpu"},
        {"image_size": 10_000},
    ]
    for change in bad:
        with pytest.raises(JobError):
            train_args({**good, **change}, [data], tmp_path / "ckpts", backbones=("b",))
    (tmp_path / "ckpts" / "run1").mkdir(parents=True)
    with pytest.raises(JobError, match="already exists"):
        train_args(good, [data], tmp_path / "ckpts", backbones=("b",))


def test_evaluate_args_only_known_checkpoints_and_roots(tmp_path):
    data, ckpt = tmp_path / "data", tmp_path / "ckpt"
    data.mkdir(), ckpt.mkdir()
    args = evaluate_args(ckpt, data, [data], [ckpt], tmp_path / "e.json", limit=5)
    assert args[0] == "evaluate" and args[-2:] == ["--limit", "5"]
    with pytest.raises(JobError):
        evaluate_args("/etc", data, [data], [ckpt], tmp_path / "e.json")
    with pytest.raises(JobError):
        evaluate_args(ckpt, "/", [data], [ckpt], tmp_path / "e.json")
    with pytest.raises(JobError):
        JobManager(tmp_path / "jobs", start=False).get("../../etc")


def test_a_job_that_finished_while_the_app_was_down_is_done(tmp_path, fake_cli):
    """Its own outputs (progress done, checkpoint complete) say done; without them it was interrupted."""
    root, ckpt = tmp_path / "jobs", tmp_path / "ckpt"
    first = JobManager(root, command=fake_cli, start=False)
    finished = first.submit("train", ["train", "a"], out=ckpt)
    lost = first.submit("train", ["train", "b"], out=tmp_path / "other")
    for job in (finished, lost):
        record = json.loads((root / job.id / "job.json").read_text())
        record.update(status="running", pid=2**22 + 12345)
        (root / job.id / "job.json").write_text(json.dumps(record))
        (root / job.id / "progress.json").write_text(json.dumps({"done": True, "error": None}))
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    (ckpt / "model.safetensors").write_bytes(b"x")
    second = JobManager(root, command=fake_cli, start=False)
    done = second.get(finished.id)
    assert done.status == "done" and "while the app was down" in done.message
    assert second.get(lost.id).status == "failed" and "interrupted" in second.get(lost.id).message
    with pytest.raises(JobError, match="done train job"):
        second.resume(finished.id)


def test_names_are_reserved_on_submit_and_freed_by_delete(tmp_path, fake_cli):
    manager = JobManager(tmp_path / "jobs", command=fake_cli, start=False)
    out = tmp_path / "ckpts" / "run1"
    job = manager.submit("train", ["train", "x"], out=out, reserve=True)
    assert out.is_dir()
    with pytest.raises(JobError, match="already exists"):
        manager.submit("train", ["train", "y"], out=out, reserve=True)
    with pytest.raises(JobError, match="cancelled or failed"):
        manager.delete(job.id)  # still queued
    manager.cancel(job.id)
    (out / "config.json").write_text("{}")  # a cancelled run may have saved the epochs it finished
    (out / "model.safetensors").write_bytes(b"x")
    manager.delete(job.id)
    assert not out.exists() and job.id not in [j.id for j in manager.list()]
    assert manager.submit("train", ["train", "z"], out=out, reserve=True).status == "queued"


def test_the_curated_log_keeps_progress_lines_only(tmp_path):
    from geodemo.progress import PROGRESS_PREFIX

    manager = JobManager(tmp_path / "jobs", start=False)
    job = manager.submit("train", ["train"], out="x")
    manager.log_file(job.id).write_text(
        "💡 Tip: For seamless cloud logging ...\n"
        f"{PROGRESS_PREFIX}caching embeddings: 4 / 8\n"
        "/x/lightning/fit_loop.py:538: Found 90 module(s) in eval mode ...\n"
        f"{PROGRESS_PREFIX}epoch 1 / 2 done · val mean 90.1 km\n"
        "error: the dataset has no locations\n"
    )
    assert manager.curated_log(job.id).splitlines() == [
        "caching embeddings: 4 / 8",
        "epoch 1 / 2 done · val mean 90.1 km",
        "error: the dataset has no locations",
    ]
    assert "Tip" in manager.log_file(job.id).read_text()  # the full log keeps everything


def test_field_errors_name_the_field(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "data.csv").write_text("uuid,latitude,longitude\n")
    params = {"task": "multi", "backbone": "b", "datasets": [str(data)], "name": "r", "max_epochs": 0,
              "image_size": 0, "batch_size": 4, "lr": 1e-3, "unfreeze_epoch": -1, "accelerator": "cpu",
              "devices": 1}
    with pytest.raises(JobError, match="^Epochs must be"):
        train_args(params, [data], tmp_path / "ckpts", backbones=("b",))
    with pytest.raises(JobError, match="^Batch size must be"):
        train_args({**params, "max_epochs": 1, "batch_size": 0}, [data], tmp_path / "ckpts", backbones=("b",))
    with pytest.raises(JobError, match="^Datasets: tick"):
        train_args({**params, "max_epochs": 1, "datasets": []}, [data], tmp_path / "ckpts", backbones=("b",))
    two = tmp_path / "two"
    two.mkdir()
    with pytest.raises(JobError, match="'two' has no data.csv yet"):
        train_args({**params, "max_epochs": 1, "datasets": [str(data), str(two)]}, [data, two],
                   tmp_path / "ckpts", backbones=("b",))
    (two / "data.csv").write_text("uuid,latitude,longitude\n")
    args, _ = train_args({**params, "max_epochs": 1, "datasets": [str(data), str(two)]}, [data, two],
                         tmp_path / "ckpts", backbones=("b",))
    given = [args[i + 1] for i, a in enumerate(args) if a == "--data"]
    assert given == [str(data.resolve()), str(two.resolve())]


def test_the_train_tab_job_view_offers_the_full_log_and_a_plain_status(tmp_path):
    """Curated lines on the page, the whole log as a download; "done", never "done · done"."""
    from pathlib import Path

    from geodemo.progress import PROGRESS_PREFIX
    from geodemo.ui.train_tab import job_view
    from geodemo.ui.widgets import progress_html

    manager = JobManager(tmp_path / "jobs", start=False)
    job = manager.submit("train", ["train"], out="x")
    full = f"💡 Tip: noise\n{PROGRESS_PREFIX}epoch 1 / 1 done · val mean 90.1 km\n"
    manager.log_file(job.id).write_text(full)
    status, _, curated, _, log_file, key = job_view(manager, job.id)
    assert status == "queued" and curated == "epoch 1 / 1 done · val mean 90.1 km"
    assert Path(log_file).read_text() == full  # the download holds everything, Lightning's noise included
    again = job_view(manager, job.id, key)  # nothing changed: curves and log file are not re-sent
    assert again[3] == {"__type__": "update"} and again[4] == {"__type__": "update"} and again[-1] == key
    done = progress_html({"stage": "done", "fraction": 1.0}, "done")
    assert "done · 100%" in done and "done · done" not in done
    cache = progress_html({"stage": "cache", "step": 40, "total_steps": 400, "fraction": 0.02}, "running")
    assert "caching embeddings 40 / 400" in cache
    trained = progress_html({"stage": "train", "epoch": 0, "max_epochs": 2,
                             "metrics": {"val/loss_geocell": 3.32, "val/mean_km": 134.2}}, "running")
    assert "validation geocell loss 3.32" in trained and "validation mean error 134.2 km" in trained
    assert "val/" not in trained  # human names, never the raw logged keys


def test_a_finished_training_job_shows_its_km_and_only_trainable_datasets_are_offered(tmp_path):
    """The jobs table's result column: the mean km (and baseline) of a done job; nothing for others."""
    import json
    from types import SimpleNamespace

    from geodemo.ui.train_tab import JOB_COLUMNS, job_result, training_datasets

    manager = JobManager(tmp_path / "jobs", start=False)
    job = manager.submit("train", ["train"], out=str(tmp_path / "ckpt"))
    history = [{"epoch": 0, "train/loss": 3.0, "val/mean_km": 150.0}, {"epoch": 1, "val/mean_km": 120.04}]
    (manager.path(job.id) / "progress.json").write_text(json.dumps({"history": history}))
    assert job_result(manager, job) == ""  # queued: no result yet
    done = SimpleNamespace(id=job.id, status="done", out=str(tmp_path / "ckpt"))
    assert job_result(manager, done).startswith("mean 120.0 km")
    (tmp_path / "ckpt2").mkdir()
    report = {"accuracy": {"mean_km": 88.0, "baseline_mean_km": 140.0}, "warnings": ["Collapsed."]}
    config = {"metrics": {"mean_km": 90.0, "report": report}}  # the report's km wins (training.report)
    (tmp_path / "ckpt2" / "config.json").write_text(json.dumps(config))
    other = SimpleNamespace(id="other", status="done", out=str(tmp_path / "ckpt2"))
    assert job_result(manager, other) == "mean 88.0 km · baseline 140.0 km · ⚠ Collapsed. → Evaluate"
    assert JOB_COLUMNS[-1] == "id" and "result" in JOB_COLUMNS

    labelled, bare = tmp_path / "labelled", tmp_path / "bare"
    for folder in (labelled, bare):
        (folder / "images").mkdir(parents=True)
    (labelled / "data.csv").write_text("uuid,latitude,longitude\n")
    settings = SimpleNamespace(dataset_choices=lambda: [("labelled", str(labelled)), ("bare", str(bare))])
    assert training_datasets(settings) == [("labelled", str(labelled))]  # no data.csv: not trainable
