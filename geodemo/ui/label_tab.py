"""Label tab: load views (upload or walk a folder), click the map, save to the LabelStore; `/label` API."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from geodemo import geo, maps
from geodemo.data import DatasetError, images_dir, is_safe_id, view_paths
from geodemo.labels import LabelError, LabelStore
from geodemo.predict import Predictor
from geodemo.ui.common import user_errors, view_inputs, views_dict
from geodemo.ui.settings import Settings

# The click map: an inline SVG re-rendered from `value` ({lat, lon}); projection params come as props.
MAP_TEMPLATE = """
<div class="label-map">
<svg viewBox="0 0 ${width} ${height}" preserveAspectRatio="xMidYMid meet">
<rect class="sea" x="0" y="0" width="${width}" height="${height}"/>${shapes}
${value && value.lat != null ? `<g class="pin"
  transform="translate(${(value.lon - lon0) * kx},${(lat1 - value.lat) * ky})">
<circle r="11" class="pin-halo"/><circle r="5" class="pin-dot"/></g>` : ''}
</svg>
<div class="label-map-hint">${value && value.lat != null
  ? `${value.lat.toFixed(4)}° N, ${value.lon.toFixed(4)}° E`
  : 'Click the map where the photos were taken'}</div>
</div>"""
MAP_CSS = """
.label-map svg { width: 100%; height: 520px; cursor: crosshair; display: block; }
.label-map .sea { fill: #eef4fb; }
.label-map .county { fill: #e9efe4; stroke: #8a9a80; stroke-width: 0.8; }
.label-map .county:hover { fill: #dde8d3; }
.label-map .town { fill: #555; }
.label-map .town-label { font: 24px system-ui, sans-serif; fill: #333; pointer-events: none; }
.label-map .pin-halo { fill: rgba(214, 39, 40, 0.25); stroke: #d62728; stroke-width: 2; }
.label-map .pin-dot { fill: #d62728; }
.label-map-hint { text-align: center; font-size: 0.9em; color: #555; padding: 4px; }
"""
# A click becomes (lat, lon) through the SVG's own screen transform, so zoom and resizing are exact.
MAP_JS = """
element.addEventListener('click', (ev) => {
  const svg = element.querySelector('svg');
  if (!svg) return;
  const pt = svg.createSVGPoint();
  pt.x = ev.clientX; pt.y = ev.clientY;
  const p = pt.matrixTransform(svg.getScreenCTM().inverse());
  const lat = Math.round((props.lat1 - p.y / props.ky) * 1e6) / 1e6;
  const lon = Math.round((props.lon0 + p.x / props.kx) * 1e6) / 1e6;
  props.value = {lat: lat, lon: lon};
  trigger('click', {lat: lat, lon: lon});
});
"""


def _point(lat, lon) -> dict:
    ok = lat is not None and lon is not None
    return {"lat": float(lat), "lon": float(lon)} if ok else {"lat": None, "lon": None}


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


def build(settings: Settings, checkpoint_state: gr.State) -> dict:
    """Lay out the tab and wire its events."""
    store = LabelStore(settings.labels_dir)
    towns = geo.places().sort_values("population", ascending=False)

    def progress_text() -> str:
        return f"**{store.count()}** locations labelled in `{store.root}`"

    @user_errors
    def label(north, east, south, west, latitude, longitude, request_id=None):
        """The `/label` API: store one location; refuses points outside Croatia.

        `request_id` (optional, from API clients): a retry with the same id returns the first result.
        """
        if latitude is None or longitude is None:
            raise LabelError("Set the location first: click the map, pick a town or type the coordinates.")
        result = store.add(views_dict(north, east, south, west), latitude, longitude, request_id=request_id)
        return {"uuid": result.uuid, "count": result.count, "dataset": result.root}

    @user_errors
    def undo():
        removed = store.undo_last()
        gr.Info(f"Removed {removed}." if removed else "Nothing to undo.")
        return progress_text()

    @user_errors
    def load_folder(folder):
        path = Path(str(folder or "")).expanduser().resolve()
        if not any(path == r or r in path.parents for r in settings.data_roots):
            raise DatasetError(f"{path} is not inside a configured data root; add it to GEODEMO_DATA_ROOTS.")
        ids = list_locations(path)
        return {"folder": str(path), "ids": ids, "pos": 0}, *show(path, ids, 0)

    def show(folder: Path, ids: list[str], pos: int):
        paths = view_paths(folder, ids[pos])
        files = [str(paths[v]) if v in paths else None for v in range(4)]
        return (*files, f"Location **{pos + 1} / {len(ids)}**: `{ids[pos]}`")

    @user_errors
    def step(walk, delta: int):
        if not walk:
            return walk, *[gr.skip()] * 5
        pos = min(max(walk["pos"] + delta, 0), len(walk["ids"]) - 1)
        if delta > 0 and walk["pos"] == len(walk["ids"]) - 1:
            gr.Info("That was the last location in the folder.")
        walk = {**walk, "pos": pos}
        return walk, *show(Path(walk["folder"]), walk["ids"], pos)

    def after_save(walk):
        if walk and walk["pos"] < len(walk["ids"]) - 1:
            return step(walk, +1)
        return None, None, None, None, None, "Saved. Upload the next location's photos, or load a folder."

    @user_errors
    def suggest(north, east, south, west, checkpoint):
        prediction = Predictor.load(checkpoint).predict(views_dict(north, east, south, west))
        return round(prediction.latitude, 6), round(prediction.longitude, 6)

    def clicked(evt: gr.EventData):
        data = evt._data or {}
        return data.get("lat"), data.get("lon")

    def town_point(name):
        row = towns[towns.name == name]
        if row.empty:
            return gr.skip(), gr.skip()
        return float(row.latitude.iloc[0]), float(row.longitude.iloc[0])

    proj = maps.svg_projection()
    gr.Markdown(
        "Load a location's photos, click where they were taken, then **Save & next** "
        "(<kbd>Ctrl</kbd>+<kbd>Enter</kbd>). Labels go to the labels folder in the LUMEN layout."
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
                )
                load_button = gr.Button("Load folder", scale=1)
            with gr.Row(equal_height=True):
                previous_button = gr.Button("◀ Previous", size="sm")
                walk_text = gr.Markdown("No folder loaded: upload photos above, or load a folder.")
                next_button = gr.Button("Skip ▶", size="sm")
            with gr.Row(equal_height=True):
                latitude = gr.Number(label="Latitude (°N)", precision=6, elem_id="label-lat")
                longitude = gr.Number(label="Longitude (°E)", precision=6, elem_id="label-lon")
                for number in (latitude, longitude):
                    # Raw value to LabelStore, whose LabelError names a bad one; gr.Number's own
                    # preprocess would answer an API caller's "45,8" with an opaque processing error.
                    number.preprocess = _raw
                town = gr.Dropdown(towns.name.tolist(), value=None, label="Jump to a town", filterable=True)
            suggest_button = gr.Button("Accept the model's suggestion")
            with gr.Row(equal_height=True):
                save_button = gr.Button(
                    "Save & next  (Ctrl+Enter)", variant="primary", elem_id="label-save", scale=2
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
    click_map.click(clicked, None, [latitude, longitude], api_visibility="private", queue=False)
    for number in (latitude, longitude):
        number.change(_point, [latitude, longitude], click_map, api_visibility="private", queue=False)
    town.select(town_point, town, [latitude, longitude], api_visibility="private", queue=False)
    suggest_button.click(
        suggest, [*views, checkpoint_state], [latitude, longitude], api_name="suggest", concurrency_id="model"
    )
    load_button.click(load_folder, folder, walk_outputs, api_name="load_folder")
    previous_button.click(lambda w: step(w, -1), walk, walk_outputs, api_visibility="private")
    next_button.click(lambda w: step(w, +1), walk, walk_outputs, api_visibility="private")
    request_id = gr.Textbox("", visible=False, label="request id")  # optional /label parameter for retries
    save_button.click(label, [*views, latitude, longitude, request_id], saved, api_name="label").success(
        after_save, walk, walk_outputs, api_visibility="private"
    ).then(progress_text, None, progress, api_visibility="private")
    undo_button.click(undo, None, progress, api_name="undo_label")
    return {}


# Save & next from the keyboard, wherever the focus is (passed to launch(js=...)).
SHORTCUT_JS = """
() => {
  document.addEventListener('keydown', (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === 'Enter') {
      const button = document.querySelector('#label-save');
      if (button && button.offsetParent !== null) { e.preventDefault(); button.click(); }
    }
  });
}
"""
