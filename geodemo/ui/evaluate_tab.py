"""Evaluate tab: queue `python -m training evaluate ...`, then metrics, error map/plots, worst cases.

A dataset can also be uploaded as a .zip (geodemo.archive unpacks and validates it into the upload folder),
and two finished evaluations of the same data can be compared (geodemo.compare). Results belong to the
inputs that made them: picking a past evaluation sets the checkpoint and dataset it was run with, a changed
dropdown marks the shown results stale, and a refused comparison clears the previous one.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import gradio as gr
import pandas as pd

from geodemo import geo, maps
from geodemo.archive import unpack_dataset
from geodemo.compare import compare_errors, verdict
from geodemo.data import read_locations, view_paths
from geodemo.jobform import JobError, evaluate_args
from geodemo.jobs import JobManager
from geodemo.predict import Predictor
from geodemo.ui.common import session_owner, user_errors
from geodemo.ui.settings import Settings
from geodemo.ui.widgets import progress_html

# (key, label, format): percentages for shares, GeoScore as points beside the km.
METRICS = [
    ("count", "locations", "{:.0f}"),
    ("mean_km", "mean error", "{:,.1f} km"),
    ("median_km", "median error", "{:,.1f} km"),
    ("geoscore", "GeoScore (world scale, of 5000)", "{:,.0f}"),
    ("geoscore_croatia", "GeoScore (Croatia scale, of 5000)", "{:,.0f}"),
    ("acc_1km", "within 1 km", "{:.1%}"),
    ("acc_10km", "within 10 km", "{:.1%}"),
    ("acc_25km", "within 25 km", "{:.1%}"),
    ("acc_50km", "within 50 km", "{:.1%}"),
    ("acc_100km", "within 100 km", "{:.1%}"),
    ("acc_200km", "within 200 km", "{:.1%}"),
    ("county_accuracy", "county accuracy", "{:.1%}"),
    ("region_coverage_50", "truth inside the 50% region (nominal: 50%)", "{:.0%}"),
    ("region_coverage_90", "truth inside the 90% region (nominal: 90%)", "{:.0%}"),
    ("expected_error_ratio", "expected ÷ actual error (1.00 = calibrated)", "{:.2f}"),
    ("heading_maae_deg", "heading error (mean)", "{:.1f}°"),
]
# The worst-first table: display name -> per-location CSV column; the id goes last. Four columns, so a phone
# shows it without sideways scrolling; a clicked row shows the coordinates, views and map below.
WORST = {"error (km)": "error_km", "true county": "true_county", "predicted county": "pred_county",
         "location": "uuid"}
COMPARE_COLUMNS = ["checkpoint", "mean error (km)", "median error (km)", "GeoScore"]
COUNTY_COLUMNS = ["county", "locations", "mean error (km)", "point in county"]
CSS = """
#eval-worst table, #eval-counties table { font-size: 0.92em; }
@media (max-width: 700px) {
  #eval-worst td, #eval-worst th, #eval-metrics td, #eval-compare-table td, #eval-compare-table th {
    white-space: normal; }
}
"""


def county_name(value) -> str:
    """A county as its name (name_hr), whether given as an ISO code (HR-17) or already as a name."""
    value = "" if value is None or (isinstance(value, float) and value != value) else str(value)
    names = dict(zip(geo.COUNTY_CODES, geo.county_names()))
    return names.get(value, value)


def metrics_frame(metrics: dict) -> pd.DataFrame:
    """The evaluation JSON as a two-column table (shares as percentages, coverage beside its nominal)."""
    rows = [[label, fmt.format(float(metrics[key]))] for key, label, fmt in METRICS
            if isinstance(metrics.get(key), (int, float))]
    return pd.DataFrame(rows, columns=["metric", "value"])


def county_frame(metrics: dict) -> pd.DataFrame:
    """The evaluation's `county_report` as a table, worst mean error first (counties without data last)."""
    rows = [[r.get("name") or county_name(r.get("county")), int(r.get("count") or 0),
             None if r.get("mean_km") is None else round(float(r["mean_km"]), 1),
             None if r.get("county_accuracy") is None else f"{float(r['county_accuracy']):.0%}"]
            for r in metrics.get("county_report") or []]
    frame = pd.DataFrame(rows, columns=COUNTY_COLUMNS)
    return frame.sort_values("mean error (km)", ascending=False, na_position="last").reset_index(drop=True)


