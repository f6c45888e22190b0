"""Predict tab: four views -> map, summary, Grad-CAM; the lean `/predict` API; checkpoint upload.

Every output belongs to the inputs that made it: new photos clear the result (and a truth given for the
previous photos), a failed step clears it too, and a typed truth is scored once both numbers are in.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from geodemo import maps
from geodemo.checkpoint import install_checkpoint
from geodemo.data import read_locations, view_paths
from geodemo.predict import Predictor
from geodemo.truth import exif_gps, parse_truth
from geodemo.ui import neighbours_panel
from geodemo.ui.common import (
    VIEW_LABELS,
    VIEW_NAMES,
    session_owner,
    user_errors,
    view_inputs,
    views_dict,
)
from geodemo.ui.settings import EXAMPLES_DIR, Settings
from geodemo.ui.widgets import (
    EMPTY_SUMMARY,
    TRUTH_DEBOUNCE_JS,
    TRUTH_HINT,
    check_photo,
    gradcam_items,
    map_fit_js,
    phone_gallery_css,
    result_figure,
    summary_markdown,
    truth_fields,
    truth_markdown,
    typed_truth,
)

INTRO = (
    "Upload up to four street-level photos of one place (camera facing north, east, south and west; "
    "any may be missing) and the model guesses where in Croatia they were taken."
)
CREDIT = (
    "Examples: three real locations from the public LUMEN 2022 sample; imagery © Google. "
    "Maps: © OpenStreetMap contributors (ODbL), Natural Earth, GeoNames (CC BY 4.0)."
)
MAP_TITLE = "**Prediction map** · <small>click it to set the truth</small>"
HALF_TYPED = "Enter the other true coordinate too to see the error in km."
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
# Gradio has re-mounted since, so a re-mounted Plot never keeps showing an older value. A narrow map zooms
# out to keep all of Croatia in view (widgets.map_fit_js, included before this).
REDRAW_SETUP_JS = """
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
  const fig = window.__geodemoFigure;
  if (!fig || !window.Plotly || !gd || !gd._fullLayout || gd.__geodemoShown === fig) return;
  if (gd.__geodemoShown === undefined && window.__geodemoPlotValue === fig) gd.__geodemoShown = fig;
  else window.__geodemoRedraw(gd, fig);
}, 400);
"""


def examples() -> list[list[str | None]]:
    """The bundled example locations as [north, east, south, west, true latitude, true longitude]."""
    rows = []
    for row in read_locations(EXAMPLES_DIR).itertuples():
        paths = view_paths(EXAMPLES_DIR, row.uuid)
        files = [str(paths[v]) if v in paths else None for v in range(4)]  # view index order N, E, S, W
        rows.append([*files, f"{row.latitude:.6f}", f"{row.longitude:.6f}"])
    return rows


# --- Callbacks (wired in build) ---------------------------------------------------------------------


@user_errors
def predict(north, east, south, west, checkpoint):
    """The `/predict` API: decode, one batched forward pass, JSON (the map is a chained event)."""
    prediction = Predictor.load(checkpoint).predict(views_dict(north, east, south, west))
    return prediction.to_json(), prediction


@user_errors
def tell(prediction, checkpoint, lat_text, lon_text):
    """The summary and the truth's error, first after the prediction (no figure, no Grad-CAM); marks the
    photos as predicted, so that new ones clear the truth given for these."""
    truth, warning = typed_truth(lat_text, lon_text)
    told = warning or truth_markdown(Predictor.load(checkpoint), prediction, truth)
    return summary_markdown(prediction), told, True


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
        cams = gradcam_items(overlays, dict(enumerate(VIEW_LABELS)))
    return gr.update(value=cams, visible=bool(cams))  # one view: one quarter-width tile, not a banner


@user_errors
def show_truth(prediction, lat_text, lon_text, checkpoint):
    """Enter in a truth field, or a map click: redraw the map with the truth and say the error."""
    if bool((lat_text or "").strip()) != bool((lon_text or "").strip()):  # half typed: a hint, no toast
        if prediction is None:
            return gr.skip(), HALF_TYPED
        return result_figure(Predictor.load(checkpoint), prediction, None).to_json(), HALF_TYPED
    truth = parse_truth(lat_text, lon_text)
    if prediction is None:
        return gr.skip(), truth_markdown(None, None, truth)
    predictor = Predictor.load(checkpoint)
    return result_figure(predictor, prediction, truth).to_json(), truth_markdown(predictor, prediction, truth)


@user_errors
def settled_truth(prediction, lat_text, lon_text, checkpoint):
    """Typing paused in a truth field: score the truth only when both numbers parse (a place in Croatia);
    otherwise the previous truth's result goes, with no warning while the user is still typing."""
    truth, _ = typed_truth(lat_text, lon_text, settled=True)
    if truth is None:
        if prediction is None:
            return gr.skip(), ""
        return result_figure(Predictor.load(checkpoint), prediction, None).to_json(), ""
    return show_truth(prediction, lat_text, lon_text, checkpoint)


