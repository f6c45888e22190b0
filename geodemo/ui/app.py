"""build_app(): the tabs composed into one gr.Blocks named `demo`, and the launch settings."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from geodemo.data import VIEW_SUFFIXES
from geodemo.jobs import JobManager
from geodemo.ui import evaluate_tab, label_tab, panorama_tab, play_tab, predict_tab, train_tab
from geodemo.ui.common import OWNER_COOKIE, register_paths, theme
from geodemo.ui.settings import Settings
from geodemo.ui.widgets import PROGRESS_CSS

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
        with gr.Tabs(overflow_behavior="wrap"):  # a phone shows every tab, none behind a "⋯" menu
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
        for selector in selectors:  # a checkpoint uploaded or trained since the page loaded is accepted too
            selector.preprocess = _current_checkpoint(settings)
    demo.geodemo_settings = settings
    demo.geodemo_jobs = manager
    return demo


def _current_checkpoint(settings: Settings):
    """A checkpoint selector's preprocess that checks the value against the checkpoints there are now, not
    the list the page was built with (else an API call could not name a just-uploaded checkpoint)."""

    def preprocess(payload):
        if payload is None or payload in {path for _, path in settings.checkpoint_choices()}:
            return payload
        raise gr.Error(f"Checkpoint {Path(str(payload)).name!r} is not one of the available checkpoints; "
                       "pick one from the list.", print_exception=False)

    return preprocess


class DataFileGuard:
    """ASGI middleware: Gradio's file route serves only view images out of the data folders.

    Under `roots` (uploads, labels, data roots) a file is served only when it is a view,
    ``.../images|data/<id>/<file>.jpg|.jpeg|.png`` with no hidden part: never data.csv (ground truth),
    a lock or a temporary file. Everything else is Gradio's own allow-list.
    """

    def __init__(self, app, roots: list[str]):
        self.app = app
        self.roots = [os.path.realpath(r) for r in roots]

    def refused(self, raw: str) -> bool:
        """True when `raw` (the requested path) lies in a data folder and is not a view image."""
        target = os.path.realpath(raw)
        for root in self.roots:
            if os.path.commonpath([target, root]) == root:
                parts = Path(os.path.relpath(target, root)).parts
                view = (len(parts) >= 3 and parts[-3] in ("images", "data")
                        and Path(target).suffix.lower() in VIEW_SUFFIXES)
                return not view or any(part.startswith(".") for part in parts)
        return False

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "") if scope["type"] == "http" else ""
        found = re.search(r"/file(?:=|/)(.+)$", path)
        if found and self.refused(found.group(1)):
            body = b'{"error": "Only view images of the datasets are served."}'
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


class OwnerCookie:
    """ASGI middleware: the app's page sets a random `OWNER_COOKIE` when the browser has none, so the jobs
    and checkpoints a visitor makes stay theirs across reloads (geodemo.ui.common.session_owner)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "GET" or scope.get("path") not in ("/", ""):
            return await self.app(scope, receive, send)
        cookies = b"; ".join(v for k, v in scope.get("headers", []) if k == b"cookie").decode("latin-1")
        if re.search(rf"(?:^|;\s*){OWNER_COOKIE}=[0-9a-f]{{32}}(?:;|$)", cookies):
            return await self.app(scope, receive, send)
        cookie = f"{OWNER_COOKIE}={secrets.token_hex(16)}; Path=/; HttpOnly; SameSite=Lax".encode()

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def launch_kwargs(demo: gr.Blocks) -> dict:
    """launch() arguments: offline theme, upload limit, and only the app's own folders reachable.

    Of the data roots, the labels folder and the uploaded datasets only the view images are served: never
    data.csv, the lock or the store's temporary files (DataFileGuard). Gradio resolves symlinks first, so
    none leads out of these folders.
    """
    settings: Settings = demo.geodemo_settings
    from geodemo.data import images_dir
    from geodemo.paths import ASSETS_DIR
    from geodemo.ui.map_layers import routes as layer_routes
    from geodemo.ui.rest import routes as rest_routes

    allowed = [ASSETS_DIR, *(images_dir(r) for r in [settings.labels_dir, *settings.data_roots])]
    allowed.append(settings.uploads_dir)  # datasets unpacked from uploaded zips (random folder names)
    guarded = [settings.uploads_dir, settings.labels_dir, *settings.data_roots]  # views only, never data.csv
    return {
        "theme": theme(),
        "css": CSS + PROGRESS_CSS + label_tab.CSS + evaluate_tab.CSS + play_tab.CSS + train_tab.CSS,
        "js": label_tab.SHORTCUT_JS,
        "max_file_size": MAX_FILE_SIZE,
        "allowed_paths": [str(p) for p in dict.fromkeys(allowed)],
        "state_session_capacity": settings.max_sessions,  # each session's state costs memory: keep the newest
        # POST /api/v1/predict; GET the maps' static GeoJSON layers (figures then carry only their URLs)
        "app_kwargs": {
            "routes": rest_routes(settings, MAX_FILE_SIZE, CONCURRENCY) + layer_routes(),
            "middleware": [Middleware(DataFileGuard, roots=[str(p) for p in guarded]),
                           Middleware(OwnerCookie)],
        },
        "show_error": True,
    }


def launch(demo: gr.Blocks, **overrides):
    """Queue (two events at a time; one model call at a time per concurrency id) and launch."""
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=64)
    return demo.launch(**{**launch_kwargs(demo), **overrides})