def worst_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The per-location table for people: worst first, km to 0.1, counties by name, the id last."""
    out = pd.DataFrame({name: frame[column] for name, column in WORST.items() if column in frame})
    out["error (km)"] = frame["error_km"].round(1)
    return out


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


def dataset_options(settings: Settings) -> list[tuple[str, str]]:
    """(label, path) of every dataset that can be evaluated: the data roots, then uploaded zips."""
    uploads = []
    for folder in settings.uploaded_datasets():
        marker = folder / ".name"  # the archive's file name, written at upload
        name = marker.read_text(encoding="utf-8") if marker.is_file() else folder.name
        uploads.append((f"uploaded {name}", str(folder)))
    return settings.dataset_choices() + uploads


def queue(settings: Settings, manager: JobManager, checkpoint, dataset, limit):
    """Submit one evaluate job of `checkpoint` on `dataset` (exactly what the dropdowns say)."""
    new_id = manager.new_id("evaluate")
    out = manager.path(new_id) / "eval.json"  # results live in the job's own folder
    roots = [*settings.data_roots, *settings.uploaded_datasets()]
    args = evaluate_args(checkpoint, dataset, roots, settings.checkpoints(), out, limit=limit)
    names = dict((path, label) for label, path in settings.checkpoint_choices())
    data_names = dict((path, label) for label, path in dataset_options(settings))
    return manager.submit(
        "evaluate",
        args,
        out,
        title=f"{names.get(str(checkpoint), Path(checkpoint).name)} on "
              f"{data_names.get(str(dataset), Path(dataset).name)}",
        params={"checkpoint": str(checkpoint), "dataset": str(dataset)},
        job_id=new_id,
        owner=session_owner(settings.single_user),  # the browser session of the event being run
    )


@user_errors
def run(settings, manager, checkpoint, dataset, limit):
    """The `/evaluate` API: queue an evaluation; the page follows it."""
    if not checkpoint or not dataset:
        raise gr.Error("Choose a checkpoint and a dataset to evaluate.")
    job = queue(settings, manager, checkpoint, dataset, limit)
    gr.Info(f"Queued evaluation job {job.id}.")
    return job.id, gr.Timer(active=True)


@user_errors
def upload(settings, archive):
    """Unpack an uploaded dataset zip into the upload folder (checked) and select it."""
    if not archive:
        return gr.skip()
    name = Path(str(archive)).name
    folder = unpack_dataset(archive, settings.uploads_dir, name=name)
    (folder / ".name").write_text(name, encoding="utf-8")
    count = max(0, len((folder / "data.csv").read_text(encoding="utf-8").strip().splitlines()) - 1)
    gr.Info(f"Unpacked {name}: {count} locations; press Run evaluation.")
    return gr.update(choices=dataset_options(settings), value=str(folder))


@user_errors
def evaluate_zip(settings, manager, checkpoint, archive, limit):
    """The `/evaluate_zip` API: unpack a dataset zip, evaluate it, wait, return the metrics JSON."""
    if not archive:
        raise gr.Error("Upload a .zip of a LUMEN-layout dataset.")
    folder = unpack_dataset(archive, settings.uploads_dir, name=Path(str(archive)).name)
    job = manager.wait(queue(settings, manager, checkpoint, str(folder), limit).id, timeout=3600)
    if job.status != "done":
        raise gr.Error(f"The evaluation {job.status}: {job.message or 'see the job log'}.")
    return {**load_results(job)[0], "job": job.id, "dataset": str(folder)}


def poll(manager, job_id, shown, checkpoint=None, dataset=None):
    """Progress while the job runs; the results once, when it is done (marked stale when the dropdowns no
    longer say what they were computed from)."""
    nothing = [gr.skip()] * 8
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
    return (bar, metrics_frame(metrics), maps.error_map(frame), maps.error_histogram(frame),
            maps.error_cdf(frame), worst_frame(frame), county_frame(metrics),
            stale_note(job.params, checkpoint, dataset), job.params, job_id, gr.Timer(active=False))


@user_errors
def inspect(job_params, evt: gr.SelectData):
    """One worst-case row: its views, truth vs prediction map with the heatmap, the error."""
    row = dict(zip(WORST, evt.row_value or []))
    if not row or not job_params:
        return gr.skip(), gr.skip(), gr.skip()
    uid, error_km = str(row["location"]), float(row["error (km)"])
    dataset, checkpoint = Path(job_params["dataset"]), job_params["checkpoint"]
    paths = view_paths(dataset, uid)
    predictor = Predictor.load(checkpoint)
    prediction = predictor.predict({v * 90: str(p) for v, p in paths.items()})
    truths = read_locations(dataset).set_index("uuid")
    if uid not in truths.index:
        raise gr.Error(f"{uid} is not a location of the evaluated dataset; click a row of the table.")
    truth_row = truths.loc[uid]
    truth = (float(truth_row.latitude), float(truth_row.longitude))
    names = ("North", "East", "South", "West")
    gallery = [(str(p), names[v]) for v, p in sorted(paths.items())]
    text = (
        f"**{uid}** — error **{error_km:.1f} km**; truth {truth[0]:.4f}, {truth[1]:.4f} "
        f"({row['true county']}), prediction {prediction.latitude:.4f}, {prediction.longitude:.4f} "
        f"({row['predicted county']})"
    )
    return gallery, maps.prediction_figure(prediction, predictor.cells, truth=truth), text


def overlap_banner(manager, job_id):
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


def past_jobs(manager):
    """The finished evaluations, newest first, as dropdown choices."""
    done = [j for j in reversed(manager.list()) if j.kind == "evaluate" and j.status == "done"]
    return gr.update(choices=[(f"{j.title} · {j.id}", j.id) for j in done])


def picked_job(settings, manager, job_id):
    """A past evaluation picked by the user sets the checkpoint and dataset dropdowns it was run with."""
    try:
        params = manager.get(job_id).params if job_id else {}
    except ValueError:
        return gr.skip(), gr.skip()
    checkpoint, dataset = params.get("checkpoint"), params.get("dataset")
    return (gr.update(choices=settings.checkpoint_choices(), value=checkpoint) if checkpoint else gr.skip(),
            gr.update(choices=dataset_options(settings), value=dataset) if dataset else gr.skip())


def stale_note(job_params, checkpoint, dataset):
    """A visible mark when the dropdowns no longer say what the shown results were computed from."""
    if not job_params or (job_params.get("checkpoint") == str(checkpoint)
                          and job_params.get("dataset") == str(dataset)):
        return gr.update(value="", visible=False)
    return gr.update(value="⚠ **The results below are for another checkpoint or dataset than the ones "
                           "selected above**; press **Run evaluation** to evaluate the selection.",
                     visible=True)


@user_errors
def compare(settings, manager, first, second):
    """Paired comparison of two finished evaluations of the same dataset: km and GeoScore, each ± its SE."""
    if not first or not second:
        raise gr.Error("Pick two finished evaluations to compare.")
    jobs = [manager.get(first), manager.get(second)]
    if jobs[0].params.get("dataset") != jobs[1].params.get("dataset"):
        raise JobError("The two evaluations are of different datasets; compare two evaluations of the "
                       "same dataset (run the second checkpoint on the first one's data).")
    labels = dict((p, label) for label, p in settings.checkpoint_choices())
    names = [labels.get(j.params.get("checkpoint"), Path(j.params.get("checkpoint", "?")).name) for j in jobs]
    if names[0] == names[1]:
        names = [f"{names[0]} ({j.id})" for j in jobs]
    r = compare_errors(load_results(jobs[0])[1], load_results(jobs[1])[1])
    rows = [[name, f"{r[k]['mean_km']:.1f}", f"{r[k]['median_km']:.1f}", f"{r[k]['geoscore']:,.0f}"]
            for name, k in zip(names, "ab")]
    rows += [["difference (A − B)", f"{r['mean_diff_km']:+.1f} ± {r['se_km']:.1f} (SE)",
             f"{r['median_diff_km']:+.1f}", f"{r['geoscore_diff']:+,.1f} ± {r['geoscore_se']:.1f} (SE)"]]
    text = (f"**{verdict(r, tuple(names))}** Paired over the locations in both evaluations; GeoScore is "
            "OSV-5M's 5000·e<sup>−d/1492.7 km</sup> per location (higher is better).")
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS), text


def _layout(settings: Settings) -> dict:
    """The tab's components, by name."""
    c = {}
    checkpoints, datasets = settings.checkpoint_choices(), dataset_options(settings)
    with gr.Row(equal_height=True):
        c["checkpoint"] = gr.Dropdown(checkpoints, value=checkpoints[0][1] if checkpoints else None,
                                      label="Checkpoint", scale=3, elem_id="eval-checkpoint", min_width=160)
        c["dataset"] = gr.Dropdown(datasets, value=datasets[0][1] if datasets else None,
                                   label="Labelled dataset (a configured folder, or upload a .zip below)",
                                   elem_id="eval-dataset", scale=3, min_width=160)
        c["limit"] = gr.Number(0, label="Locations (0 = all)", precision=0, minimum=0, scale=1, min_width=100,
                               elem_id="eval-limit")
        c["run"] = gr.Button("Run evaluation", variant="primary", scale=1, elem_id="eval-run", min_width=120)
    with gr.Accordion("Upload a dataset (.zip in the LUMEN layout: data.csv + images/<uuid>/0.jpg ...)",
                      open=False, elem_id="eval-upload-box"):
        c["archive"] = gr.File(label="Dataset .zip", file_types=[".zip"], type="filepath",
                               elem_id="eval-upload")
    with gr.Row(equal_height=True):
        c["job_id"] = gr.Dropdown([], value=None, allow_custom_value=True,
                                  label="Evaluation job (pick a past one)", scale=3, elem_id="eval-job",
                                  min_width=200)
        c["bar"] = gr.HTML(progress_html({}, "no job selected"), js_on_load=None, scale=4, min_width=200)
    c["stale"] = gr.Markdown(visible=False, elem_id="eval-stale")
    c["overlap"] = gr.Markdown(visible=False, elem_id="eval-overlap")  # training-data warning (issue 8)
    with gr.Row():
        c["metrics"] = gr.Dataframe(pd.DataFrame(columns=["metric", "value"]), label="Metrics",
                                    interactive=False, scale=1, elem_id="eval-metrics", min_width=260,
                                    max_height=700, wrap=True, column_widths=["64%", "36%"])
        c["error_map"] = gr.Plot(maps.empty_map(), label="Error map: truth → prediction", scale=2,
                                 min_width=300)
    with gr.Row():
        c["histogram"] = gr.Plot(show_label=False, min_width=300)  # the figures carry their own titles
        c["cdf"] = gr.Plot(show_label=False, min_width=300)
    c["worst"] = gr.Dataframe(pd.DataFrame(columns=list(WORST)), label="Locations, worst first (click a "
                              "row to inspect)", interactive=False, elem_id="eval-worst", max_height=320,
                              wrap=True)
    with gr.Row():
        with gr.Column(scale=2, min_width=260):
            c["detail"] = gr.Markdown("Click a row above to inspect a location.", elem_id="eval-detail")
            c["views"] = gr.Gallery(label="Views", columns=2, height="auto", object_fit="contain",
                                    elem_id="eval-views", buttons=["fullscreen"])
        c["detail_map"] = gr.Plot(label="Truth and prediction", scale=3, min_width=300)
    c["counties"] = gr.Dataframe(pd.DataFrame(columns=COUNTY_COLUMNS), label="Per county, worst mean error "
                                 "first (click a header to sort)", interactive=False, elem_id="eval-counties",
                                 max_height=320, wrap=True)
    with gr.Accordion("Compare two checkpoints on the same data", open=False, elem_id="eval-compare-box"):
        with gr.Row(equal_height=True):
            c["compare_a"] = gr.Dropdown([], value=None, label="Evaluation A",
                                         elem_id="eval-compare-a", scale=3, min_width=200)
            c["compare_b"] = gr.Dropdown([], value=None, label="Evaluation B",
                                         elem_id="eval-compare-b", scale=3, min_width=200)
            c["compare"] = gr.Button("Compare", scale=1, elem_id="eval-compare", min_width=100)
        c["compare_text"] = gr.Markdown("Run both checkpoints on the same dataset, then pick the two "
                                        "evaluations.", elem_id="eval-compare-text")
        c["compare_table"] = gr.Dataframe(pd.DataFrame(columns=COMPARE_COLUMNS), interactive=False, wrap=True,
                                          elem_id="eval-compare-table",
                                          column_widths=["28%", "24%", "24%", "24%"])
    return c


