"""Small pieces shared by the tabs: user-facing errors, the view input, the offline theme."""

from __future__ import annotations

import functools
import html
import logging
import os
import re
import tempfile
from pathlib import Path

import gradio as gr

log = logging.getLogger("geodemo.ui")
_PATH_NAMES: dict[Path, str] = {}  # folder -> the name users know it by (register_paths)
_ABSOLUTE = re.compile(r"(?<![\w./:])/[^\s'\"`,;()]+/[^\s'\"`,;()]+")  # /two/or/more/parts
VIEW_NAMES = ("north", "east", "south", "west")  # API parameter names, in VIEW_HEADINGS order
VIEW_LABELS = ("North (0°)", "East (90°)", "South (180°)", "West (270°)")
OWNER_COOKIE = "geodemo_owner"  # a random browser token: who owns jobs and uploads (session_owner)
OWNER_TOKEN = re.compile(r"[0-9a-f]{32}")


def register_paths(names: dict) -> None:
    """Folders error messages should name in words (e.g. labels dir -> "the labels folder")."""
    _PATH_NAMES.update({Path(k): str(v) for k, v in names.items()})


def _display_path(raw: str) -> str:
    path = Path(raw)
    for root, name in sorted(_PATH_NAMES.items(), key=lambda kv: -len(str(kv[0]))):
        if path == root:
            return name
        if path.is_relative_to(root):
            rel = path.relative_to(root)
            if rel.parts[0].startswith(".upload-"):  # a checkpoint upload being checked
                return f"the uploaded {Path(*rel.parts[1:]) if len(rel.parts) > 1 else 'checkpoint'}"
            return f"{rel} in {name}"
    uploads = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")
    if path.is_relative_to(uploads) or path.is_relative_to(tempfile.gettempdir()):
        return f"the uploaded file {path.name}"
    return path.name or raw


def display_paths(text: str) -> str:
    """`text` with every absolute server path replaced by a name the user knows (no /root, no temp dirs)."""

    def one(match: re.Match) -> str:
        raw = match.group(0)
        stripped = raw.rstrip(".:")
        before, after = text[match.start() - 1: match.start()], text[match.end(): match.end() + 1]
        if before in ("'", '"') and after == before and not os.path.lexists(raw):
            return raw  # a quoted name that is no server file: the user's own text (an archive entry, say)
        return _display_path(stripped) + raw[len(stripped):]

    text = _ABSOLUTE.sub(one, text)
    for name in set(_PATH_NAMES.values()):  # never "the labels folder the labels folder"
        text = text.replace(f"{name.removeprefix('the ')} {name}", name.removeprefix("the "))
    return text


def session_owner(single_user: bool, request: gr.Request | None = None) -> str | None:
    """Who is acting, for job and checkpoint ownership: None in single-user mode (anyone may act on
    anything), else the browser: its random `OWNER_COOKIE` (set by the app on the first page load, so a
    reload keeps it), or else Gradio's session hash (one per page load or gradio_client).

    `request` defaults to the one of the event being run (for callbacks wrapped in functools.partial,
    which Gradio cannot hand a gr.Request).
    """
    if single_user:
        return None
    if request is None:
        from gradio.context import LocalContext

        request = LocalContext.request.get(None)
    token = str((getattr(request, "cookies", None) or {}).get(OWNER_COOKIE, ""))
    if OWNER_TOKEN.fullmatch(token):
        return f"browser-{token}"
    return str(getattr(request, "session_hash", None) or "anonymous")


def as_text(value) -> str:
    """`value` as literal text in Markdown/HTML: HTML escaped, Markdown markup characters backslashed."""
    return re.sub(r"([\\`*_{}\[\]<>()#+!|~])", r"\\\1", html.escape(str(value), quote=False))


def user_errors(fn):
    """Turn library ValueErrors into one-sentence gr.Error; anything else into a short generic one.

    Tracebacks go to the server log, never to the page.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ValueError as exc:
            message = display_paths(str(exc).strip())
            raise gr.Error(message or "That input is not valid.", print_exception=False) from None
        except Exception as exc:  # noqa: BLE001 - the page gets a sentence, the log the traceback
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(
                f"Something went wrong ({type(exc).__name__}); the details are in the server log.",
                print_exception=False,
            ) from None

    return wrapper


def _path_only(payload):
    """Preprocess of a view input: the uploaded file's path (str) or None, without opening it.

    geodemo.images.load_rgb is the only way an image enters the system: it gives the clear error for a
    broken file, where gr.Image's own PIL.open would raise an opaque one first.
    """
    return None if payload is None or payload.path is None else str(payload.path)


def view_inputs(prefix: str, height: int = 190) -> list[gr.Image]:
    """Four labelled image inputs N, E, S, W in one row (elem_id f"{prefix}-north" etc.)."""
    images = []
    with gr.Row(equal_height=True):
        for name, label in zip(VIEW_NAMES, VIEW_LABELS):
            image = gr.Image(type="filepath", label=label, height=height, sources=["upload", "clipboard"],
                             elem_id=f"{prefix}-{name}", min_width=140)
            image.preprocess = _path_only  # on the instance: a subclass would make Gradio write a .pyi stub
            images.append(image)
    return images


def views_dict(*paths) -> dict[int, str | None]:
    """(north, east, south, west) paths -> {0: p, 90: p, 180: p, 270: p}."""
    return dict(zip((0, 90, 180, 270), paths))


def theme() -> gr.themes.Base:
    """A theme with system fonts only: the default one would load Google Fonts (a request off-host)."""
    return gr.themes.Soft(
        primary_hue="blue",
        neutral_hue="slate",
        font=[gr.themes.Font("system-ui"), gr.themes.Font("Segoe UI"), "sans-serif"],
        font_mono=[gr.themes.Font("ui-monospace"), gr.themes.Font("monospace")],
    )