def clicked(evt: gr.EventData):
    """A click on the result map: its point becomes the truth."""
    data = evt._data or {}
    return f"{data.get('lat', '')}", f"{data.get('lon', '')}", ""


@user_errors
def photo_uploaded(path, lat_text, lon_text, predicted, view: str):
    """A new photo: refused from its header at once when unreadable (an error; the view is then emptied by
    a chained event); a truth given for the previous (predicted) photos goes; EXIF GPS fills empty truth
    fields and says so. Fields it does not change are skipped, never echoed back (the user may have typed
    since). The view itself is never an output here: an update would replace the session's copy of the
    input, and with it `_path_only`, Gradio's PIL decode would come back.

    Returns updates for (truth lat, truth lon, truth note, predicted flag).
    """
    check_photo(path, f"The {view} photo ({Path(path).name})" if path else view)
    lat, lon, note = ("", "", "") if predicted else (gr.skip(), gr.skip(), gr.skip())
    gps = exif_gps(path) if path else None
    if gps is not None and (predicted or not ((lat_text or "").strip() or (lon_text or "").strip())):
        note = f"📍 Truth read from the photo's EXIF GPS: {gps[0]:.5f}, {gps[1]:.5f} (edit it if wrong)."
        return f"{gps[0]:.6f}", f"{gps[1]:.6f}", note, False
    if gps is not None:
        note = f"This photo's EXIF GPS says {gps[0]:.5f}, {gps[1]:.5f}; the truth you entered was kept."
    return lat, lon, note, False


def cleared_outputs() -> tuple:
    """Empty results (after an error, so no stale answer stays next to new inputs, or on Clear)."""
    empty = (maps.empty_map().to_json(), EMPTY_SUMMARY, "", gr.update(value=[], visible=False), None, None)
    return (*empty, *neighbours_panel.hidden())


def _upload_checkpoint_fn(settings: Settings):
    @user_errors
    def upload_checkpoint(files, name, request: gr.Request):
        """Validate an uploaded model.safetensors + config.json and add it to the selectors."""
        out = install_checkpoint(files, name, settings.checkpoints_dir,
                                 owner=session_owner(settings.single_user, request))
        gr.Info(f"Checkpoint {out.name!r} added.")
        return gr.update(choices=settings.checkpoint_choices(), value=str(out)), str(out)

    return upload_checkpoint


# --- Layout and events -----------------------------------------------------------------------------


def _layout(settings: Settings, default: str) -> dict:
    """The tab's components by name."""
    c = {"intro": gr.Markdown(INTRO), "views": view_inputs("predict")}
    with gr.Row(equal_height=True):
        c["truth_lat"], c["truth_lon"] = truth_fields("predict")
        with gr.Column(scale=2, min_width=240):
            js = (map_fit_js("predict-map") + CLICK_JS + REDRAW_SETUP_JS
                  + TRUTH_DEBOUNCE_JS.replace("PREFIX", "predict"))
            c["hint"] = gr.HTML(TRUTH_HINT, js_on_load=js, elem_id="predict-truth-hint",
                                head=phone_gallery_css("predict-cams", "predict-neighbours"))
            c["truth_note"] = gr.Markdown("", elem_id="predict-truth-note")
    with gr.Row(equal_height=True):
        c["checkpoint"] = gr.Dropdown(settings.checkpoint_choices(), value=default, label="Model checkpoint",
                                      scale=3, elem_id="predict-checkpoint")
        c["show_cam"] = gr.Checkbox(value=True, label="Grad-CAM overlays", scale=1)
        c["button"] = gr.Button("Predict", variant="primary", scale=1, elem_id="predict-button")
        c["clear"] = gr.Button("Clear", variant="secondary", scale=1, elem_id="predict-clear")
    gr.Examples(examples(), inputs=[*c["views"], c["truth_lat"], c["truth_lon"]],
                label="Example locations (with their truth)", examples_per_page=3)
    gr.Markdown(f"<small>{CREDIT}</small>")
    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown(MAP_TITLE, elem_id="predict-map-title")  # above the map, not over Međimurje
            c["figure"] = gr.Plot(maps.empty_map(), show_label=False, elem_id="predict-map")
        c["figure_json"] = gr.Textbox(visible="hidden", lines=1, max_lines=1, container=False,
                                      elem_id="predict-figure-json")  # the map shown, drawn in place
        with gr.Column(scale=2):
            c["truth_result"] = gr.Markdown("", elem_id="predict-truth-result")
            c["summary"] = gr.Markdown(EMPTY_SUMMARY, elem_id="predict-summary")
    c["cams"] = gr.Gallery(label="Grad-CAM: what the model looked at", columns=4, height=260, visible=False,
                           object_fit="contain", fit_columns=False, elem_id="predict-cams")  # 1 view: 1/4
    c["show_neighbours"], c["neighbour_outputs"] = neighbours_panel.build(settings)
    with gr.Accordion("API response (JSON)", open=False):
        c["result"] = gr.JSON(label="/predict result")
    with gr.Accordion("Upload a checkpoint (model.safetensors + config.json)", open=False), gr.Row():
        c["files"] = gr.File(file_count="multiple", file_types=[".safetensors", ".json"], label="Files",
                             scale=3)
        with gr.Column(scale=1):
            c["upload_name"] = gr.Textbox(label="Name", placeholder="my-model")
            c["upload_button"] = gr.Button("Validate and add")
    return c


