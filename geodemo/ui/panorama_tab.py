"""Predict > Panorama sub-tab: one 360° equirectangular image -> the four views the model saw -> the same
result panel as Four views (map with credible regions, summary, truth and its error, Grad-CAM).

`/predict_panorama` (image, centre heading) returns the same JSON as `/predict`. A new or refused upload,
or a new heading, clears everything computed from the previous one.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from PIL import Image

from geodemo import maps
from geodemo.images import FORMATS
from geodemo.panorama import VIEW_FOV_DEG, check_equirectangular, predict_panorama
from geodemo.predict import Predictor
from geodemo.truth import parse_truth
from geodemo.ui.common import _path_only, user_errors
from geodemo.ui.settings import EXAMPLES_DIR
from geodemo.ui.widgets import (
    EMPTY_SUMMARY,
    TRUTH_DEBOUNCE_JS,
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

EXAMPLE = EXAMPLES_DIR / "panorama.jpg"
INTRO = (
    "Upload one **360° equirectangular panorama** (2:1, e.g. a Street View or phone 360° photo). It is cut "
    f"into the four {VIEW_FOV_DEG:.0f}° views the model was trained on — north, east, south, west — and "
    "those crops are predicted like four uploaded photos."
)
HEADING_INFO = (
    "Compass heading the centre of the panorama faces, ° clockwise from north. Street View panoramas "
    "start facing the car's direction, so 0 is right only for a car driving north."
)
TRUTH_HINT = "<small>Optional: the true place, to see the error in km (scored on a pause or Enter).</small>"
VIEW_CAPTIONS = {0: "North (0°)", 90: "East (90°)", 180: "South (180°)", 270: "West (270°)"}
CAM_CAPTIONS = dict(enumerate(VIEW_CAPTIONS.values()))  # Grad-CAM overlays come by view index


@user_errors
def predict(panorama, heading, checkpoint):
    """The `/predict_panorama` API: cut, one batched forward pass, the /predict JSON."""
    if panorama is None:
        raise ValueError("Upload a 360° panorama first (an equirectangular image twice as wide as high).")
    heading = 0.0 if heading is None else heading
    prediction, views = predict_panorama(Predictor.load(checkpoint), panorama, heading)
    return prediction.to_json(), prediction, views


@user_errors
def render(prediction, views, checkpoint, lat_text, lon_text):
    """The map (credible regions, truth), the summary, the crops and the truth's error."""
    predictor = Predictor.load(checkpoint)
    truth, warning = typed_truth(lat_text, lon_text)
    crops = [(views[h], VIEW_CAPTIONS.get(h, f"{h}°")) for h in sorted(views)]
    told = warning or truth_markdown(predictor, prediction, truth)
    return result_figure(predictor, prediction, truth), summary_markdown(prediction), crops, told


@user_errors
def gradcam(views, checkpoint, show_cam):
    """Grad-CAM overlays of the four crops, last in the chain."""
    if not (show_cam and views):
        return gr.update(value=[], visible=False)
    cams = gradcam_items(Predictor.load(checkpoint).gradcam(views), CAM_CAPTIONS)
    return gr.update(value=cams, visible=bool(cams))


@user_errors
def show_truth(prediction, lat_text, lon_text, checkpoint, settled=False):
    """A truth typed (Enter, or a pause with both numbers in): redraw the map with it and say the error.

    On a pause (`settled`) an unfinished pair is not scored and not warned about: the old truth's result goes.
    """
    truth = typed_truth(lat_text, lon_text, settled=True)[0] if settled else parse_truth(lat_text, lon_text)
    if prediction is None:
        return gr.skip(), truth_markdown(None, None, truth)
    predictor = Predictor.load(checkpoint)
    return result_figure(predictor, prediction, truth), truth_markdown(predictor, prediction, truth)


def cleared() -> tuple:
    """Empty results: map, summary, crops, truth result, Grad-CAM, JSON, prediction and views state."""
    return (maps.empty_map(), EMPTY_SUMMARY, [], "", gr.update(value=[], visible=False), None, None, None)


@user_errors
def uploaded(path, predicted):
    """A new panorama: refused from its header at once when it is not a readable 2:1 image (an error; the
    image is then emptied by a chained event); a truth given for the previous (predicted) one goes, a truth
    typed for this one stays. Never outputs the image itself (an update would drop its `_path_only`).

    Returns updates for (truth lat, truth lon, predicted flag).
    """
    if path is not None:
        name = f"the panorama ({Path(path).name})"
        check_photo(path, name)  # the format allow-list and size limits of geodemo.images
        with Image.open(path, formats=FORMATS) as image:  # checked above: only the header's size is read
            check_equirectangular(*image.size, name)
    return *(("", "") if predicted else (gr.skip(), gr.skip())), False


