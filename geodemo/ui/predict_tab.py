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
from geodemo.readout import CREDIBLE_MASSES, Readout
from geodemo.truth import exif_gps, parse_truth, train_overlap
from geodemo.ui import neighbours_panel
from geodemo.ui.common import VIEW_NAMES, as_text, user_errors, view_inputs, views_dict
from geodemo.ui.settings import EXAMPLES_DIR, Settings

INTRO = (
    "Upload up to four street-level photos of one place (camera facing north, east, south and west; "
    "any may be missing) and the model guesses where in Croatia they were taken."
)
CREDIT = (
    "Examples: three real locations from the public LUMEN 2022 sample; imagery © Google. "
    "Maps: © OpenStreetMap contributors (ODbL), Natural Earth, GeoNames (CC BY 4.0)."
)


TRUTH_HINT = (
    "<small>Optional: the true place, to see the error in km. Type it, click the result map, or upload a "
    "photo with GPS in its EXIF.</small>"
)
# Clicks on the result map (MapLibre inside Plotly) set the truth. Plotly or Gradio may replace the map
# object (a re-mounted Plot), so poll for the current map and attach once per map object.
CLICK_JS = """
const attach = () => {
  const gd = document.querySelector('#predict-map .js-plotly-plot');
  const sub = gd && gd._fullLayout && gd._fullLayout.map && gd._fullLayout.map._subplot;
  const map = sub && sub.map;
  if (!map || map.__geodemoTruth) return;
  map.__geodemoTruth = true;
  map.getCanvas().style.cursor = 'crosshair';
  map.on('click', (e) => {
    trigger('click', {lat: Math.round(e.lngLat.lat * 1e6) / 1e6, lon: Math.round(e.lngLat.lng * 1e6) / 1e6});
  });
};
setInterval(attach, 400);
"""
# Gradio's Plot re-creates its Plotly div and MapLibre map (a new WebGL context) for every new value, ~2 s
# in a software-GL browser. So every map the tab shows after page load goes as figure JSON to a hidden
# textbox, and this handler redraws the existing map in place with Plotly.react (same config, so no
# re-plot); only when no map exists yet does it hand the figure to the Plot. Draws are chained, so the last
# value is the one shown.
REDRAW_JS = """
(fig, plot) => {
  if (!fig) return plot;
  window.__geodemoFigure = fig;
  const gd = document.querySelector('#predict-map .js-plotly-plot');
  if (!window.Plotly || !window.__geodemoRedraw || !gd || !gd._fullLayout) {  // no map yet: the Plot's
    window.__geodemoPlotValue = fig;
    return {type: 'plotly', plot: fig};
  }
  window.__geodemoRedraw(gd, fig);
  return plot;  // the Plot's value unchanged: no re-created map
}
"""
# Defines the in-place redraw (Gradio's own layout settings) and re-applies the last figure to a map that
# Gradio has re-mounted since, so a re-mounted Plot never keeps showing an older value.
REDRAW_SETUP_JS = """
// The figures' zoom shows the whole country in a map ~650 px wide; a narrower map (a phone) zooms out
// to keep all of Croatia in view.
window.__geodemoFitZoom = (gd, zoom) => {
  const w = gd.clientWidth;
  return w > 0 && w < 650 ? zoom + Math.log2(w / 650) : zoom;
};
window.__geodemoRedraw = (gd, fig) => {
  gd.__geodemoShown = fig;
  const f = JSON.parse(fig);
  const layout = f.layout || {};
  if (layout.map && typeof layout.map.zoom === 'number') {
    layout.map.zoom = window.__geodemoFitZoom(gd, layout.map.zoom);
  }
  layout.autosize = true;
  layout.margin = Object.assign(layout.margin || {}, {autoexpand: true});
  window.__geodemoDrawn = (window.__geodemoDrawn || Promise.resolve())
    .then(() => window.Plotly.react(gd, f.data, layout)).catch((err) => console.error(err));
};
setInterval(() => {
  const gd = document.querySelector('#predict-map .js-plotly-plot');
  const zoom = gd && gd._fullLayout && gd._fullLayout.map && gd._fullLayout.map.zoom;
  if (window.Plotly && typeof zoom === 'number' && !gd.__geodemoFitted) {  // the page-load map, once
    gd.__geodemoFitted = true;
    const fitted = window.__geodemoFitZoom(gd, zoom);
    if (fitted !== zoom) window.Plotly.relayout(gd, {'map.zoom': fitted});
  }
  const fig = window.__geodemoFigure;
  if (!fig || !window.Plotly || !gd || !gd._fullLayout || gd.__geodemoShown === fig) return;
  if (gd.__geodemoShown === undefined && window.__geodemoPlotValue === fig) gd.__geodemoShown = fig;
  else window.__geodemoRedraw(gd, fig);
}, 400);
"""
EMPTY_SUMMARY = "Prediction summary appears here."


