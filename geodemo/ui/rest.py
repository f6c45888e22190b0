"""REST beside the app: ``POST /api/v1/predict`` with multipart ``north/east/south/west`` (any subset).

It returns the ``/predict`` JSON, or an HTTP 4xx with ``{"error": "<one sentence>"}``. The route lives on
the FastAPI app that Gradio itself serves (``launch(app_kwargs={"routes": ...})``), so ``python app.py`` and a
Hugging Face Space serve it unchanged. Same model (the app's default checkpoint), size limit and image checks
as the Predict tab; no Gradio queue or client in between, so one request costs little beyond the model.
"""

from __future__ import annotations

import logging
import threading

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile

from geodemo.images import probe
from geodemo.predict import Predictor
from geodemo.ui.common import display_paths
from geodemo.ui.settings import Settings

log = logging.getLogger("geodemo.rest")
PATH = "/api/v1/predict"
FIELDS = ("north", "east", "south", "west")  # -> headings 0, 90, 180, 270
MAX_WAITING = 64  # requests beyond this many in flight get 503 (as the app's queue max_size)
SLOT_WAIT_S = 30.0  # a request that cannot get a model slot this long gets 503 instead of hanging


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def parse_size(text: str) -> int:
    """ "25mb" / "500kb" / "1gb" / bytes -> bytes (the notation of Gradio's ``max_file_size``)."""
    text = str(text).strip().lower()
    for suffix, factor in (("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10), ("b", 1)):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def routes(settings: Settings, max_file_size: str, concurrency: int) -> list[APIRoute]:
    """The REST routes for ``launch(app_kwargs={"routes": ...})``.

    Args:
        settings: the app's settings (its default checkpoint answers).
        max_file_size: per-image upload limit, as the app's ``max_file_size`` (e.g. "25mb").
        concurrency: model calls that run at once (the rest wait, up to MAX_WAITING in flight).
    """
    limit = parse_size(max_file_size)
    running = threading.BoundedSemaphore(concurrency)
    in_flight = [0]

    def run(views: dict) -> dict | None:
        # A slot is held only while this thread works, and the work is bounded (decode_budget: pixels and
        # a decode deadline), so a hostile image frees its slot within seconds; waiting is bounded too.
        for heading, data in views.items():  # refuse a non-photo from its header, before model or slot
            probe(data, f"the {heading} degree view")
        if not running.acquire(timeout=SLOT_WAIT_S):
            return None
        try:
            return Predictor.load(settings.default_checkpoint).predict(views).to_json()
        finally:
            running.release()

    async def predict(request: Request) -> JSONResponse:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return _error(
                415,
                "Send the views as multipart/form-data fields north, east, south and/or west, "
                "e.g. curl -F north=@0.jpg.",
            )
        if int(request.headers.get("content-length") or 0) > len(FIELDS) * limit + (1 << 20):
            return _error(
                413, f"The request is over {len(FIELDS)} images of {max_file_size}; send smaller images."
            )
        try:
            form = await request.form(max_files=len(FIELDS), max_fields=len(FIELDS))
        except Exception as exc:  # noqa: BLE001 - starlette raises several kinds for a bad multipart body
            return _error(400, f"The multipart body could not be read ({exc}); send up to four image fields.")
        views, seen = {}, set()
        for name, value in form.multi_items():
            if name not in FIELDS:
                return _error(400, f"Unknown field {name!r}; send north, east, south and/or west.")
            if not isinstance(value, UploadFile):
                return _error(
                    400, f"Field {name!r} is not a file; send the image itself (curl -F {name}=@file.jpg)."
                )
            if name in seen:
                return _error(400, f"Field {name!r} appears twice; send one image per direction.")
            seen.add(name)
            data = await value.read(limit + 1)
            if len(data) > limit:
                return _error(
                    413, f"The {name} image is over the {max_file_size} upload limit; send a smaller one."
                )
            views[FIELDS.index(name) * 90] = data
        if not views:
            return _error(400, "At least one view image is required: send north, east, south and/or west.")
        if in_flight[0] >= MAX_WAITING:
            return _error(503, "The server is busy; try again in a few seconds.")
        in_flight[0] += 1
        try:
            answer = await run_in_threadpool(run, views)
            if answer is None:
                return _error(503, f"The server is busy (no model slot free in {SLOT_WAIT_S:g} s); retry.")
            return JSONResponse(answer)
        except ValueError as exc:  # bad image, bad checkpoint: the library's one sentence
            return _error(400, display_paths(str(exc).strip()) or "That input is not valid.")
        except Exception as exc:  # noqa: BLE001 - the client gets a sentence, the log the traceback
            log.exception("unexpected error in %s", PATH)
            return _error(
                500, f"Something went wrong ({type(exc).__name__}); the details are in the server log."
            )
        finally:
            in_flight[0] -= 1

    return [APIRoute(PATH, predict, methods=["POST"], include_in_schema=False)]