def build(settings: Settings) -> dict:
    """Lay out the tab and wire its events; returns the components other tabs need."""
    default = str(settings.default_checkpoint)
    checkpoint_state = gr.State(default)  # the API path always uses the app's default checkpoint
    c = _layout(settings, default)
    views, truth_lat, truth_lon, summary = c["views"], c["truth_lat"], c["truth_lon"], c["summary"]
    prediction_state, predicted = gr.State(None), gr.State(False)  # predicted: the photos shown have a result
    results = [c["figure_json"], summary, c["truth_result"], c["cams"], c["result"], prediction_state,
               *c["neighbour_outputs"]]
    truth_inputs = [prediction_state, truth_lat, truth_lon, checkpoint_state]
    truth_outputs = [c["figure_json"], c["truth_result"]]
    quiet = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}
    c["checkpoint"].change(lambda x: x, c["checkpoint"], checkpoint_state, api_visibility="private")
    # One click, chained events: the API's prediction (its progress shown on the summary), then the summary
    # straight away (no queue, no figure), the map, the neighbours, and Grad-CAM last in the queue.
    predicted_event = c["button"].click(predict, [*views, checkpoint_state], [c["result"], prediction_state],
                                        api_name="predict", concurrency_id="model", show_progress_on=summary)
    told = predicted_event.success(tell, [prediction_state, checkpoint_state, truth_lat, truth_lon],
                                   [summary, c["truth_result"], predicted], **quiet)
    drawn = told.success(draw, [prediction_state, checkpoint_state, truth_lat, truth_lon], c["figure_json"],
                         **quiet)
    c["figure_json"].change(None, [c["figure_json"], c["figure"]], c["figure"], js=REDRAW_JS, **quiet)
    drawn.success(c["show_neighbours"], prediction_state, c["neighbour_outputs"], api_visibility="private",
                  queue=False)
    cammed = drawn.success(gradcam, [*views, checkpoint_state, c["show_cam"]], c["cams"],
                           api_visibility="private", concurrency_id="model")
    for failed in (predicted_event, told, drawn, cammed):  # an error leaves no stale result beside new inputs
        failed.failure(cleared_outputs, None, results, api_visibility="private", queue=False)
    c["clear"].click(lambda: (*cleared_outputs(), *[None] * 4, "", "", "", False), None,
                     [*results, *views, truth_lat, truth_lon, c["truth_note"], predicted],
                     api_visibility="private", queue=False)
    for box in (truth_lat, truth_lon):  # Enter scores at once; a pause in typing scores a finished pair
        box.submit(show_truth, truth_inputs, truth_outputs, api_visibility="private")
    c["hint"].submit(settled_truth, truth_inputs, truth_outputs, api_visibility="private",
                     trigger_mode="always_last")
    c["hint"].click(clicked, None, [truth_lat, truth_lon, c["truth_note"]], api_visibility="private",
                    queue=False).then(show_truth, truth_inputs, truth_outputs, api_visibility="private")
    for view, name in zip(views, VIEW_NAMES):  # new photos make the shown result stale: it goes at once
        view.change(cleared_outputs, None, results, api_visibility="private", queue=False)
        checked = view.upload(lambda p, a, b, f, n=name: photo_uploaded(p, a, b, f, n),  # queued: a toast
                              [view, truth_lat, truth_lon, predicted],
                              [truth_lat, truth_lon, c["truth_note"], predicted], api_visibility="private",
                              show_progress="hidden")
        checked.failure(lambda: None, None, view, **quiet)  # a refused photo leaves the input
    c["upload_button"].click(_upload_checkpoint_fn(settings), [c["files"], c["upload_name"]],
                             [c["checkpoint"], checkpoint_state], api_name="upload_checkpoint")
    return {"checkpoint": c["checkpoint"], "checkpoint_state": checkpoint_state, "view_names": VIEW_NAMES}
