"""Label tab: load views (upload or walk a folder), click the map, save to the LabelStore; `/label` API.

Every location starts without a point: Save is enabled only once the user sets one for it (map click,
typed coordinates, a town or the model's suggestion), so a point never carries over to the next location.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from geodemo import geo, maps
from geodemo.active import order_by_uncertainty
from geodemo.data import DatasetError, images_dir, is_safe_id, view_paths
from geodemo.labels import LabelError, LabelStore, parse_degrees
from geodemo.predict import Predictor
from geodemo.ui.common import user_errors, view_inputs, views_dict
from geodemo.ui.settings import Settings

# The click map: an inline SVG re-rendered from `value` ({lat, lon}); projection params come as props.
# `vb` (viewBox) and `z` (zoom factor) are set by MAP_JS only, so a server update never resets the zoom.
MAP_TEMPLATE = """
<div class="label-map">
<div class="map-tools">
<button type="button" data-zoom="in" title="Zoom in" aria-label="Zoom in">+</button>
<button type="button" data-zoom="out" title="Zoom out" aria-label="Zoom out">&minus;</button>
<button type="button" data-zoom="reset" title="Whole country" aria-label="Whole country">&#10530;</button>
</div>
<svg viewBox="${typeof vb === 'string' ? vb : '0 0 ' + width + ' ' + height}"
  class="${typeof z === 'number' && z > 1.01 ? 'zoomed' : ''}"
  style="--z: ${typeof z === 'number' ? z : 1}" preserveAspectRatio="xMidYMid meet">
<rect class="sea" x="-2000" y="-2000" width="${width + 4000}" height="${height + 4000}"/>${shapes}
${value && value.lat != null ? `<g class="pin"
  transform="translate(${(value.lon - lon0) * kx},${(lat1 - value.lat) * ky})">
<circle class="pin-halo"/><circle class="pin-dot"/></g>` : ''}
</svg>
<div class="label-map-hint">${value && value.lat != null
  ? `${value.lat.toFixed(4)}° N, ${value.lon.toFixed(4)}° E`
  : 'Click the map where the photos were taken'} · scroll or +/&minus; to zoom, drag to pan</div>
</div>"""
MAP_CSS = """
.label-map { position: relative; }
.label-map svg { width: 100%; height: auto; max-height: 560px; cursor: crosshair; display: block;
  border-radius: 6px; }
