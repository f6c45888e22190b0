"""Train tab: a validated form that queues `python -m training train ...`; the jobs table, progress, curves.

The jobs table is filled on page load and on every tick, so a running job can always be found, followed
(click its row) and cancelled; a new submission never switches the view away from a running job.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from html import escape
from pathlib import Path

import gradio as gr
import pandas as pd

from geodemo import maps
from geodemo.backbones import BACKBONES
from geodemo.jobs import ACCELERATORS, TRAIN_TASKS, JobError, JobManager, max_devices, train_args
from geodemo.ui.common import user_errors
from geodemo.ui.settings import Settings

TASK_HELP = {
    "multi": "multi (geocell + county + heading)",
    "geocell": "geocell (classify a grid cell)",
    "coords": "coords (regress x/y)",
    "region": "region (county)",
    "heading": "heading (camera direction)",
}
JOB_COLUMNS = ["status", "title", "started", "duration", "message", "id"]  # status first: visible on a phone
ACTIVE = ("queued", "running")
TICK_S = 2.0  # how often an open Train tab refreshes the table and the followed job
STAGE_TEXT = {"prepare": "preparing", "cache": "caching embeddings", "train": "training",
              "validate": "validating", "evaluate": "evaluating"}


def user_backbones(include_test: bool = False) -> list[str]:
    """Backbones offered in the form: the registry without the internal test ones (unless asked)."""
    return [name for name in BACKBONES if include_test or not name.startswith("test_")]


def jobs_frame(manager: JobManager, kind: str | None = None) -> pd.DataFrame:
    """The job list (newest first) as a table."""
    rows = []
    for job in reversed(manager.list()):
        if kind and job.kind != kind:
            continue
        end = job.finished or (time.time() if job.status == "running" else None)
        duration = f"{end - job.started:.0f} s" if job.started and end else ""
        started = time.strftime("%H:%M:%S", time.localtime(job.started)) if job.started else ""
        rows.append([job.status, job.title, started, duration, job.message, job.id])
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


def progress_html(progress: dict, status: str) -> str:
    """A progress bar over the whole job with its stage (cache fill, epoch and step, validation)."""
    fraction = float(progress.get("fraction") or (1.0 if status == "done" else 0.0))
    parts = [escape(status)]
    stage = str(progress.get("stage") or "")
    if status in ACTIVE and stage in STAGE_TEXT:
        text = STAGE_TEXT[stage]
        if stage in ("cache", "evaluate") and progress.get("total_steps"):
            text += f" {progress.get('step', 0)} / {progress['total_steps']}"
        parts.append(text)
        if stage in ("train", "validate") and progress.get("max_epochs"):
            parts.append(f"epoch {int(progress.get('epoch') or 0) + 1} / {progress['max_epochs']}")
            if progress.get("total_steps"):
                parts.append(f"step {progress.get('step', 0)} / {progress['total_steps']}")
    logged = [
        (k, v) for k, v in (progress.get("metrics") or {}).items() if "/" in k and isinstance(v, (int, float))
    ]
    parts += [f"{escape(key)} {value:.3g}" for key, value in logged[:4]]  # e.g. train/loss, val/mean_km
    colour = {"failed": "#d62728", "cancelled": "#888"}.get(status, "var(--color-accent)")
    return (
        f'<div class="job-progress"><div class="job-bar"><div style="width:{100 * fraction:.1f}%;'
        f'background:{colour}"></div></div><div class="job-text">{" · ".join(parts)} · '
        f"{100 * fraction:.0f}%</div></div>"
    )


PROGRESS_CSS = """
.job-bar { height: 14px; background: var(--neutral-200); border-radius: 7px; overflow: hidden; }
.job-bar > div { height: 100%; transition: width 0.5s; }
.job-text { font-size: 0.9em; padding-top: 4px; }
"""


def _log_copy(manager: JobManager, job_id: str) -> str | None:
    """A copy of the job's full log in the temp folder (what the download button serves), or None."""
    source = manager.log_file(job_id)
    if not source.is_file():
        return None
    target = Path(tempfile.gettempdir()) / "geodemo-logs" / f"{job_id}.log.txt"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return str(target)


def job_view(manager: JobManager, job_id: str | None, seen: str = ""):
    """(status, progress html, curated log, curves figure, full-log file, key) of one job.

    The curves and the log file are only re-sent when the history or the status changed (`seen` is the
    last key), so a page that idles on a finished job sends almost nothing.
    """
    if not job_id:
        return "", progress_html({}, "no job selected"), "", maps.training_curves([]), None, ""
    try:
        job = manager.get(job_id)
    except JobError:  # deleted meanwhile
        return "", progress_html({}, "no job selected"), "", maps.training_curves([]), None, ""
    progress = manager.progress(job_id)
    history = progress.get("history") or []
    key = f"{job_id}:{len(history)}:{job.status}"
    changed = key != seen
    return (
        job.status,
        progress_html(progress, job.status),
        manager.curated_log(job_id, 30) or f"({job.status}: no progress lines yet)",
        maps.training_curves(history) if changed else gr.skip(),
        _log_copy(manager, job_id) if changed else gr.skip(),
        key,
    )


