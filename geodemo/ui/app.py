"""build_app(): the tabs composed into one gr.Blocks named `demo`, and the launch settings."""

from __future__ import annotations

import gradio as gr

from geodemo.jobs import JobManager
from geodemo.ui import evaluate_tab, label_tab, panorama_tab, play_tab, predict_tab, train_tab
from geodemo.ui.common import register_paths, theme
from geodemo.ui.settings import Settings
from geodemo.ui.train_tab import PROGRESS_CSS

MAX_FILE_SIZE = "25mb"
CONCURRENCY = 2  # queued events that run at once (launch); app.py sizes torch's thread pool by it
CSS = """
.gradio-container { max-width: 1280px !important; }
footer { display: none !important; }
"""
HEADER = (
    "## Where in Croatia?\nA street-level geolocation demo: predict from photos, label new locations, "
    "train and evaluate models — all offline."
)
FOOTER = (
    "<small>Map data © OpenStreetMap contributors (ODbL) · Made with Natural Earth · GeoNames (CC BY 4.0) · "
    "Elevation: GLOBE Task Team et al. 1999, NOAA NGDC. "
    "Example imagery © Google (LUMEN 2022 public sample).</small>"
)


def build_app(settings: Settings | None = None) -> gr.Blocks:
    """The whole app; `settings` default to the environment (see Settings.from_env)."""
    settings = settings or Settings.from_env()
    manager = JobManager(settings.jobs_dir)
    register_paths(settings.path_names())  # error messages name folders the way the user knows them
    ttl = settings.upload_ttl_s  # uploads and outputs in Gradio's cache are deleted after this long
    cleanup = (max(1, min(600, ttl // 2)), ttl)  # (every s, older than s)
    with gr.Blocks(title="geodemo: where in Croatia?", delete_cache=cleanup) as demo:
        gr.Markdown(HEADER)
        with gr.Tabs():
            with gr.Tab("Predict", id="predict") as predict_page:
                with gr.Tabs():
                    with gr.Tab("Four views", id="predict-views"):
                        predict = predict_tab.build(settings)
                    with gr.Tab("Panorama", id="predict-panorama"):
                        panorama_tab.build(predict["checkpoint_state"])
            with gr.Tab("Label", id="label") as label_page:
                label_tab.build(settings, predict["checkpoint_state"])
            with gr.Tab("Train", id="train") as train_page:
                train_tab.build(settings, manager)
            with gr.Tab("Evaluate", id="evaluate") as evaluate_page:
                evaluate = evaluate_tab.build(settings, manager)
            with gr.Tab("Play", id="play"):
                play_tab.build(settings, predict["checkpoint_state"])
        gr.Markdown(FOOTER)

        # A finished training job's checkpoint shows up in every selector when any tab is opened.
        selectors = [predict["checkpoint"], evaluate["checkpoint"]]

        def refresh_checkpoints():
            return [gr.update(choices=settings.checkpoint_choices()) for _ in selectors]

        for page in (predict_page, label_page, train_page, evaluate_page):
            page.select(refresh_checkpoints, None, selectors, api_visibility="private", queue=False)
    demo.geodemo_settings = settings
    demo.geodemo_jobs = manager
    return demo


def launch_kwargs(demo: gr.Blocks) -> dict:
    """launch() arguments: offline theme, upload limit, and only the app's own folders reachable.

    Of the data roots and the labels folder only the images are served: never data.csv, the lock or the
    store's temporary files. Gradio resolves symlinks first, so none leads out of these folders.
    """
    settings: Settings = demo.geodemo_settings
    from geodemo.data import images_dir
    from geodemo.geo import ASSETS_DIR
    from geodemo.ui.map_layers import routes as layer_routes
    from geodemo.ui.rest import routes as rest_routes

    allowed = [ASSETS_DIR, *(images_dir(r) for r in [settings.labels_dir, *settings.data_roots])]
    allowed.append(settings.uploads_dir)  # datasets unpacked from uploaded zips (random folder names)
    return {
        "theme": theme(),
        "css": CSS + PROGRESS_CSS,
        "js": label_tab.SHORTCUT_JS,
        "max_file_size": MAX_FILE_SIZE,
        "allowed_paths": [str(p) for p in dict.fromkeys(allowed)],
        "state_session_capacity": settings.max_sessions,  # each session's state costs memory: keep the newest
        # POST /api/v1/predict; GET the maps' static GeoJSON layers (figures then carry only their URLs)
        "app_kwargs": {"routes": rest_routes(settings, MAX_FILE_SIZE, CONCURRENCY) + layer_routes()},
        "show_error": True,
    }


def launch(demo: gr.Blocks, **overrides):
    """Queue (two events at a time; one model call at a time per concurrency id) and launch."""
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=64)
    return demo.launch(**{**launch_kwargs(demo), **overrides})
