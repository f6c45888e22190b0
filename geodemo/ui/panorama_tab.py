"""Predict > Panorama sub-tab: one 360° equirectangular image -> the four views the model saw -> the map.

`/predict_panorama` (image, centre heading) returns the same JSON as `/predict`.
"""

from __future__ import annotations

import gradio as gr

from geodemo import maps
from geodemo.panorama import VIEW_FOV_DEG, predict_panorama
from geodemo.predict import Predictor
from geodemo.ui.common import _path_only, user_errors
from geodemo.ui.predict_tab import summary_markdown
from geodemo.ui.settings import EXAMPLES_DIR

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
VIEW_CAPTIONS = {0: "North (0°)", 90: "East (90°)", 180: "South (180°)", 270: "West (270°)"}


def build(checkpoint_state: gr.State) -> dict:
    """Lay out the sub-tab and wire its events; predicts with the Predict tab's selected checkpoint."""

    @user_errors
    def predict(panorama, heading, checkpoint):
        """The `/predict_panorama` API: cut, one batched forward pass, the /predict JSON."""
        if panorama is None:
            raise ValueError("Upload a 360° panorama first (an equirectangular image twice as wide as high).")
        heading = 0.0 if heading is None else heading
        prediction, views = predict_panorama(Predictor.load(checkpoint), panorama, heading)
        return prediction.to_json(), prediction, views

    @user_errors
    def render(prediction, views, checkpoint):
        figure = maps.prediction_figure(prediction, Predictor.load(checkpoint).cells)
        crops = [(views[h], VIEW_CAPTIONS.get(h, f"{h}°")) for h in sorted(views)]
        return figure, summary_markdown(prediction), crops

    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=3):
            image = gr.Image(
                type="filepath",
                label="360° panorama (2:1 equirectangular)",
                height=260,
                sources=["upload", "clipboard"],
                elem_id="panorama-image",
            )
            image.preprocess = _path_only  # geodemo.images.load_rgb gives the clear error for a bad file
        with gr.Column(scale=1, min_width=200):
            heading = gr.Number(
                value=0, label="Panorama centre heading (°)", info=HEADING_INFO, elem_id="panorama-heading"
            )
            button = gr.Button("Predict panorama", variant="primary", elem_id="panorama-button")
    if EXAMPLE.exists():
        gr.Examples(
            [[str(EXAMPLE), 0]],
            inputs=[image, heading],
            label="Example: a bundled location's four views stitched into a panorama (grey above and below)",
        )
    crops = gr.Gallery(
        label="The four views the model saw", columns=4, height=220, elem_id="panorama-crops", preview=False
    )
    with gr.Row():
        figure = gr.Plot(maps.empty_map(), label="Prediction map", scale=3, elem_id="panorama-map")
        with gr.Column(scale=2):  # min_width: the summary wraps below the map on a phone
            summary = gr.Markdown("Prediction summary appears here.", elem_id="panorama-summary")
    with gr.Accordion("API response (JSON)", open=False):
        result = gr.JSON(label="/predict_panorama result")

    prediction_state, views_state = gr.State(None), gr.State(None)
    button.click(
        predict,
        [image, heading, checkpoint_state],
        [result, prediction_state, views_state],
        api_name="predict_panorama",
        concurrency_id="model",
    ).success(
        render,
        [prediction_state, views_state, checkpoint_state],
        [figure, summary, crops],
        api_name="predict_panorama_map",
        api_visibility="undocumented",
        concurrency_id="model",
    )
    return {"image": image, "heading": heading}
