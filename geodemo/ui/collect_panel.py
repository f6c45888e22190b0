"""The Collect panel (an accordion in the Train tab): queue `python -m training collect` as a background job.

The job runs through geodemo.jobs.JobManager like training does, so it survives page reloads and shows its
progress here. Collected datasets go to the app's uploads folder, where the Evaluate tab lists them. Keys
are read from the app's environment only (never typed into the page or written into a job).
"""

from __future__ import annotations

import json
import time
from html import escape

import gradio as gr

from geodemo.collect import plan
from geodemo.collect.job import KEY_ENV, collect_args, form_config, key_status
from geodemo.collect.run import SOURCES
from geodemo.collect.vocab import SAMPLINGS
from geodemo.jobs import JobManager
from geodemo.ui.common import user_errors
from geodemo.ui.settings import Settings

TICK_S = 2.0
ACTIVE = ("queued", "running")
SAMPLING_HELP = {"prior": "near known Street View coordinates", "uniform": "uniform on land",
                 "county": "equal share per county"}


def _help() -> str:
    keys = key_status()
    state = ", ".join(f"{s}: ${KEY_ENV[s]} {'is set' if keys[s] else 'is not set'}" for s in SOURCES)
    return (
        "Fetch new Croatian locations into a LUMEN-layout dataset (four 640×640 views each). "
        "**Street View** bills images to your Google key (about USD 7 per 1,000 images; press *Estimate* "
        "first); **Mapillary** is free and its photos are CC-BY-SA 4.0 (credited in the dataset's README). "
        f"Keys come from the app's environment only ({state}). The dataset appears in the Evaluate tab as "
        "*uploaded collect-NAME*; re-starting a job with the same name and settings resumes it."
    )


def progress_html(progress: dict, status: str) -> str:
    """A bar with the points done, the locations kept and the requests sent."""
    fraction = float(progress.get("fraction") or (1.0 if status == "done" else 0.0))
    metrics = progress.get("metrics") or {}
    parts = [escape(status), escape(str(progress.get("stage") or ""))]
    if metrics:
        parts.append(f"{metrics.get('locations', 0)} locations")
    if progress.get("error"):
        parts.append(escape(str(progress["error"])))
    colour = {"failed": "#d62728", "cancelled": "#888"}.get(status, "var(--color-accent)")
    return (f'<div class="job-progress"><div class="job-bar"><div style="width:{100 * fraction:.1f}%;'
            f'background:{colour}"></div></div><div class="job-text">{" · ".join(p for p in parts if p)} · '
            f"{100 * fraction:.0f}%</div></div>")


def build(settings: Settings, manager: JobManager) -> dict:
    """Lay out the accordion and wire its events (api names collect_estimate, start_collect)."""

    def form_params(source, points, sampling, seed, spacing, radius, name, exclude) -> dict:
        return {"source": source, "points": points, "sampling": sampling, "seed": seed,
                "min_spacing_km": spacing, "radius_m": radius,
                "name": (name or "").strip() or time.strftime("%Y%m%d-%H%M%S"), "exclude": exclude or []}

    @user_errors
    def estimate(*form):
        return json.dumps(plan(form_config(form_params(*form), settings.data_roots, settings.uploads_dir)),
                          indent=1)

    @user_errors
    def start(*form):
        params = form_params(*form)
        args, out = collect_args(params, settings.data_roots, settings.uploads_dir)
        pending = [j for j in manager.list() if j.out == str(out) and j.status in ACTIVE]
        if pending:
            raise gr.Error(f"Job {pending[0].id} already collects into {out.name}; wait for it or cancel it.")
        out.mkdir(parents=True, exist_ok=True)
        (out / ".name").write_text(out.name, encoding="utf-8")  # how the Evaluate tab names it
        title = f"collect {params['points']} {params['source']} points ({params['sampling']}) -> {out.name}"
        job = manager.submit("collect", args, out, title=title, params=params)
        gr.Info(f"Queued collect job {job.id}.")
        return job.id

    @user_errors
    def cancel(job_id):
        if not job_id:
            raise gr.Error("No collect job to cancel.")
        return manager.cancel(job_id).status

    def latest() -> str:
        jobs = [j for j in manager.list() if j.kind == "collect"]
        active = [j for j in jobs if j.status in ACTIVE]
        return (active or jobs[-1:] or [None])[0].id if jobs else ""

    def refresh(job_id):
        if not job_id:
            return "", progress_html({}, "no collect job yet"), ""
        try:
            job = manager.get(job_id)
        except ValueError:
            return "", progress_html({}, "no collect job yet"), ""
        log = manager.curated_log(job_id, 12) or f"({job.status}: no progress lines yet)"
        return job.status, progress_html(manager.progress(job_id), job.status), log

    with gr.Accordion("Collect more data (Street View / Mapillary)", open=False, elem_id="collect-panel"):
        gr.Markdown(_help())
        with gr.Row():
            source = gr.Dropdown(list(SOURCES), value="streetview", label="Source", elem_id="collect-source")
            points = gr.Number(100, label="Points", precision=0, minimum=1, maximum=20_000,
                               elem_id="collect-points")
            sampling = gr.Dropdown([(f"{s}: {SAMPLING_HELP[s]}", s) for s in SAMPLINGS], value="prior",
                                   label="Sampling", elem_id="collect-sampling")
            seed = gr.Number(0, label="Seed", precision=0, minimum=0)
        with gr.Row():
            spacing = gr.Number(1.0, label="Min spacing (km)", minimum=0, maximum=100)
            radius = gr.Number(50, label="Search radius (m)", minimum=1, maximum=5000)
            name = gr.Textbox(label="Dataset name", placeholder="<date> when empty", elem_id="collect-name")
        exclude = gr.CheckboxGroup(settings.dataset_choices(), label="Keep away from (e.g. your test set)")
        with gr.Row():
            estimate_button = gr.Button("Estimate requests and cost", size="sm", elem_id="collect-estimate")
            start_button = gr.Button("Start collecting", variant="primary", size="sm",
                                     elem_id="collect-start")
            cancel_button = gr.Button("Cancel", variant="stop", size="sm", elem_id="collect-cancel")
        plan_box = gr.Code(label="Estimate (nothing is sent)", language="json", wrap_lines=True,
                           elem_id="collect-plan")
        job_id = gr.Textbox(latest, label="Collect job", interactive=False, elem_id="collect-job")
        status = gr.Textbox(label="Status", interactive=False, elem_id="collect-status")
        bar = gr.HTML(progress_html({}, "no collect job yet"), elem_id="collect-progress")
        log = gr.Textbox(label="Progress", lines=5, max_lines=5, autoscroll=True, elem_id="collect-log")
    form = [source, points, sampling, seed, spacing, radius, name, exclude]
    estimate_button.click(estimate, form, plan_box, api_name="collect_estimate")
    start_button.click(start, form, job_id, api_name="start_collect")
    cancel_button.click(cancel, job_id, status, api_name="cancel_collect")
    timer = gr.Timer(TICK_S, active=True)
    timer.tick(refresh, job_id, [status, bar, log], api_visibility="private", queue=False,
               show_progress="hidden")
    job_id.change(refresh, job_id, [status, bar, log], api_visibility="private", show_progress="hidden")
    return {"timer": timer, "job_id": job_id}
