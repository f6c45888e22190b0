"""Train tab: a validated form that queues `python -m training train ...`; live log, progress, curves."""

from __future__ import annotations

import time
from html import escape

import gradio as gr
import pandas as pd

from geodemo import maps
from geodemo.backbones import BACKBONES
from geodemo.jobs import ACCELERATORS, TRAIN_TASKS, JobManager, max_devices, train_args
from geodemo.ui.common import user_errors
from geodemo.ui.settings import Settings

TASK_HELP = {
    "multi": "multi (geocell + county + heading)",
    "geocell": "geocell (classify a grid cell)",
    "coords": "coords (regress x/y)",
    "region": "region (county)",
    "heading": "heading (camera direction)",
}
JOB_COLUMNS = ["id", "kind", "title", "status", "started", "duration", "message"]


def jobs_frame(manager: JobManager, kind: str | None = None) -> pd.DataFrame:
    """The job list (newest first) as a table."""
    rows = []
    for job in reversed(manager.list()):
        if kind and job.kind != kind:
            continue
        end = job.finished or (time.time() if job.status == "running" else None)
        duration = f"{end - job.started:.0f} s" if job.started and end else ""
        started = time.strftime("%H:%M:%S", time.localtime(job.started)) if job.started else ""
        rows.append([job.id, job.kind, job.title, job.status, started, duration, job.message])
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


def progress_html(progress: dict, status: str) -> str:
    """A progress bar with stage, epoch and the latest metrics."""
    fraction = float(progress.get("fraction") or (1.0 if status == "done" else 0.0))
    parts = [escape(status)]
    if progress.get("stage"):
        parts.append(escape(str(progress["stage"])))
    if progress.get("max_epochs"):
        parts.append(f"epoch {int(progress.get('epoch') or 0) + 1} / {progress['max_epochs']}")
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


def job_view(manager: JobManager, job_id: str | None, seen: str = ""):
    """(status, progress html, log tail, curves figure, key, timer) of one job.

    The curves are only re-sent when the history grew (`seen` is the last key), and the timer
    stops once the job is final, so an idle page costs nothing.
    """
    if not job_id:
        return (
            "",
            progress_html({}, "no job selected"),
            "",
            maps.training_curves([]),
            "",
            gr.Timer(active=False),
        )
    job = manager.get(job_id)
    progress = manager.progress(job_id)
    history = progress.get("history") or []
    key = f"{job_id}:{len(history)}"
    curves = maps.training_curves(history) if key != seen else gr.skip()
    return (
        job.status,
        progress_html(progress, job.status),
        manager.log_tail(job_id, 30),
        curves,
        key,
        gr.Timer(active=job.status in ("queued", "running")),
    )


def build(settings: Settings, manager: JobManager) -> dict:
    """Lay out the tab and wire its events."""

    @user_errors
    def start(
        task,
        backbone,
        dataset,
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
            "dataset": dataset,
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
        args, out = train_args(params, settings.data_roots, settings.checkpoints_dir, tuple(BACKBONES))
        job = manager.submit(
            "train", args, out, title=f"{params['name']} ({task}, {backbone})", params=params
        )
        gr.Info(f"Queued training job {job.id}.")
        return job.id, jobs_frame(manager, "train")

    @user_errors
    def cancel(job_id):
        if not job_id:
            raise gr.Error("Select a job first.")
        job = manager.cancel(job_id)
        return job.status

    @user_errors
    def resume(job_id):
        if not job_id:
            raise gr.Error("Select an interrupted or cancelled training job first.")
        job = manager.resume(job_id)
        gr.Info(f"Queued job {job.id}: it continues from the last saved epoch of {job_id}.")
        return job.id, jobs_frame(manager, "train")

    def refresh(job_id, seen):
        return jobs_frame(manager, "train"), *job_view(manager, job_id, seen)

    def pick(evt: gr.SelectData):
        return evt.row_value[0] if evt.row_value else gr.skip()

    datasets = settings.dataset_choices()
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Row():
                task = gr.Dropdown([(TASK_HELP[t], t) for t in TRAIN_TASKS], value="multi", label="Task")
                backbone = gr.Dropdown(
                    list(BACKBONES), value=next(iter(BACKBONES)), label="Backbone", elem_id="train-backbone"
                )
            with gr.Row():
                dataset = gr.Dropdown(
                    datasets,
                    value=datasets[0][1] if datasets else None,
                    label="Dataset",
                    elem_id="train-dataset",
                )
                name = gr.Textbox(
                    label="Checkpoint name", placeholder="run-<date> when empty", elem_id="train-name"
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
                lr = gr.Number(1e-3, label="Learning rate")
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
            with gr.Row():
                start_button = gr.Button("Start training", variant="primary", elem_id="train-start")
                cancel_button = gr.Button("Cancel job", variant="stop", elem_id="train-cancel")
                resume_button = gr.Button("Resume job", elem_id="train-resume")
        with gr.Column(scale=3):
            job_id = gr.Textbox(label="Job", interactive=False, elem_id="train-job")
            status = gr.Textbox(label="Status", interactive=False, elem_id="train-status")
            bar = gr.HTML(progress_html({}, "no job selected"), js_on_load=None, elem_id="train-progress")
            curves = gr.Plot(maps.training_curves([]), label="Loss and validation error")
    log = gr.Textbox(label="Log (last lines)", lines=10, max_lines=10, autoscroll=True, elem_id="train-log")
    table = gr.Dataframe(
        jobs_frame(manager, "train"),
        label="Training jobs (click a row to follow it)",
        interactive=False,
        wrap=True,
    )

    form = [
        task,
        backbone,
        dataset,
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
    table.select(pick, None, job_id, api_visibility="private")
    seen = gr.State("")
    timer = gr.Timer(1.0, active=False)
    outputs = [table, status, bar, log, curves, seen, timer]
    timer.tick(
        refresh, [job_id, seen], outputs, api_visibility="private", queue=False, show_progress="hidden"
    )
    job_id.change(refresh, [job_id, seen], outputs, api_visibility="private", show_progress="hidden")
    return {"timer": timer}
