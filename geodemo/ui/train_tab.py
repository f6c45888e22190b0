"""Train tab: a validated form that queues `python -m training train ...`; the jobs table, progress, curves.

The jobs table is filled on page load and on every tick, so a running job can always be found, followed
(click its row) and cancelled; a new submission never switches the view away from a running job.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from geodemo import maps
from geodemo.backbones import BACKBONES
from geodemo.heads import HEADS, MULTI_TASKS, TASKS
from geodemo.jobform import ACCELERATORS, JobError, max_devices, train_args
from geodemo.jobs import JobManager
from geodemo.ui import collect_panel
from geodemo.ui.common import session_owner, user_errors
from geodemo.ui.settings import Settings
from geodemo.ui.widgets import ACTIVE, progress_html

# status first (visible on a phone); a finished job's result (mean km, baseline) beside its message
JOB_COLUMNS = ["status", "title", "started", "duration", "result", "message", "id"]
COLUMN_WIDTHS = ["90px", "22%", "95px", "95px", "16%", "17%", "220px"]  # the id is never cut off
TICK_S = 2.0  # how often an open Train tab refreshes the table and the followed job
# The form survives a reload: each change is kept in the browser's localStorage, restored on page load (a
# stored list of another length, from an older form, is ignored).
SAVE_FORM_JS = "(...values) => { localStorage.setItem('geodemo-train-form', JSON.stringify(values)); }"
RESTORE_FORM_JS = """(...current) => {
  try {
    const saved = JSON.parse(localStorage.getItem('geodemo-train-form'));
    if (Array.isArray(saved) && saved.length === current.length) return saved;
  } catch (e) { /* nothing usable stored */ }
  return current;
}"""
# Open the Evaluate tab (the finished job's checkpoint is in its list: tabs refresh it when opened).
TO_EVALUATE_JS = """() => {
  const tabs = [...document.querySelectorAll('button[role=tab]')];
  const tab = tabs.find((b) => b.innerText.trim() === 'Evaluate');
  if (tab) { tab.click(); window.scrollTo(0, 0); }
}"""
# Phones: the jobs table keeps readable columns and scrolls sideways (no column squeezed to a sliver).
CSS = """
@media (max-width: 700px) { #train-jobs table { min-width: 720px; } }
"""
_RESULTS: dict[str, str] = {}  # job id -> result text of a finished job (it never changes)


def task_choices() -> list[tuple[str, str]]:
    """The task menu, (label, value), read off the head registry: multi, then each head with its help."""
    return [(f"multi ({' + '.join(MULTI_TASKS)})", "multi")] + [(f"{t} ({HEADS[t].help})", t) for t in TASKS]


def user_backbones(include_test: bool = False) -> list[str]:
    """Backbones offered in the form: the registry without the internal test ones (unless asked)."""
    return [name for name in BACKBONES if include_test or not name.startswith("test_")]


def _km(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def job_result(manager: JobManager, job) -> str:
    """A finished training job's figures: its mean error (km) beside the mean-coordinate baseline's and the
    first warning, from the training report in the checkpoint's config (`metrics.report`: training.report);
    else the last validation mean km in its progress file."""
    if job.status != "done":
        return ""
    if job.id in _RESULTS:
        return _RESULTS[job.id]
    try:
        metrics = json.loads((Path(job.out) / "config.json").read_text(encoding="utf-8")).get("metrics") or {}
    except (OSError, ValueError, AttributeError):
        metrics = {}
    report = metrics.get("report") if isinstance(metrics.get("report"), dict) else {}
    accuracy = report.get("accuracy") if isinstance(report.get("accuracy"), dict) else {}
    history = manager.progress(job.id).get("history") or []
    found = [_km(accuracy.get("mean_km")), _km(metrics.get("mean_km"))]
    found += [_km(h.get("val/mean_km")) for h in reversed(history)]
    km = next((v for v in found if v is not None), None)
    parts = [f"mean {km:,.1f} km" if km is not None else "mean km not recorded"]
    if _km(accuracy.get("baseline_mean_km")) is not None:
        parts.append(f"baseline {accuracy['baseline_mean_km']:,.1f} km")
    warnings = report.get("warnings") or []
    if warnings:
        parts.append(f"⚠ {str(warnings[0]).split(': ')[0]}")  # its gist; the full sentence is in the log
    _RESULTS[job.id] = " · ".join(parts) + " → Evaluate"
    return _RESULTS[job.id]


def training_datasets(settings: Settings) -> list[tuple[str, str]]:
    """The data roots that can be trained on: those with a data.csv (a folder only for labelling is not)."""
    choices = settings.dataset_choices()
    return [(label, path) for label, path in choices if (Path(path) / "data.csv").is_file()]


def curves_figure(history: list[dict]):
    """The training curves with whole-number epoch ticks (never 0.5 or 1.5)."""
    figure = maps.training_curves(history)
    epochs = len(history)
    figure.update_xaxes(tickmode="linear", tick0=0, dtick=max(1, math.ceil(epochs / 10)), tickformat="d")
    return figure


def jobs_frame(manager: JobManager, kind: str | None = None) -> pd.DataFrame:
    """The job list (newest first) as a table."""
    rows = []
    for job in reversed(manager.list()):
        if kind and job.kind != kind:
            continue
        end = job.finished or (time.time() if job.status == "running" else None)
        duration = f"{end - job.started:.0f} s" if job.started and end else ""
        started = time.strftime("%H:%M:%S", time.localtime(job.started)) if job.started else ""
        rows.append([job.status, job.title, started, duration, job_result(manager, job), job.message, job.id])
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


def _log_copy(manager: JobManager, job_id: str) -> str | None:
    """A copy of the job's full log in the app's upload folder (what the download button serves), or None.

    That folder ($GRADIO_TEMP_DIR, <tmp>/geodemo/app-<pid> under `python app.py`) goes when the app stops."""
    source = manager.log_file(job_id)
    if not source.is_file():
        return None
    folder = Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir()) / "geodemo-logs"
    target = folder / f"{job_id}.log.txt"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return str(target)


def job_view(manager: JobManager, job_id: str | None, seen: str = ""):
    """(status, progress html, curated log, curves figure, full-log file, key) of one job.

    The curves and the log file are only re-sent when the history or the status changed (`seen` is the
    last key), so a page that idles on a finished job sends almost nothing.
    """
    if not job_id:
        return "", progress_html({}, "no job selected"), "", curves_figure([]), None, ""
    try:
        job = manager.get(job_id)
    except JobError:  # deleted meanwhile
        return "", progress_html({}, "no job selected"), "", curves_figure([]), None, ""
    progress = manager.progress(job_id)
    history = progress.get("history") or []
    key = f"{job_id}:{len(history)}:{job.status}"
    changed = key != seen
    return (
        job.status,
        progress_html(progress, job.status),
        manager.curated_log(job_id, 30) or f"({job.status}: no progress lines yet)",
        curves_figure(history) if changed else gr.skip(),
        _log_copy(manager, job_id) if changed else gr.skip(),
        key,
    )


def followed(manager: JobManager) -> str:
    """The job a fresh page follows: the running one, else the oldest queued one, else none."""
    active = [j for j in manager.list() if j.kind == "train" and j.status in ACTIVE]
    running = [j for j in active if j.status == "running"]
    return (running or active or [None])[0].id if active else ""


def refresh(manager: JobManager, job_id, seen):
    """Each tick: the jobs table (when it changed, or durations tick), the followed job's view, the Evaluate
    link (shown when the followed job is done)."""
    table = jobs_frame(manager, "train")
    seen_table, _, seen_job = (seen or "").partition("|")
    signature = str(pd.util.hash_pandas_object(table.drop(columns=["duration"])).sum())
    status, bar, log_text, curves, log_file, key = job_view(manager, job_id, seen_job)
    running = (table.status == "running").any()
    new_table = table if signature != seen_table or running else gr.skip()  # durations tick while running
    link = gr.update(visible=status == "done")
    return new_table, status, bar, log_text, curves, log_file, f"{signature}|{key}", link


def pick(evt: gr.SelectData):
    """A clicked row: follow its job."""
    return evt.row_value[JOB_COLUMNS.index("id")] if evt.row_value else gr.skip()


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


def _layout(settings: Settings, manager: JobManager, backbones: list[str]) -> SimpleNamespace:
    """The tab's components (the form on the left, the followed job on the right, the jobs table)."""
    datasets = training_datasets(settings)
    with gr.Row():
        with gr.Column(scale=2):
            task = gr.Dropdown(task_choices(), value="multi", label="Task", elem_id="train-task")
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
                epochs = gr.Number(10, label="Epochs", precision=0, minimum=1, maximum=500,
                                   elem_id="train-epochs")
                image_size = gr.Number(0, label="Image size (px, 0 = backbone's)", precision=0, minimum=0,
                                       maximum=1024, elem_id="train-image-size")
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
            for number, field in ((epochs, "Epochs"), (image_size, "Image size"), (batch_size, "Batch size"),
                                  (lr, "Learning rate"), (unfreeze_epoch, "Unfreeze backbone at epoch"),
                                  (devices, "Devices"), (limit_batches, "Batches per epoch")):
                _named(number, field)
            start_button = gr.Button("Start training", variant="primary", elem_id="train-start")
        with gr.Column(scale=3):
            job_id = gr.Textbox(
                partial(followed, manager), label="Job (click a row to follow another)", interactive=False,
                elem_id="train-job",
            )
            status = gr.Textbox(label="Status", interactive=False, elem_id="train-status")
            bar = gr.HTML(progress_html({}, "no job selected"), js_on_load=None, elem_id="train-progress")
            with gr.Row():
                cancel_button = gr.Button("Cancel job", variant="stop", elem_id="train-cancel", size="sm")
                resume_button = gr.Button("Resume job", elem_id="train-resume", size="sm")
                delete_button = gr.Button("Delete job", elem_id="train-delete", size="sm")
                log_button = gr.DownloadButton("Full log", value=None, elem_id="train-full-log", size="sm")
            curves = gr.Plot(curves_figure([]), show_label=False)  # the figure carries its title
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
        column_widths=COLUMN_WIDTHS,
        elem_id="train-jobs",
    )
    to_evaluate = gr.Button("Evaluate the finished checkpoint ▶", visible=False, size="sm",
                            elem_id="train-to-evaluate")
    collect_panel.build(settings, manager)  # issue 25: collect more data, a background job like training

    return SimpleNamespace(
        task=task,
        backbone=backbone,
        name=name,
        dataset=dataset,
        init_from=init_from,
        epochs=epochs,
        image_size=image_size,
        batch_size=batch_size,
        lr=lr,
        unfreeze_epoch=unfreeze_epoch,
        accelerator=accelerator,
        devices=devices,
        limit_batches=limit_batches,
        start_button=start_button,
        job_id=job_id,
        status=status,
        bar=bar,
        cancel_button=cancel_button,
        resume_button=resume_button,
        delete_button=delete_button,
        log_button=log_button,
        curves=curves,
        log=log,
        table=table,
        to_evaluate=to_evaluate,
    )


