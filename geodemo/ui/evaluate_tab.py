"""Evaluate tab: queue `python -m training evaluate ...`, then metrics, error map/plots, worst cases."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pandas as pd

from geodemo import maps
from geodemo.data import view_paths
from geodemo.jobs import JobManager, evaluate_args
from geodemo.predict import Predictor
from geodemo.ui.common import user_errors
from geodemo.ui.settings import Settings
from geodemo.ui.train_tab import progress_html

METRIC_LABELS = {
    "count": "locations",
    "mean_km": "mean error (km)",
    "median_km": "median error (km)",
    "acc_1km": "within 1 km",
    "acc_25km": "within 25 km",
    "acc_50km": "within 50 km",
    "acc_100km": "within 100 km",
    "acc_200km": "within 200 km",
    "county_accuracy": "county accuracy",
    "heading_maae_deg": "heading MAAE (°)",
}
WORST_COLUMNS = [
    "uuid",
    "error_km",
    "true_county",
    "pred_county",
    "true_lat",
    "true_lon",
    "pred_lat",
    "pred_lon",
]


def metrics_frame(metrics: dict) -> pd.DataFrame:
    """The evaluation JSON as a two-column table (shares shown as percentages)."""
    rows = []
    for key, label in METRIC_LABELS.items():
        if metrics.get(key) is None:
            continue
        value = float(metrics[key])
        text = f"{value:.1%}" if key.startswith("acc_") or key == "county_accuracy" else f"{value:,.1f}"
        rows.append([label, str(int(value)) if key == "count" else text])
    return pd.DataFrame(rows, columns=["metric", "value"])


def load_results(job) -> tuple[dict, pd.DataFrame]:
    """(metrics, per-location table sorted worst first) of a finished evaluate job."""
    out = Path(job.out)
    metrics = json.loads(out.read_text(encoding="utf-8"))
    frame = pd.read_csv(out.with_suffix(".csv"))
    frame = frame.sort_values("error_km", ascending=False).reset_index(drop=True)
    return metrics, frame


def build(settings: Settings, manager: JobManager) -> dict:
    """Lay out the tab and wire its events."""

    @user_errors
    def run(checkpoint, dataset, limit):
        new_id = manager.new_id("evaluate")
        out = manager.path(new_id) / "eval.json"  # results live in the job's own folder
        args = evaluate_args(
            checkpoint, dataset, settings.data_roots, settings.checkpoints(), out, limit=limit
        )
        job = manager.submit(
            "evaluate",
            args,
            out,
            title=f"{Path(checkpoint).name} on {Path(dataset).name}",
            params={"checkpoint": str(checkpoint), "dataset": str(dataset)},
            job_id=new_id,
        )
        gr.Info(f"Queued evaluation job {job.id}.")
        return job.id, gr.Timer(active=True)

    def poll(job_id, shown):
        """Progress while the job runs; the results once, when it is done."""
        nothing = [gr.skip()] * 6
        if not job_id:
            return "", *nothing, shown, gr.Timer(active=False)
        job = manager.get(job_id)
        bar = progress_html(manager.progress(job_id), job.status)
        if job.status != "done":
            if job.status in ("failed", "cancelled"):
                gr.Warning(f"Evaluation {job.status}: {job.message or 'see the log'}")
            return bar, *nothing, shown, gr.Timer(active=job.status in ("queued", "running"))
        if shown == job_id:
            return bar, *nothing, shown, gr.Timer(active=False)
        metrics, frame = load_results(job)
        return (
            bar,
            metrics_frame(metrics),
            maps.error_map(frame),
            maps.error_histogram(frame),
            maps.error_cdf(frame),
            frame[WORST_COLUMNS].round(4),
            job.params,
            job_id,
            gr.Timer(active=False),
        )

    @user_errors
    def inspect(job_params, evt: gr.SelectData):
        """One worst-case row: its views, truth vs prediction map with the heatmap, the error."""
        row = evt.row_value
        if not row or not job_params:
            return gr.skip(), gr.skip(), gr.skip()
        uid, error_km = str(row[0]), float(row[1])
        dataset, checkpoint = Path(job_params["dataset"]), job_params["checkpoint"]
        paths = view_paths(dataset, uid)
        predictor = Predictor.load(checkpoint)
        prediction = predictor.predict({v * 90: str(p) for v, p in paths.items()})
        truth = (float(row[4]), float(row[5]))
        names = ("North", "East", "South", "West")
        gallery = [(str(p), names[v]) for v, p in sorted(paths.items())]
        text = (
            f"**{uid}** — error **{error_km:.1f} km**; truth {truth[0]:.4f}, {truth[1]:.4f} "
            f"({row[2]}), prediction {prediction.latitude:.4f}, {prediction.longitude:.4f} ({row[3]})"
        )
        return gallery, maps.prediction_figure(prediction, predictor.cells, truth=truth), text

    def past_jobs():
        done = [j for j in reversed(manager.list()) if j.kind == "evaluate" and j.status == "done"]
        return gr.update(choices=[(f"{j.id}: {j.title}", j.id) for j in done])

    checkpoints = settings.checkpoint_choices()
    datasets = settings.dataset_choices()
    with gr.Row(equal_height=True):
        checkpoint = gr.Dropdown(
            checkpoints,
            value=checkpoints[0][1] if checkpoints else None,
            label="Checkpoint",
            scale=3,
            elem_id="eval-checkpoint",
        )
        dataset = gr.Dropdown(
            datasets,
            value=datasets[0][1] if datasets else None,
            label="Labelled dataset",
            elem_id="eval-dataset",
            scale=3,
        )
        limit = gr.Number(0, label="Locations (0 = all)", precision=0, minimum=0, scale=1)
        run_button = gr.Button("Run evaluation", variant="primary", scale=1, elem_id="eval-run")
    with gr.Row(equal_height=True):
        job_id = gr.Dropdown(
            [],
            value=None,
            allow_custom_value=True,
            label="Evaluation job (pick a past one)",
            scale=3,
            elem_id="eval-job",
        )
        bar = gr.HTML(progress_html({}, "no job selected"), js_on_load=None, scale=4)
    with gr.Row():
        metrics = gr.Dataframe(
            pd.DataFrame(columns=["metric", "value"]),
            label="Metrics",
            interactive=False,
            scale=1,
            elem_id="eval-metrics",
        )
        error_map = gr.Plot(maps.empty_map(), label="Error map: truth → prediction", scale=2)
    with gr.Row():
        histogram = gr.Plot(label="Error histogram")
        cdf = gr.Plot(label="Error CDF")
    worst = gr.Dataframe(
        pd.DataFrame(columns=WORST_COLUMNS),
        label="Locations, worst first (click a row to inspect)",
        interactive=False,
        elem_id="eval-worst",
        max_height=320,
    )
    with gr.Row():
        with gr.Column(scale=2):
            detail = gr.Markdown("Click a row above to inspect a location.", elem_id="eval-detail")
            views = gr.Gallery(label="Views", columns=2, height=360, elem_id="eval-views")
        detail_map = gr.Plot(label="Truth and prediction", scale=3)

    shown = gr.State("")
    job_params = gr.State({})
    timer = gr.Timer(1.0, active=False)
    run_button.click(run, [checkpoint, dataset, limit], [job_id, timer], api_name="evaluate")
    outputs = [bar, metrics, error_map, histogram, cdf, worst, job_params, shown, timer]
    timer.tick(poll, [job_id, shown], outputs, api_visibility="private", queue=False, show_progress="hidden")
    job_id.change(poll, [job_id, shown], outputs, api_visibility="private", show_progress="hidden")
    job_id.focus(past_jobs, None, job_id, api_visibility="private", queue=False)
    worst.select(
        inspect, job_params, [views, detail_map, detail], api_name="inspect_location", concurrency_id="model"
    )
    return {"checkpoint": checkpoint}