def refused(predicted):
    """After a refused upload: the image goes, and so does a truth given for the previous panorama.

    The image's update is a plain None (not gr.update), which keeps the session's input and its `_path_only`.
    """
    return None, *(("", "") if predicted else (gr.skip(), gr.skip())), False


def build(checkpoint_state: gr.State) -> dict:
    """Lay out the sub-tab and wire its events; predicts with the Predict tab's selected checkpoint."""
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=3):
            image = gr.Image(type="filepath", label="360° panorama (2:1 equirectangular)", height=260,
                             sources=["upload", "clipboard"], elem_id="panorama-image")
            image.preprocess = _path_only  # geodemo.images.load_rgb gives the clear error for a bad file
        with gr.Column(scale=1, min_width=200):
            heading = gr.Number(value=0, label="Panorama centre heading (°)", info=HEADING_INFO,
                                elem_id="panorama-heading")
            show_cam = gr.Checkbox(value=True, label="Grad-CAM overlays")
            button = gr.Button("Predict panorama", variant="primary", elem_id="panorama-button")
    with gr.Row(equal_height=True):
        truth_lat, truth_lon = truth_fields("panorama")
        js = map_fit_js("panorama-map") + TRUTH_DEBOUNCE_JS.replace("PREFIX", "panorama")
        hint = gr.HTML(TRUTH_HINT, js_on_load=js,
                       elem_id="panorama-truth-hint", min_width=240,
                       head=phone_gallery_css("panorama-crops", "panorama-cams"))
    if EXAMPLE.exists():
        gr.Examples([[str(EXAMPLE), 0]], inputs=[image, heading], label="Example: a bundled location's four "
                    "views stitched into a panorama (grey above and below)")
    crops = gr.Gallery(label="The four views the model saw", columns=4, height=220, elem_id="panorama-crops",
                       preview=False)
    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown("**Prediction map**", elem_id="panorama-map-title")
            figure = gr.Plot(maps.empty_map(), show_label=False, elem_id="panorama-map")
        with gr.Column(scale=2):  # min_width: the summary wraps below the map on a phone
            truth_result = gr.Markdown("", elem_id="panorama-truth-result")
            summary = gr.Markdown(EMPTY_SUMMARY, elem_id="panorama-summary")
    cams = gr.Gallery(label="Grad-CAM: what the model looked at", columns=4, height=220, visible=False,
                      object_fit="contain", fit_columns=False, elem_id="panorama-cams")
    with gr.Accordion("API response (JSON)", open=False):
        result = gr.JSON(label="/predict_panorama result")

    prediction_state, views_state = gr.State(None), gr.State(None)
    predicted_flag = gr.State(False)  # the panorama shown has a result (a new one clears its truth)
    results = [figure, summary, crops, truth_result, cams, result, prediction_state, views_state]
    private = {"api_visibility": "private", "queue": False}
    truth_inputs = [prediction_state, truth_lat, truth_lon, checkpoint_state]
    predicted = button.click(predict, [image, heading, checkpoint_state],
                             [result, prediction_state, views_state], api_name="predict_panorama",
                             concurrency_id="model")
    rendered = predicted.success(
        render, [prediction_state, views_state, checkpoint_state, truth_lat, truth_lon],
        [figure, summary, crops, truth_result], api_name="predict_panorama_map",
        api_visibility="undocumented", concurrency_id="model",
    )
    cammed = rendered.success(gradcam, [views_state, checkpoint_state, show_cam], cams,
                              api_visibility="private", concurrency_id="model")
    rendered.success(lambda: True, None, predicted_flag, **private)
    for failed in (predicted, rendered, cammed):  # a refused panorama leaves no earlier result beside it
        failed.failure(cleared, None, results, **private)
    image.change(cleared, None, results, **private)  # new input: what the old one made goes at once
    heading.input(cleared, None, results, **private)
    image.upload(uploaded, [image, predicted_flag], [truth_lat, truth_lon, predicted_flag],
                 api_visibility="private",  # queued: a refusal shows as a toast
                 ).failure(refused, predicted_flag, [image, truth_lat, truth_lon, predicted_flag], **private)
    for box in (truth_lat, truth_lon):
        box.submit(show_truth, truth_inputs, [figure, truth_result], api_visibility="private")
    hint.submit(lambda *args: show_truth(*args, settled=True), truth_inputs, [figure, truth_result],
                api_visibility="private", trigger_mode="always_last")
    return {"image": image, "heading": heading}
