"""Predict tab: four views -> map, summary, Grad-CAM; the lean `/predict` API; checkpoint upload."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import gradio as gr

from geodemo import geo, maps
from geodemo.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, load_checkpoint
from geodemo.data import is_safe_id, read_locations, view_paths
from geodemo.predict import Predictor
from geodemo.ui.common import VIEW_NAMES, user_errors, view_inputs, views_dict
from geodemo.ui.settings import EXAMPLES_DIR, Settings

INTRO = (
    "Upload up to four street-level photos of one place (camera facing north, east, south and west; "
    "any may be missing) and the model guesses where in Croatia they were taken."
)
CREDIT = (
    "Examples: three real locations from the public LUMEN 2022 sample; imagery © Google. "
    "Maps: © OpenStreetMap contributors (ODbL), Natural Earth, GeoNames (CC BY 4.0)."
)


def examples() -> list[list[str | None]]:
    """The bundled example locations as [north, east, south, west] file paths."""
    rows = []
    for uid in read_locations(EXAMPLES_DIR).uuid:
        paths = view_paths(EXAMPLES_DIR, uid)
        rows.append([str(paths[v]) if v in paths else None for v in range(4)])  # view index order N, E, S, W
    return rows


def summary_markdown(prediction) -> str:
    """Coordinates, nearest town, county, top-5 counties, per-view headings and time, as Markdown."""
    town = str(geo.nearest_place(prediction.latitude, prediction.longitude))
    top = list(prediction.county_probabilities.items())[:5]
    lines = [
        f"### {prediction.latitude:.4f}° N, {prediction.longitude:.4f}° E",
        f"near **{town}** · county **{prediction.county}**",
        "",
        "| county | probability |",
        "|---|---:|",
        *[f"| {name} | {p:.1%} |" for name, p in top],
    ]
    if prediction.headings:
        names = dict(zip(("0", "90", "180", "270"), ("North", "East", "South", "West")))
        lines += [
            "",
            "**Camera heading** (predicted, ° from north): "
            + ", ".join(f"{names.get(k, k)} view {v:.0f}°" for k, v in prediction.headings.items()),
        ]
    lines += ["", f"<small>model `{prediction.model}`, {prediction.elapsed_ms:.0f} ms</small>"]
    return "\n".join(lines)


def build(settings: Settings) -> dict:
    """Lay out the tab and wire its events; returns the components other tabs need."""
    default = str(settings.default_checkpoint)
    checkpoint_state = gr.State(default)  # the API path always uses the app's default checkpoint

    @user_errors
    def predict(north, east, south, west, checkpoint):
        """The `/predict` API: decode, one batched forward pass, JSON (the map is a chained event)."""
        prediction = Predictor.load(checkpoint).predict(views_dict(north, east, south, west))
        return prediction.to_json(), prediction

    @user_errors
    def render(prediction, north, east, south, west, checkpoint, show_cam):
        predictor = Predictor.load(checkpoint)
        figure = maps.prediction_figure(prediction, predictor.cells)
        cams = []
        if show_cam:
            overlays = predictor.gradcam(views_dict(north, east, south, west))
            names = ("North", "East", "South", "West")
            cams = [(img, names[i] if i < 4 else str(i)) for i, img in sorted(overlays.items())]
        return figure, summary_markdown(prediction), gr.update(value=cams, visible=bool(cams))

    @user_errors
    def upload_checkpoint(files, name):
        """Validate an uploaded model.safetensors + config.json and add it to the selectors."""
        name = (name or "").strip()
        if not is_safe_id(name):
            raise CheckpointError("Give the checkpoint a name of letters, digits, '.', '_' or '-'.")
        by_name = {Path(f).name: Path(f) for f in files or []}
        if set(by_name) != {WEIGHTS_FILE, CONFIG_FILE}:
            raise CheckpointError(
                f"Upload exactly two files, {WEIGHTS_FILE} and {CONFIG_FILE}; "
                "pickled checkpoints (.ckpt, .pt, .bin) are refused."
            )
        out = settings.checkpoints_dir / name
        if out.exists():
            raise CheckpointError(f"A checkpoint named {name!r} already exists; choose another name.")
        settings.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".upload-", dir=settings.checkpoints_dir))
        try:
            for fname, path in by_name.items():
                shutil.copyfile(path, tmp / fname)
            load_checkpoint(tmp)  # raises CheckpointError naming what is wrong
            tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        gr.Info(f"Checkpoint {name!r} added.")
        return gr.update(choices=settings.checkpoint_choices(), value=str(out)), str(out)

    gr.Markdown(INTRO)
    views = view_inputs("predict")
    with gr.Row(equal_height=True):
        checkpoint = gr.Dropdown(
            settings.checkpoint_choices(),
            value=default,
            label="Model checkpoint",
            scale=3,
            elem_id="predict-checkpoint",
        )
        show_cam = gr.Checkbox(value=True, label="Grad-CAM overlays", scale=1)
        button = gr.Button("Predict", variant="primary", scale=1, elem_id="predict-button")
    gr.Examples(examples(), inputs=views, label="Example locations", examples_per_page=3)
    gr.Markdown(f"<small>{CREDIT}</small>")
    with gr.Row():
        figure = gr.Plot(maps.empty_map(), label="Prediction map", scale=3, elem_id="predict-map")
        with gr.Column(scale=2):
            summary = gr.Markdown("Prediction summary appears here.", elem_id="predict-summary")
    cams = gr.Gallery(label="Grad-CAM: what the model looked at", columns=4, height=260, visible=False)
    with gr.Accordion("API response (JSON)", open=False):
        result = gr.JSON(label="/predict result")
    with gr.Accordion("Upload a checkpoint (model.safetensors + config.json)", open=False):
        with gr.Row():
            files = gr.File(
                file_count="multiple", file_types=[".safetensors", ".json"], label="Files", scale=3
            )
            with gr.Column(scale=1):
                upload_name = gr.Textbox(label="Name", placeholder="my-model")
                upload_button = gr.Button("Validate and add")

    prediction_state = gr.State(None)
    checkpoint.change(lambda c: c, checkpoint, checkpoint_state, api_visibility="private")
    button.click(
        predict,
        [*views, checkpoint_state],
        [result, prediction_state],
        api_name="predict",
        concurrency_id="model",
    ).success(
        render,
        [prediction_state, *views, checkpoint_state, show_cam],
        [figure, summary, cams],
        api_name="predict_map",
        api_visibility="undocumented",
        concurrency_id="model",
    )
    upload_button.click(
        upload_checkpoint, [files, upload_name], [checkpoint, checkpoint_state], api_name="upload_checkpoint"
    )
    return {"checkpoint": checkpoint, "checkpoint_state": checkpoint_state, "view_names": VIEW_NAMES}