def build(settings: Settings, manager: JobManager) -> dict:
    """Lay out the tab and wire its events."""
    backbones = user_backbones(settings.show_test_backbones)

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
        request: gr.Request,
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
            reserve=True, owner=session_owner(settings.single_user, request),
        )
        running = [j for j in manager.list() if j.status == "running"]
        if running:  # the view stays on what runs; the new job waits in the table
            gr.Info(f"Queued training job {job.id}; it starts when job {running[0].id} is done.")
            return gr.skip(), jobs_frame(manager, "train")
        gr.Info(f"Queued training job {job.id}.")
        return job.id, jobs_frame(manager, "train")

    @user_errors
    def cancel(job_id, request: gr.Request):
        if not job_id:
            raise gr.Error("Select a job first: click its row in the table.")
        job = manager.cancel(job_id, session_owner(settings.single_user, request))
        return job.status

    @user_errors
    def resume(job_id, request: gr.Request):
        if not job_id:
            raise gr.Error("Select an interrupted or cancelled training job first.")
        job = manager.resume(job_id, session_owner(settings.single_user, request))
        gr.Info(f"Queued job {job.id}: it continues from the last saved epoch of {job_id}.")
        return job.id, jobs_frame(manager, "train")

    @user_errors
    def delete(job_id, request: gr.Request):
        if not job_id:
            raise gr.Error("Select a cancelled or failed job first: click its row in the table.")
        job = manager.delete(job_id, session_owner(settings.single_user, request))
        gr.Info(f"Deleted job {job.id}; the name {Path(job.out).name!r} is free again.")
        return "", jobs_frame(manager, "train")

    c = _layout(settings, manager, backbones)
    job_id, table = c.job_id, c.table
    form = [c.task, c.backbone, c.dataset, c.init_from, c.name, c.epochs, c.image_size, c.batch_size, c.lr,
            c.unfreeze_epoch, c.accelerator, c.devices, c.limit_batches]  # start()'s parameters, in order
    c.start_button.click(start, form, [job_id, table], api_name="start_training")
    c.cancel_button.click(cancel, job_id, c.status, api_name="cancel_job")
    c.resume_button.click(resume, job_id, [job_id, table], api_name="resume_job")
    c.delete_button.click(delete, job_id, [job_id, table], api_name="delete_job")
    table.select(pick, None, job_id, api_visibility="private")
    c.to_evaluate.click(None, js=TO_EVALUATE_JS)
    gr.on([f.change for f in form], None, form, None, js=SAVE_FORM_JS, api_visibility="private", queue=False)
    page = gr.context.Context.root_block  # the whole app (Blocks): its load restores the form
    if page is not None:
        page.load(None, form, form, js=RESTORE_FORM_JS, api_visibility="private", queue=False)
    tab = gr.context.Context.block  # the enclosing Train tab: its dataset list is fresh whenever it opens
    if isinstance(tab, gr.Tab):
        tab.select(lambda: gr.update(choices=training_datasets(settings)), None, c.dataset,
                   api_visibility="private", queue=False)
    c.init_from.focus(
        lambda: gr.update(choices=[("fresh start (no checkpoint)", ""), *settings.checkpoint_choices()]),
        None,
        c.init_from,
        api_visibility="private",
        queue=False,
    )
    seen = gr.State("")
    timer = gr.Timer(TICK_S, active=True)
    outputs = [table, c.status, c.bar, c.log, c.curves, c.log_button, seen, c.to_evaluate]
    timer.tick(
        partial(refresh, manager), [job_id, seen], outputs, api_visibility="private", queue=False,
        show_progress="hidden",
    )
    job_id.change(partial(refresh, manager), [job_id, seen], outputs, api_visibility="private",
                  show_progress="hidden")
    return {"timer": timer, "init_from": c.init_from}