def build(settings: Settings, manager: JobManager) -> dict:
    """Lay out the tab and wire its events."""
    c = _layout(settings)
    private = {"api_visibility": "private", "queue": False}
    shown, job_params, timer = gr.State(""), gr.State({}), gr.Timer(1.0, active=False)
    job_id, checkpoint, dataset = c["job_id"], c["checkpoint"], c["dataset"]
    c["run"].click(partial(run, settings, manager), [checkpoint, dataset, c["limit"]], [job_id, timer],
                   api_name="evaluate")
    outputs = [c["bar"], c["metrics"], c["error_map"], c["histogram"], c["cdf"], c["worst"], c["counties"],
               c["stale"], job_params, shown, timer]
    watched = [job_id, shown, checkpoint, dataset]
    c["metrics"].change(partial(overlap_banner, manager), job_id, c["overlap"], **private)
    timer.tick(partial(poll, manager), watched, outputs, show_progress="hidden", **private)
    job_id.change(partial(poll, manager), watched, outputs, api_visibility="private", show_progress="hidden")
    job_id.input(partial(picked_job, settings, manager), job_id, [checkpoint, dataset], **private).then(
        stale_note, [job_params, checkpoint, dataset], c["stale"], **private)
    for picker in (job_id, c["compare_a"], c["compare_b"]):
        picker.focus(partial(past_jobs, manager), None, picker, **private)
    for source in (checkpoint, dataset):
        source.change(stale_note, [job_params, checkpoint, dataset], c["stale"], **private)
    dataset.focus(lambda: gr.update(choices=dataset_options(settings)), None, dataset, **private)
    c["archive"].upload(partial(upload, settings), c["archive"], dataset, api_name="upload_dataset")
    api_trigger = gr.Button(visible=False)  # `/evaluate_zip`: one call from gradio_client, metrics back
    zip_metrics = gr.JSON(visible=False)
    api_trigger.click(partial(evaluate_zip, settings, manager), [checkpoint, c["archive"], c["limit"]],
                      zip_metrics, api_name="evaluate_zip")
    # A new comparison first clears the old one, so a refused one never leaves it on screen.
    c["compare"].click(
        lambda: (pd.DataFrame(columns=COMPARE_COLUMNS), "Comparing…"), None,
        [c["compare_table"], c["compare_text"]], **private,
    ).then(partial(compare, settings, manager), [c["compare_a"], c["compare_b"]],
           [c["compare_table"], c["compare_text"]], api_name="compare_evaluations")
    c["worst"].select(inspect, job_params, [c["views"], c["detail_map"], c["detail"]],
                      api_name="inspect_location", concurrency_id="model")
    return {"checkpoint": checkpoint}