def examples() -> list[list[str | None]]:
    """The bundled example locations as [north, east, south, west, true latitude, true longitude]."""
    rows = []
    for row in read_locations(EXAMPLES_DIR).itertuples():
        paths = view_paths(EXAMPLES_DIR, row.uuid)
        files = [str(paths[v]) if v in paths else None for v in range(4)]  # view index order N, E, S, W
        rows.append([*files, f"{row.latitude:.6f}", f"{row.longitude:.6f}"])
    return rows


def summary_markdown(prediction) -> str:
    """The point, its town and county, the expected error, the county distribution and headings, as Markdown.

    The county named with the point is the one containing it; the county distribution is the model's
    separate estimate, shown as its own table, and a disagreement between the two is said in words.
    """
    town = as_text(geo.nearest_place(prediction.latitude, prediction.longitude))
    county = as_text(prediction.county)  # names are shown as text, never as HTML or Markdown
    top = [(as_text(name), p) for name, p in list(prediction.county_probabilities.items())[:5]]
    lines = [
        f"### {prediction.latitude:.4f}° N, {prediction.longitude:.4f}° E",
        f"near **{town}** · in **{county}** county",
    ]
    expected = getattr(prediction, "expected_error_km", None)
    if expected is not None:
        lines += ["", f"The model expects to be about **{expected:.0f} km** off (its own estimate)."]
    lines += [
        "",
        "**County distribution** (the model's separate county estimate, not the map point):",
        "",
        "| county | probability |",
        "|---|---:|",
        *[f"| {name} | {p:.1%} |" for name, p in top],
    ]
    if top and top[0][0] != county:
        lines += [
            "",
            f"⚠ The county estimate's first choice, **{top[0][0]}** ({top[0][1]:.0%}), is not the county "
            f"containing the point (**{county}**): the two parts of the model disagree.",
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


def truth_markdown(predictor: Predictor, prediction, truth: tuple[float, float] | None) -> str:
    """The error in km against a known truth, and whether the truth fell in the 50% / 90% regions."""
    if truth is None:
        return ""
    if prediction is None:
        return f"Truth set to {truth[0]:.4f}° N, {truth[1]:.4f}° E. Predict to see the error."
    error = float(geo.haversine_km(truth[0], truth[1], prediction.latitude, prediction.longitude))
    lines = [f"### Error: {error:.1f} km", f"from the truth at {truth[0]:.4f}° N, {truth[1]:.4f}° E."]
    if prediction.expected_error_km is not None:
        lines[-1] += f" The model expected about {prediction.expected_error_km:.0f} km."
    if prediction.cell_probabilities is not None:
        out = {"geocell": prediction.cell_probabilities[None]}
        inside = {
            m: bool(predictor.readout.truth_in_region(out, truth[0], truth[1], m)[0]) for m in CREDIBLE_MASSES
        }
        if inside[0.5]:
            where = "inside the **50%** credible region (and so the 90% one)"
        elif inside[0.9]:
            where = "inside the **90%** credible region, outside the 50% one"
        else:
            where = "**outside** even the 90% credible region: the model was confidently wrong"
        lines.append(f"The truth is {where}.")
    seen = train_overlap(predictor.config, truth[0], truth[1], [""])
    if seen is not None and seen[0]:
        lines.append("⚠ This place is one of the checkpoint's training locations (within 10 m): the error is "
                     "not a test of how it does on new places.")
    if not geo.in_croatia(truth[0], truth[1]):
        lines.append("Note: this truth lies outside Croatia; check the coordinates.")
    return "\n\n".join(lines)


def result_figure(predictor: Predictor, prediction, truth=None):
    """The prediction map with the 50% / 90% credible regions and, when known, the truth and error line."""
    regions = {}
    if prediction.cell_probabilities is not None:
        p = prediction.cell_probabilities[None]
        regions = {m: Readout.credible_set(p, m)[0] for m in CREDIBLE_MASSES}
    return maps.prediction_figure(prediction, predictor.cells, truth=truth, regions=regions)


def build(settings: Settings) -> dict:
    """Lay out the tab and wire its events; returns the components other tabs need."""
    default = str(settings.default_checkpoint)
    checkpoint_state = gr.State(default)  # the API path always uses the app's default checkpoint

    @user_errors
    def predict(north, east, south, west, checkpoint):
        """The `/predict` API: decode, one batched forward pass, JSON (the map is a chained event)."""
        prediction = Predictor.load(checkpoint).predict(views_dict(north, east, south, west))
        return prediction.to_json(), prediction

    def typed_truth(lat_text, lon_text):
        """(truth or None, a warning sentence or None): a bad truth field must not hide the prediction."""
        try:
            return parse_truth(lat_text, lon_text), None
        except ValueError as err:
            return None, f"⚠ {err}"

    @user_errors
    def tell(prediction, checkpoint, lat_text, lon_text):
        """The summary and the truth's error, first after the prediction: no figure, no Grad-CAM."""
        truth, warning = typed_truth(lat_text, lon_text)
        told = warning or truth_markdown(Predictor.load(checkpoint), prediction, truth)
        return summary_markdown(prediction), told

    @user_errors
    def draw(prediction, checkpoint, lat_text, lon_text):
        """The prediction map's JSON (follows the summary; REDRAW_JS draws it in place)."""
        figure = result_figure(Predictor.load(checkpoint), prediction, typed_truth(lat_text, lon_text)[0])
        return figure.to_json()

    @user_errors
    def gradcam(north, east, south, west, checkpoint, show_cam):
        """The Grad-CAM overlays, last: off the path to the summary and the map."""
        cams = []
        if show_cam:
            overlays = Predictor.load(checkpoint).gradcam(views_dict(north, east, south, west))
            names = ("North", "East", "South", "West")
            cams = [(img, names[i] if i < 4 else str(i)) for i, img in sorted(overlays.items())]
        return gr.update(value=cams, visible=bool(cams))

    @user_errors
    def show_truth(prediction, lat_text, lon_text, checkpoint):
        """The truth fields changed: redraw the map with the truth and say the error."""
        if bool((lat_text or "").strip()) != bool((lon_text or "").strip()):
            # half typed (the first field lost focus): a hint beside the map, not an error toast
            hint = "Enter the other true coordinate too to see the error in km."
            if prediction is None:
                return gr.skip(), hint
            return result_figure(Predictor.load(checkpoint), prediction, None).to_json(), hint
        truth = parse_truth(lat_text, lon_text)
        if prediction is None:
            return gr.skip(), truth_markdown(None, None, truth)
        predictor = Predictor.load(checkpoint)
        figure = result_figure(predictor, prediction, truth)
        return figure.to_json(), truth_markdown(predictor, prediction, truth)

    def clicked(evt: gr.EventData):
        data = evt._data or {}
        return f"{data.get('lat', '')}", f"{data.get('lon', '')}", ""

    def exif_truth(path, lat_text, lon_text):
        """A view with EXIF GPS fills empty truth fields, and says so."""
        gps = exif_gps(path) if path else None
        if gps is None:
            return gr.skip(), gr.skip(), gr.skip()
        if (lat_text or "").strip() or (lon_text or "").strip():
            note = f"This photo's EXIF GPS says {gps[0]:.5f}, {gps[1]:.5f}; the truth you entered was kept."
            return gr.skip(), gr.skip(), note
        note = f"📍 Truth read from the photo's EXIF GPS: {gps[0]:.5f}, {gps[1]:.5f} (edit it if wrong)."
        return f"{gps[0]:.6f}", f"{gps[1]:.6f}", note

    def cleared_outputs():
        """Empty results (after an error, so no stale answer stays next to new inputs, or on Clear)."""
        empty_map = maps.empty_map().to_json()
        empty = (empty_map, EMPTY_SUMMARY, "", gr.update(value=[], visible=False), None, None)
        return (*empty, *show_neighbours(None))  # the neighbours panel goes too

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
        truth_lat = gr.Textbox(label="True latitude (° N, optional)", placeholder="e.g. 45.8150 or 45,8150",
                               elem_id="predict-truth-lat", min_width=160)
        truth_lon = gr.Textbox(label="True longitude (° E, optional)", placeholder="e.g. 15.9819 or 15,9819",
                               elem_id="predict-truth-lon", min_width=160)
        with gr.Column(scale=2, min_width=240):
            hint = gr.HTML(TRUTH_HINT, js_on_load=CLICK_JS + REDRAW_SETUP_JS, elem_id="predict-truth-hint")
            truth_note = gr.Markdown("", elem_id="predict-truth-note")
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
        clear_button = gr.Button("Clear", variant="secondary", scale=1, elem_id="predict-clear")
    gr.Examples(
        examples(), inputs=[*views, truth_lat, truth_lon], label="Example locations (with their truth)",
        examples_per_page=3,
    )
    gr.Markdown(f"<small>{CREDIT}</small>")
    with gr.Row():
        figure = gr.Plot(maps.empty_map(), label="Prediction map (click it to set the truth)", scale=3,
                         elem_id="predict-map")
        figure_json = gr.Textbox(visible="hidden", lines=1, max_lines=1, container=False,
                                 elem_id="predict-figure-json")  # the map shown, drawn in place (REDRAW_JS)
        with gr.Column(scale=2):
            truth_result = gr.Markdown("", elem_id="predict-truth-result")
            summary = gr.Markdown(EMPTY_SUMMARY, elem_id="predict-summary")
    cams = gr.Gallery(label="Grad-CAM: what the model looked at", columns=4, height=260, visible=False,
                      elem_id="predict-cams")
    show_neighbours, neighbour_outputs = neighbours_panel.build(settings)
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
    results = [figure_json, summary, truth_result, cams, result, prediction_state, *neighbour_outputs]
    truth_inputs = [prediction_state, truth_lat, truth_lon, checkpoint_state]
    checkpoint.change(lambda c: c, checkpoint, checkpoint_state, api_visibility="private")
    # One click, four chained events: the API's prediction (shows its progress on the summary), then the
    # summary straight away (no queue, no figure), the map, the neighbours, and Grad-CAM last in the queue.
    predicted = button.click(
        predict,
        [*views, checkpoint_state],
        [result, prediction_state],
        api_name="predict",
        concurrency_id="model",
        show_progress_on=summary,
    )
    told = predicted.success(
        tell, [prediction_state, checkpoint_state, truth_lat, truth_lon], [summary, truth_result],
        api_visibility="private", queue=False, show_progress="hidden",
    )
    drawn = told.success(
        draw, [prediction_state, checkpoint_state, truth_lat, truth_lon], figure_json,
        api_visibility="private", queue=False, show_progress="hidden",
    )
    figure_json.change(None, [figure_json, figure], figure, js=REDRAW_JS, api_visibility="private",
                       queue=False, show_progress="hidden")
    drawn.success(
        show_neighbours, prediction_state, neighbour_outputs, api_visibility="private", queue=False
    )
    cammed = drawn.success(
        gradcam, [*views, checkpoint_state, show_cam], cams, api_visibility="private", concurrency_id="model"
    )
    for failed in (predicted, told, drawn, cammed):  # an error leaves no stale result next to the new inputs
        failed.failure(cleared_outputs, None, results, api_visibility="private", queue=False)
    clear_button.click(
        lambda: (*cleared_outputs(), *[None] * 4, "", "", ""),
        None,
        [*results, *views, truth_lat, truth_lon, truth_note],
        api_visibility="private",
        queue=False,
    )
    for box in (truth_lat, truth_lon):
        for event in (box.submit, box.blur):
            event(show_truth, truth_inputs, [figure_json, truth_result], api_visibility="private")
    hint.click(clicked, None, [truth_lat, truth_lon, truth_note], api_visibility="private", queue=False).then(
        show_truth, truth_inputs, [figure_json, truth_result], api_visibility="private"
    )
    for view in views:  # new photos make the shown result stale: it goes at once
        view.change(cleared_outputs, None, results, api_visibility="private", queue=False)
        view.upload(
            exif_truth, [view, truth_lat, truth_lon], [truth_lat, truth_lon, truth_note],
            api_visibility="private", queue=False,
        )
    upload_button.click(
        upload_checkpoint, [files, upload_name], [checkpoint, checkpoint_state], api_name="upload_checkpoint"
    )
    return {"checkpoint": checkpoint, "checkpoint_state": checkpoint_state, "view_names": VIEW_NAMES}
