"""Evaluate tab: queue `python -m training evaluate ...`, then metrics, error map/plots, worst cases.

A dataset can also be uploaded as a .zip (geodemo.archive unpacks and validates it into the upload folder),
and two finished evaluations of the same data can be compared (geodemo.compare).
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pandas as pd

from geodemo import geo, maps
from geodemo.archive import unpack_dataset
from geodemo.compare import compare_errors, verdict
from geodemo.data import view_paths
from geodemo.jobs import JobError, JobManager, evaluate_args
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


def county_name(value) -> str:
    """A county as its name (name_hr), whether given as an ISO code (HR-17) or already as a name."""
    value = "" if value is None or (isinstance(value, float) and value != value) else str(value)
    names = dict(zip(geo.COUNTY_CODES, geo.county_names()))
    return names.get(value, value)


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
    for column in ("true_county", "pred_county"):
        if column in frame:
            frame[column] = frame[column].map(county_name)
    return metrics, frame


def build(settings: Settings, manager: JobManager) -> dict:
    """Lay out the tab and wire its events."""

    def dataset_options() -> list[tuple[str, str]]:
        uploads = []
        for folder in settings.uploaded_datasets():
            marker = folder / ".name"  # the archive's file name, written at upload
            name = marker.read_text(encoding="utf-8") if marker.is_file() else folder.name
            uploads.append((f"uploaded {name}", str(folder)))
        return settings.dataset_choices() + uploads

    def dataset_label(dataset) -> str:
        return dict((path, label) for label, path in dataset_options()).get(str(dataset), Path(dataset).name)

    def queue(checkpoint, dataset, limit):
        new_id = manager.new_id("evaluate")
        out = manager.path(new_id) / "eval.json"  # results live in the job's own folder
        roots = [*settings.data_roots, *settings.uploaded_datasets()]
        args = evaluate_args(checkpoint, dataset, roots, settings.checkpoints(), out, limit=limit)
        names = dict((path, label) for label, path in settings.checkpoint_choices())
        return manager.submit(
            "evaluate",
            args,
            out,
            title=f"{names.get(str(checkpoint), Path(checkpoint).name)} on {dataset_label(dataset)}",
            params={"checkpoint": str(checkpoint), "dataset": str(dataset)},
            job_id=new_id,
        )

    @user_errors
    def run(checkpoint, dataset, limit):
        job = queue(checkpoint, dataset, limit)
        gr.Info(f"Queued evaluation job {job.id}.")
        return job.id, gr.Timer(active=True)

    @user_errors
    def upload(archive):
        """Unpack an uploaded dataset zip into the upload folder (checked) and select it."""
        if not archive:
            return gr.skip()
        name = Path(str(archive)).name
        folder = unpack_dataset(archive, settings.uploads_dir, name=name)
        (folder / ".name").write_text(name, encoding="utf-8")
        count = max(0, len((folder / "data.csv").read_text(encoding="utf-8").strip().splitlines()) - 1)
        gr.Info(f"Unpacked {name}: {count} locations; press Run evaluation.")
        return gr.update(choices=dataset_options(), value=str(folder))

    @user_errors
    def evaluate_zip(checkpoint, archive, limit):
        """The `/evaluate_zip` API: unpack a dataset zip, evaluate it, wait, return the metrics JSON."""
        if not archive:
            raise gr.Error("Upload a .zip of a LUMEN-layout dataset.")
        folder = unpack_dataset(archive, settings.uploads_dir, name=Path(str(archive)).name)
        job = manager.wait(queue(checkpoint, str(folder), limit).id, timeout=3600)
        if job.status != "done":
            raise gr.Error(f"The evaluation {job.status}: {job.message or 'see the job log'}.")
        return {**load_results(job)[0], "job": job.id, "dataset": str(folder)}

    @user_errors
    def compare(first, second):
        """Paired comparison of two finished evaluations of the same dataset."""
        if not first or not second:
            raise gr.Error("Pick two finished evaluations to compare.")
        jobs = [manager.get(first), manager.get(second)]
        if jobs[0].params.get("dataset") != jobs[1].params.get("dataset"):
            raise JobError("The two evaluations are of different datasets; compare two evaluations of the "
                           "same dataset (run the second checkpoint on the first one's data).")
        names = [dict((p, label) for label, p in settings.checkpoint_choices()).get(
            j.params.get("checkpoint"), Path(j.params.get("checkpoint", "?")).name) for j in jobs]
        if names[0] == names[1]:
            names = [f"{names[0]} ({j.id})" for j in jobs]
        result = compare_errors(load_results(jobs[0])[1], load_results(jobs[1])[1])
        table = pd.DataFrame(
            [
                [names[0], f"{result['a']['mean_km']:.1f}", f"{result['a']['median_km']:.1f}"],
                [names[1], f"{result['b']['mean_km']:.1f}", f"{result['b']['median_km']:.1f}"],
                ["difference (A − B)",
                 f"{result['mean_diff_km']:+.1f} ± {result['se_km']:.1f} (SE)",
                 f"{result['median_diff_km']:+.1f}"],
            ],
            columns=["checkpoint", "mean error (km)", "median error (km)"],
        )
        text = f"**{verdict(result, tuple(names))}** Paired over the locations in both evaluations."
        return table, text

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

    def overlap_banner(job_id):
        """A banner when the evaluated locations were used to train the checkpoint (`train_overlap`)."""
        n = None
        try:
            job = manager.get(job_id) if job_id else None
            if job is not None and job.status == "done":
                n = json.loads(Path(job.out).read_text(encoding="utf-8")).get("train_overlap")
        except (ValueError, OSError):  # an unknown job or unreadable results: no banner
            n = None
        text = f"{n} of these locations were used to train this checkpoint; these figures are not a test."
        return gr.update(value=f"⚠ **{text}**" if n else "", visible=bool(n))

    def past_jobs():
        done = [j for j in reversed(manager.list()) if j.kind == "evaluate" and j.status == "done"]
        return gr.update(choices=[(f"{j.title} · {j.id}", j.id) for j in done])

    checkpoints = settings.checkpoint_choices()
    datasets = dataset_options()
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
            label="Labelled dataset (a configured folder, or upload a .zip below)",
            elem_id="eval-dataset",
            scale=3,
        )
        limit = gr.Number(0, label="Locations (0 = all)", precision=0, minimum=0, scale=1)
        run_button = gr.Button("Run evaluation", variant="primary", scale=1, elem_id="eval-run")
    with gr.Accordion("Upload a dataset (.zip in the LUMEN layout: data.csv + images/<uuid>/0.jpg ...)",
                      open=False, elem_id="eval-upload-box"):
        archive = gr.File(label="Dataset .zip", file_types=[".zip"], type="filepath", elem_id="eval-upload")
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
    overlap = gr.Markdown(visible=False, elem_id="eval-overlap")  # training-data warning (issue 8)
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
            views = gr.Gallery(
                label="Views", columns=2, height="auto", object_fit="contain", elem_id="eval-views"
            )
        detail_map = gr.Plot(label="Truth and prediction", scale=3)
    with gr.Accordion("Compare two checkpoints on the same data", open=False, elem_id="eval-compare-box"):
        with gr.Row(equal_height=True):
            compare_a = gr.Dropdown([], value=None, label="Evaluation A", elem_id="eval-compare-a", scale=3)
            compare_b = gr.Dropdown([], value=None, label="Evaluation B", elem_id="eval-compare-b", scale=3)
            compare_button = gr.Button("Compare", scale=1, elem_id="eval-compare")
        compare_text = gr.Markdown("Run both checkpoints on the same dataset, then pick the two evaluations.",
                                   elem_id="eval-compare-text")
        compare_table = gr.Dataframe(
            pd.DataFrame(columns=["checkpoint", "mean error (km)", "median error (km)"]),
            interactive=False,
            elem_id="eval-compare-table",
        )
    api_trigger = gr.Button(visible=False)  # `/evaluate_zip`: one call from gradio_client, metrics back

    shown = gr.State("")
    job_params = gr.State({})
    timer = gr.Timer(1.0, active=False)
    run_button.click(run, [checkpoint, dataset, limit], [job_id, timer], api_name="evaluate")
    outputs = [bar, metrics, error_map, histogram, cdf, worst, job_params, shown, timer]
    metrics.change(overlap_banner, job_id, overlap, api_visibility="private", queue=False)
    timer.tick(poll, [job_id, shown], outputs, api_visibility="private", queue=False, show_progress="hidden")
    job_id.change(poll, [job_id, shown], outputs, api_visibility="private", show_progress="hidden")
    job_id.focus(past_jobs, None, job_id, api_visibility="private", queue=False)
    for picker in (compare_a, compare_b):
        picker.focus(past_jobs, None, picker, api_visibility="private", queue=False)
    dataset.focus(
        lambda: gr.update(choices=dataset_options()), None, dataset, api_visibility="private", queue=False
    )
    archive.upload(upload, archive, dataset, api_name="upload_dataset")
    zip_metrics = gr.JSON(visible=False)
    api_trigger.click(evaluate_zip, [checkpoint, archive, limit], zip_metrics, api_name="evaluate_zip")
    compare_button.click(
        compare, [compare_a, compare_b], [compare_table, compare_text], api_name="compare_evaluations"
    )
    worst.select(
        inspect, job_params, [views, detail_map, detail], api_name="inspect_location", concurrency_id="model"
    )
    return {"checkpoint": checkpoint}