.label-map svg.zoomed { touch-action: none; }
.label-map .sea { fill: #b9d6ee; }
.label-map .county { fill: #f3f6e8; stroke: #6f7f63; stroke-width: 0.8; vector-effect: non-scaling-stroke; }
.label-map .county:hover { fill: #e3edc9; }
.label-map .town { fill: #333; r: calc(5px / var(--z)); }
.label-map .town-label { font: calc(24px / var(--z)) system-ui, sans-serif; fill: #222;
  pointer-events: none; }
.label-map .country-label { font: 600 calc(20px / var(--z)) system-ui, sans-serif; fill: #8a8170;
  letter-spacing: 0.08em; pointer-events: none; }
.label-map .sea-label { font: italic calc(24px / var(--z)) system-ui, sans-serif; fill: #4f7fa8;
  pointer-events: none; }
.label-map .pin-halo { fill: rgba(214, 39, 40, 0.25); stroke: #d62728; stroke-width: 2;
  vector-effect: non-scaling-stroke; r: calc(11px / var(--z)); }
.label-map .pin-dot { fill: #d62728; r: calc(5px / var(--z)); }
.label-map .map-tools { position: absolute; top: 8px; left: 8px; display: flex; flex-direction: column;
  gap: 4px; z-index: 2; }
.label-map .map-tools button { width: 34px; height: 34px; font-size: 20px; line-height: 1; border-radius: 6px;
  border: 1px solid #8a9a80; background: rgba(255, 255, 255, 0.92); color: #222; cursor: pointer; }
.label-map-hint { text-align: center; font-size: 0.9em; color: #555; padding: 4px; }
"""
# A click becomes (lat, lon) through the SVG's own screen transform, so zoom and resizing are exact.
# Wheel and the +/- buttons zoom, a drag pans; a drag is not a click.
MAP_JS = """
const full = [0, 0, props.width, props.height];
let box = full.slice(), drag = null, dragged = false;
const svg = () => element.querySelector('svg');
const toSvg = (x, y) => {
  const pt = svg().createSVGPoint(); pt.x = x; pt.y = y;
  return pt.matrixTransform(svg().getScreenCTM().inverse());
};
const show = (b) => {
  const w = Math.min(full[2], b[2]), h = w * full[3] / full[2];
  const x = Math.min(Math.max(b[0], 0), full[2] - w), y = Math.min(Math.max(b[1], 0), full[3] - h);
  box = [x, y, w, h];
  props.z = full[2] / w;
  props.vb = box.map((v) => v.toFixed(2)).join(' ');
};
const zoomAt = (factor, cx, cy) => {
  const w = Math.min(full[2], Math.max(full[2] / 24, box[2] / factor));
  const s = w / box[2];
  show([cx - (cx - box[0]) * s, cy - (cy - box[1]) * s, w, box[3] * s]);
};
element.addEventListener('wheel', (ev) => {
  if (!ev.target.closest('svg')) return;
  ev.preventDefault();
  const p = toSvg(ev.clientX, ev.clientY);
  zoomAt(ev.deltaY < 0 ? 1.3 : 1 / 1.3, p.x, p.y);
}, {passive: false});
element.addEventListener('pointerdown', (ev) => {
  if (!ev.target.closest('svg') || ev.button > 0) return;
  drag = {x: ev.clientX, y: ev.clientY, box: box.slice(), scale: 1 / svg().getScreenCTM().a};
  dragged = false;
});
window.addEventListener('pointermove', (ev) => {
  if (!drag) return;
  const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
  if (!dragged && Math.hypot(dx, dy) < 6) return;
  dragged = true;
  show([drag.box[0] - dx * drag.scale, drag.box[1] - dy * drag.scale, drag.box[2], drag.box[3]]);
});
window.addEventListener('pointerup', () => { drag = null; });
element.addEventListener('click', (ev) => {
  const tool = ev.target.closest('[data-zoom]');
  if (tool) {
    const kind = tool.dataset.zoom;
    if (kind === 'reset') show(full);
    else zoomAt(kind === 'in' ? 2 : 0.5, box[0] + box[2] / 2, box[1] + box[3] / 2);
    return;
  }
  if (!ev.target.closest('svg') || dragged) { dragged = false; return; }
  const p = toSvg(ev.clientX, ev.clientY);
  const lat = Math.round((props.lat1 - p.y / props.ky) * 1e6) / 1e6;
  const lon = Math.round((props.lon0 + p.x / props.kx) * 1e6) / 1e6;
  props.value = {lat: lat, lon: lon};
  trigger('click', {lat: lat, lon: lon});
});
"""
NO_FOLDER = "No folder loaded: upload photos above, or load a folder."


def _coordinate(value) -> float | None:
    """A typed or clicked coordinate as degrees, or None when empty or not (yet) a number."""
    if value is None or str(value).strip() == "":
        return None
    try:
        return parse_degrees(value, "coordinate")
    except LabelError:
        return None


def _point(lat, lon) -> dict:
    lat, lon = _coordinate(lat), _coordinate(lon)
    ok = lat is not None and lon is not None
    return {"lat": lat, "lon": lon} if ok else {"lat": None, "lon": None}


def _point_set(lat, lon):
    """(map value, Save button): Save is enabled only once both coordinates are set."""
    point = _point(lat, lon)
    return point, gr.update(interactive=point["lat"] is not None)


def _raw(value):
    """Preprocess of the coordinate inputs: the value as sent (number, text or None)."""
    return value


def list_locations(folder: Path) -> list[str]:
    """Location ids (sub-folders holding at least one view) of a LUMEN-layout folder, sorted."""
    base = images_dir(folder)
    if not base.is_dir():
        raise DatasetError(f"{folder} has no images/ folder; point at a folder in the LUMEN layout.")
    ids = sorted(d.name for d in base.iterdir() if d.is_dir() and is_safe_id(d.name))
    ids = [i for i in ids if view_paths(folder, i)]
    if not ids:
        raise DatasetError(f"{base} holds no location folders with views; nothing to label.")
    return ids


def walk_view(walk: dict | None) -> tuple:
    """(north, east, south, west view paths, walk text) of the walk's current location.

    A walk is {"folder", "ids", "pos", "saved": [[pos, stored uuid], ...]}; pos == len(ids) is its end.
    """
    if not walk:
        return None, None, None, None, NO_FOLDER
    ids, pos = walk["ids"], walk["pos"]
    if pos >= len(ids):
        return None, None, None, None, (
            f"**Folder done**: all {len(ids)} locations were labelled or skipped. "
            "*Undo* or *◀ Previous* steps back."
        )
    paths = view_paths(Path(walk["folder"]), ids[pos])
    files = [str(paths[v]) if v in paths else None for v in range(4)]
    score = walk.get("scores", {}).get(ids[pos])  # most-uncertain-first walks (geodemo.active)
    note = f" · model's expected error **{score:.0f} {walk['unit']}**" if score is not None else ""
    return (*files, f"Location **{pos + 1} / {len(ids)}**: `{ids[pos]}`{note}")


def build(settings: Settings, checkpoint_state: gr.State) -> dict:
    """Lay out the tab and wire its events."""
    store = LabelStore(settings.labels_dir)
    towns = geo.places().sort_values("population", ascending=False)
    cleared = ("", "", gr.update(interactive=False))  # latitude, longitude, Save: a location without a point

    def progress_text() -> str:
        return f"**{store.count()}** locations labelled in `{store.root}`"

    @user_errors
    def label(north, east, south, west, latitude, longitude, request_id=None):
        """The `/label` API: store one location; refuses points outside Croatia.

        `request_id` (optional, from API clients): a retry with the same id returns the first result.
        """
        if _empty(latitude) or _empty(longitude):
            raise LabelError("Set the location first: click the map, pick a town or type the coordinates.")
        result = store.add(views_dict(north, east, south, west), latitude, longitude, request_id=request_id)
        return {"uuid": result.uuid, "count": result.count, "dataset": result.root}

    @user_errors
    def save_next(north, east, south, west, latitude, longitude, walk):
        """Save & next (the UI): store this location, then show the next one without a point."""
        if _empty(latitude) or _empty(longitude):
            raise LabelError("Set this location's point first: click the map, pick a town or type it.")
        here = walk if walk and walk["pos"] < len(walk["ids"]) else None
        source = here["ids"][here["pos"]] if here else None
        result = store.add(views_dict(north, east, south, west), latitude, longitude, source_uuid=source)
        saved = {"uuid": result.uuid, "count": result.count, "dataset": result.root}
        if here:
            history = [*here.get("saved", []), [here["pos"], result.uuid]]
            walk = {**here, "pos": here["pos"] + 1, "saved": history}
            views_text = walk_view(walk)
        else:
            views_text = (None,) * 4 + ("Saved. Upload the next location's photos, or load a folder.",)
        return saved, walk, *views_text, *cleared, progress_text()

    @user_errors
    def undo(walk):
        """Remove the last label; when it was this walk's last save, step the walk back to that location."""
        removed = store.undo_last()
        history = (walk or {}).get("saved") or []
        if removed is None:
            gr.Info("Nothing to undo.")
            return progress_text(), *[gr.skip()] * 6, *cleared
        if history and history[-1][1] == removed:
            pos = history[-1][0]
            walk = {**walk, "pos": pos, "saved": history[:-1]}
            gr.Info(f"Removed the label of location {pos + 1} / {len(walk['ids'])} ({walk['ids'][pos]}); "
                    "set its point again.")
            return progress_text(), walk, *walk_view(walk), *cleared
        gr.Info(f"Removed the last label ({removed}).")
        return progress_text(), *[gr.skip()] * 6, *cleared

    @user_errors
    def load_folder(folder, uncertain_first=False, checkpoint=None):
        path = Path(str(folder or "")).expanduser().resolve()
        if not any(path == r or r in path.parents for r in settings.data_roots):
            raise DatasetError(f"{path} is not inside a configured data root; add it to GEODEMO_DATA_ROOTS.")
        walk = {"folder": str(path), "ids": list_locations(path), "pos": 0, "saved": []}
        if uncertain_first:  # predicts every location once: most useful to label first
            predictor = Predictor.load(checkpoint or settings.default_checkpoint)
            walk["ids"], walk["scores"], walk["unit"] = order_by_uncertainty(predictor, path, walk["ids"])
        return walk, *walk_view(walk)

    @user_errors
    def step(walk, delta: int):
        if not walk:
            return walk, *[gr.skip()] * 5, *[gr.skip()] * 3
        last = len(walk["ids"]) - 1
        if delta > 0 and walk["pos"] >= last:
            gr.Info("That was the last location in the folder.")
        walk = {**walk, "pos": min(max(walk["pos"] + delta, 0), last)}
        return walk, *walk_view(walk), *cleared

    @user_errors
    def suggest(north, east, south, west, checkpoint):
        prediction = Predictor.load(checkpoint).predict(views_dict(north, east, south, west))
        lat, lon = round(prediction.latitude, 6), round(prediction.longitude, 6)
        return str(lat), str(lon)

    def clicked(evt: gr.EventData):
        data = evt._data or {}
        return str(data.get("lat", "")), str(data.get("lon", ""))

    def town_point(name):
        row = towns[towns.name == name]
        if row.empty:
            return gr.skip(), gr.skip()
        return str(float(row.latitude.iloc[0])), str(float(row.longitude.iloc[0]))

    proj = maps.svg_projection()
    gr.Markdown(
        "Load a location's photos, click where they were taken, then **Save & next** "
        "(<kbd>Ctrl</kbd>+<kbd>Enter</kbd>). Each location starts without a point. "
        "Labels go to the labels folder in the LUMEN layout."
    )
    with gr.Row():
        with gr.Column(scale=3):
            views = view_inputs("label", height=170)
            with gr.Row(equal_height=True):
                folder = gr.Dropdown(
                    [str(r) for r in settings.data_roots],
                    value=None,
                    allow_custom_value=True,
                    label="Folder of unlabelled locations (LUMEN layout)",
                    scale=4,
                    elem_id="label-folder",
                )
                load_button = gr.Button("Load folder", scale=1, elem_id="label-load")
            uncertain_first = gr.Checkbox(
                False, label="Most uncertain first (slower: predicts every location once)",
                elem_id="label-uncertain-first",
            )
            with gr.Row(equal_height=True):
                previous_button = gr.Button("◀ Previous", size="sm", elem_id="label-previous")
                walk_text = gr.Markdown(NO_FOLDER, elem_id="label-walk")
                next_button = gr.Button("Skip ▶", size="sm", elem_id="label-skip")
            with gr.Row(equal_height=True):
                latitude = gr.Textbox(
                    label="Latitude (°N)", placeholder="e.g. 45.8150", max_lines=1, elem_id="label-lat"
                )
                longitude = gr.Textbox(
                    label="Longitude (°E)", placeholder="e.g. 15.9819", max_lines=1, elem_id="label-lon"
                )
                for number in (latitude, longitude):
                    # Raw value to LabelStore, whose LabelError names a bad one (decimal commas are fine).
                    number.preprocess = _raw
                town = gr.Dropdown(towns.name.tolist(), value=None, label="Jump to a town", filterable=True)
            suggest_button = gr.Button("Accept the model's suggestion", elem_id="label-suggest")
            with gr.Row(equal_height=True):
                save_button = gr.Button(
                    "Save & next  (Ctrl+Enter)",
                    variant="primary",
                    elem_id="label-save",
                    scale=2,
                    interactive=False,
                )
                undo_button = gr.Button("Undo last label", elem_id="label-undo", scale=1)
            progress = gr.Markdown(progress_text, elem_id="label-progress")
        with gr.Column(scale=2):
            click_map = gr.HTML(
                value=_point(None, None),
                html_template=MAP_TEMPLATE,
                css_template=MAP_CSS,
                js_on_load=MAP_JS,
                shapes=maps.label_map_svg(),
                elem_id="label-map",
                **proj,
            )
    with gr.Accordion("Saved label (JSON)", open=False):
        saved = gr.JSON(label="/label result")

    walk = gr.State(None)
    walk_outputs = [walk, *views, walk_text]
    point_outputs = [latitude, longitude, save_button]
    click_map.click(clicked, None, [latitude, longitude], api_visibility="private", queue=False)
    for number in (latitude, longitude):
        number.change(
            _point_set, [latitude, longitude], [click_map, save_button], api_visibility="private", queue=False
        )
    town.select(town_point, town, [latitude, longitude], api_visibility="private", queue=False)
    suggest_button.click(
        suggest, [*views, checkpoint_state], [latitude, longitude], api_name="suggest", concurrency_id="model"
    )
    load_button.click(
        load_folder, [folder, uncertain_first, checkpoint_state], walk_outputs, api_name="load_folder"
    ).success(
        lambda: cleared, None, point_outputs, api_visibility="private", queue=False
    )
    previous_button.click(lambda w: step(w, -1), walk, walk_outputs + point_outputs, api_visibility="private")
    next_button.click(lambda w: step(w, +1), walk, walk_outputs + point_outputs, api_visibility="private")
    # The `/label` API (a hidden trigger, so its contract stays one JSON); the button saves and moves on in
    # one event, so the next location's point is cleared before another Save can be sent.
    request_id = gr.Textbox("", visible=False, label="request id")  # optional /label parameter for retries
    api_trigger = gr.Button(visible=False)
    api_trigger.click(label, [*views, latitude, longitude, request_id], saved, api_name="label")
    save_button.click(
        save_next,
        [*views, latitude, longitude, walk],
        [saved, *walk_outputs, *point_outputs, progress],
        api_visibility="private",
        trigger_mode="once",
    )
    undo_button.click(
        undo, walk, [progress, *walk_outputs, *point_outputs], api_name="undo_label", trigger_mode="once"
    )
    return {}


def _empty(value) -> bool:
    return value is None or str(value).strip() == ""


# Save & next from the keyboard, wherever the focus is (passed to launch(js=...)).
SHORTCUT_JS = """
() => {
  document.addEventListener('keydown', (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === 'Enter') {
      const button = document.querySelector('#label-save');
      if (button && button.offsetParent !== null) {
        e.preventDefault();
        if (!button.disabled) button.click();
      }
    }
  });
}
"""