def _named(component: gr.Number, name: str) -> gr.Number:
    """Errors of the component's own checks (e.g. its minimum) name the field."""
    check = component.preprocess

    def preprocess(payload):
        try:
            return check(payload)
        except gr.Error as exc:
            raise gr.Error(f"{name}: {exc.message}", print_exception=False) from None

    component.preprocess = preprocess  # on the instance: a subclass would make Gradio write a .pyi stub
    return component


def build(settings: Settings, manager: JobManager) -> dict:
    """Lay out the tab and wire its events."""
    backbones = user_backbones(settings.show_test_backbones)

    def followed() -> str:
        """The job a fresh page follows: the running one, else the oldest queued one, else none."""
        active = [j for j in manager.list() if j.kind == "train" and j.status in ACTIVE]
        running = [j for j in active if j.status == "running"]
        return (running or active or [None])[0].id if active else ""

    @user_errors
    def start(
        task,
        backbone,
        datasets,
        init_from,
        name,
        epochs,
        image_size,
        batch_size,
        lr,
        unfreeze_epoch,
        accelerator,
        devices,
        limit_batches,
    ):
        params = {
            "task": task,
            "backbone": backbone,
            "datasets": list(datasets or []),
            "init_from": init_from or "",
            "max_epochs": epochs,
            "name": (name or "").strip() or time.strftime("run-%Y%m%d-%H%M%S"),
            "image_size": image_size,
            "batch_size": batch_size,
            "lr": lr,
            "unfreeze_epoch": unfreeze_epoch,
            "accelerator": accelerator,
            "devices": devices,
            "limit_train_batches": limit_batches,
            "limit_val_batches": limit_batches,
        }
        args, out = train_args(
            params, settings.data_roots, settings.checkpoints_dir, tuple(backbones), settings.checkpoints()
        )
        names = dict((path, label) for label, path in settings.dataset_choices())
        data = " + ".join(names.get(str(Path(p).resolve()), Path(p).name) for p in params["datasets"])
        job = manager.submit(
            "train", args, out, title=f"{params['name']} ({task}, {backbone}; {data})", params=params,
            reserve=True,
        )
        running = [j for j in manager.list() if j.status == "running"]
        if running:  # the view stays on what runs; the new job waits in the table
            gr.Info(f"Queued training job {job.id}; it starts when job {running[0].id} is done.")
            return gr.skip(), jobs_frame(manager, "train")
        gr.Info(f"Queued training job {job.id}.")
        return job.id, jobs_frame(manager, "train")

    @user_errors
    def cancel(job_id):
        if not job_id:
            raise gr.Error("Select a job first: click its row in the table.")
        job = manager.cancel(job_id)
        return job.status

    @user_errors
    def resume(job_id):
        if not job_id:
            raise gr.Error("Select an interrupted or cancelled training job first.")
        job = manager.resume(job_id)
        gr.Info(f"Queued job {job.id}: it continues from the last saved epoch of {job_id}.")
        return job.id, jobs_frame(manager, "train")

    @user_errors
    def delete(job_id):
        if not job_id:
            raise gr.Error("Select a cancelled or failed job first: click its row in the table.")
        job = manager.delete(job_id)
        gr.Info(f"Deleted job {job.id}; the name {Path(job.out).name!r} is free again.")
        return "", jobs_frame(manager, "train")

    def refresh(job_id, seen):
        table = jobs_frame(manager, "train")
        seen_table, _, seen_job = (seen or "").partition("|")
        signature = str(pd.util.hash_pandas_object(table.drop(columns=["duration"])).sum())
        status, bar, log_text, curves, log_file, key = job_view(manager, job_id, seen_job)
        running = (table.status == "running").any()
        new_table = table if signature != seen_table or running else gr.skip()  # durations tick while running
        return new_table, status, bar, log_text, curves, log_file, f"{signature}|{key}"

    def pick(evt: gr.SelectData):
        return evt.row_value[JOB_COLUMNS.index("id")] if evt.row_value else gr.skip()

    datasets = settings.dataset_choices()
    with gr.Row():
        with gr.Column(scale=2):
            task = gr.Dropdown(
                [(TASK_HELP[t], t) for t in TRAIN_TASKS], value="multi", label="Task", elem_id="train-task"
            )
            with gr.Row():
                backbone = gr.Dropdown(
                    backbones, value=backbones[0], label="Backbone", elem_id="train-backbone", min_width=200
                )
                name = gr.Textbox(
                    label="Checkpoint name", placeholder="run-<date> when empty", elem_id="train-name",
                    min_width=200,
                )
            dataset = gr.CheckboxGroup(
                datasets,
                value=[datasets[0][1]] if datasets else [],
                label="Datasets (tick several to train on them together)",
                elem_id="train-datasets",
            )
            init_from = gr.Dropdown(
                [("fresh start (no checkpoint)", ""), *settings.checkpoint_choices()],
                value="",
                label="Start from checkpoint (its weights; new heads start fresh)",
                elem_id="train-init-from",
            )
            with gr.Row():
                epochs = gr.Number(
                    10, label="Epochs", precision=0, minimum=1, maximum=500, elem_id="train-epochs"
                )
                image_size = gr.Number(
                    0,
                    label="Image size (px, 0 = backbone's)",
                    precision=0,
                    minimum=0,
                    maximum=1024,
                    elem_id="train-image-size",
                )
                batch_size = gr.Number(
                    16, label="Batch size", precision=0, minimum=1, maximum=1024, elem_id="train-batch-size"
                )
            with gr.Row():
                lr = gr.Number(1e-3, label="Learning rate", elem_id="train-lr")
                unfreeze_epoch = gr.Number(-1, label="Unfreeze backbone at epoch (-1 never)", precision=0)
            with gr.Row():
                accelerator = gr.Dropdown(
                    list(ACCELERATORS), value="auto", label="Accelerator", elem_id="train-accelerator"
                )
                most, kind = max_devices("auto")  # the job form cannot ask for more than the machine has
                devices = gr.Number(1, label=f"Devices (at most {most} {kind}s)", precision=0, minimum=1,
                                    maximum=max(1, most))
                limit_batches = gr.Number(
                    0, label="Batches per epoch (0 = all)", precision=0, minimum=0, elem_id="train-limit"
                )
            for number, field in (
                (epochs, "Epochs"),
                (image_size, "Image size"),
                (batch_size, "Batch size"),
                (lr, "Learning rate"),
                (unfreeze_epoch, "Unfreeze backbone at epoch"),
                (devices, "Devices"),
                (limit_batches, "Batches per epoch"),
            ):
                _named(number, field)
            start_button = gr.Button("Start training", variant="primary", elem_id="train-start")
        with gr.Column(scale=3):
            job_id = gr.Textbox(
                followed, label="Job (click a row to follow another)", interactive=False, elem_id="train-job"
            )
            status = gr.Textbox(label="Status", interactive=False, elem_id="train-status")
            bar = gr.HTML(progress_html({}, "no job selected"), js_on_load=None, elem_id="train-progress")
            with gr.Row():
                cancel_button = gr.Button("Cancel job", variant="stop", elem_id="train-cancel", size="sm")
                resume_button = gr.Button("Resume job", elem_id="train-resume", size="sm")
                delete_button = gr.Button("Delete job", elem_id="train-delete", size="sm")
                log_button = gr.DownloadButton("Full log", value=None, elem_id="train-full-log", size="sm")
            curves = gr.Plot(maps.training_curves([]), label="Loss and validation error")
    log = gr.Textbox(
        label="Progress log (the full log, with Lightning's messages, is under “Full log”)",
        lines=8,
        max_lines=8,
        autoscroll=True,
        elem_id="train-log",
    )
    table = gr.Dataframe(
        lambda: jobs_frame(manager, "train"),
        label="Training jobs (click a row to follow it)",
        interactive=False,
        wrap=True,
        elem_id="train-jobs",
    )

    form = [
        task,
        backbone,
        dataset,
        init_from,
        name,
        epochs,
        image_size,
        batch_size,
        lr,
        unfreeze_epoch,
        accelerator,
        devices,
        limit_batches,
    ]
    start_button.click(start, form, [job_id, table], api_name="start_training")
    cancel_button.click(cancel, job_id, status, api_name="cancel_job")
    resume_button.click(resume, job_id, [job_id, table], api_name="resume_job")
    delete_button.click(delete, job_id, [job_id, table], api_name="delete_job")
    table.select(pick, None, job_id, api_visibility="private")
    init_from.focus(
        lambda: gr.update(choices=[("fresh start (no checkpoint)", ""), *settings.checkpoint_choices()]),
        None,
        init_from,
        api_visibility="private",
        queue=False,
    )
    seen = gr.State("")
    timer = gr.Timer(TICK_S, active=True)
    outputs = [table, status, bar, log, curves, log_button, seen]
    timer.tick(
        refresh, [job_id, seen], outputs, api_visibility="private", queue=False, show_progress="hidden"
    )
    job_id.change(refresh, [job_id, seen], outputs, api_visibility="private", show_progress="hidden")
    return {"timer": timer, "init_from": init_from}
