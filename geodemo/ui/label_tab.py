"""Label tab: load views (upload or walk a folder), click the map, save to the LabelStore; `/label` API.

Every location starts without a point: Save is enabled only once the user sets one for it (map click,
typed coordinates, a town or the model's suggestion), so a point never carries over to the next location.
A folder walk knows what is done: locations already in the store (by `source_uuid`) are marked, skipped by
default, and a second label for one is stored only when the user ticks that they want it.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import gradio as gr

from geodemo import geo
from geodemo.active import order_by_uncertainty
from geodemo.data import DatasetError, images_dir, is_safe_id, view_paths
from geodemo.labels import SOURCE_COLUMN, LabelError, LabelStore, parse_degrees
from geodemo.predict import Predictor
from geodemo.ui.common import display_paths, user_errors, view_inputs, views_dict
from geodemo.ui.settings import Settings
from geodemo.ui.widgets import click_map

NO_FOLDER = "No folder loaded: upload photos above, or load a folder."
CLEARED = ("", "", gr.update(interactive=False))  # latitude, longitude, Save: a location without a point
# Phones: the map first, Save & next right under it and kept in view while scrolling.
CSS = """
@media (max-width: 700px) {
  #label-layout { flex-direction: column; }
  #label-map-column { order: -1; }
  #label-save-row { position: sticky; bottom: 0; z-index: 5; background: var(--background-fill-primary);
    padding: 6px 0; box-shadow: 0 -2px 6px rgba(0, 0, 0, 0.08); }
}
"""


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


def _empty(value) -> bool:
    return value is None or str(value).strip() == ""


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


def labelled_sources(store: LabelStore) -> set[str]:
    """The source location ids (`source_uuid`) that already have a label in the store."""
    frame = store.frame()
    if SOURCE_COLUMN not in frame:
        return set()
    return {str(s) for s in frame[SOURCE_COLUMN].dropna() if str(s).strip()}


def walk_view(walk: dict | None) -> tuple:
    """(north, east, south, west view paths, "second label" box, walk text) of the walk's current location.

    A walk is {"folder", "ids", "pos", "saved": [[pos, stored uuid], ...], "done": [ids labelled before]};
    pos == len(ids) is its end.
    """
    no_box = gr.update(visible=False, value=False)
    if not walk:
        return None, None, None, None, no_box, NO_FOLDER
    ids, pos = walk["ids"], walk["pos"]
    skipped = walk.get("skipped", 0)
    skipped_note = f" ({skipped} already-labelled location(s) skipped)" if skipped else ""
    if pos >= len(ids):
        return None, None, None, None, no_box, (
            f"**Folder done**: all {len(ids)} locations were labelled or skipped{skipped_note}. "
            "*Undo* or *◀ Previous* steps back."
        )
    paths = view_paths(Path(walk["folder"]), ids[pos])
    files = [str(paths[v]) if v in paths else None for v in range(4)]
    score = walk.get("scores", {}).get(ids[pos])  # most-uncertain-first walks (geodemo.active)
    note = f" · model's expected error **{score:.0f} {walk['unit']}**" if score is not None else ""
    done = ids[pos] in set(walk.get("done", []))
    mark = " · **✔ already labelled**: Skip it, or tick the box to store a second label" if done else ""
    text = f"Location **{pos + 1} / {len(ids)}**: `{ids[pos]}`{note}{mark}{skipped_note}"
    return (*files, gr.update(visible=done, value=False), text)


def progress_text(store: LabelStore) -> str:
    """How many labels the store holds, and where (named as the user knows the folder)."""
    n = store.count()
    return f"**{n}** location{'' if n == 1 else 's'} labelled in {display_paths(str(store.root))}"


@user_errors
def label(store, north, east, south, west, latitude, longitude, request_id=None):
    """The `/label` API: store one location; refuses points outside Croatia.

    `request_id` (optional, from API clients): a retry with the same id returns the first result.
    """
    if _empty(latitude) or _empty(longitude):
        raise LabelError("Set the location first: click the map, pick a town or type the coordinates.")
    result = store.add(views_dict(north, east, south, west), latitude, longitude, request_id=request_id)
    return {"uuid": result.uuid, "count": result.count, "dataset": result.root}


@user_errors
def save_next(store, north, east, south, west, latitude, longitude, walk, second):
    """Save & next (the UI): store this location, then show the next one without a point.

    A walk location that already has a label is stored again only with the "second label" box ticked.
    """
    if _empty(latitude) or _empty(longitude):
        raise LabelError("Set this location's point first: click the map, pick a town or type it.")
    here = walk if walk and walk["pos"] < len(walk["ids"]) else None
    source = here["ids"][here["pos"]] if here else None
    if source is not None and not second and source in labelled_sources(store):
        # a warning, not an error: the page keeps the views and the point, nothing is marked failed
        gr.Warning(f"Location {source} already has a label; press Skip, or tick “Store a second label” "
                   "and save again.")
        return (gr.skip(),) * 12
    result = store.add(views_dict(north, east, south, west), latitude, longitude, source_uuid=source)
    saved = {"uuid": result.uuid, "count": result.count, "dataset": result.root}
    if here:
        history = [*here.get("saved", []), [here["pos"], result.uuid]]
        done = sorted({*here.get("done", []), source})
        walk = {**here, "pos": here["pos"] + 1, "saved": history, "done": done}
        views_text = walk_view(walk)
    else:
        views_text = (None,) * 4 + (gr.update(visible=False, value=False),
                                    "Saved. Upload the next location's photos, or load a folder.")
    return saved, walk, *views_text, *CLEARED, progress_text(store)


@user_errors
def undo(store, walk):
    """Remove the last label; when it was this walk's last save, step the walk back to that location."""
    removed = store.undo_last()
    history = (walk or {}).get("saved") or []
    if removed is None:
        gr.Info("Nothing to undo.")
        return progress_text(store), *[gr.skip()] * 7, *CLEARED
    if history and history[-1][1] == removed:
        pos = history[-1][0]
        source = walk["ids"][pos]
        done = sorted(set(walk.get("done", [])) - ({source} - labelled_sources(store)))
        walk = {**walk, "pos": pos, "saved": history[:-1], "done": done}
        gr.Info(f"Removed the label of location {pos + 1} / {len(walk['ids'])} ({source}); "
                "set its point again.")
        return progress_text(store), walk, *walk_view(walk), *CLEARED
    gr.Info(f"Removed the last label ({removed}).")
    return progress_text(store), *[gr.skip()] * 7, *CLEARED


@user_errors
def load_folder(settings, store, folder, uncertain_first=False, checkpoint=None, skip_done=True):
    """The `/load_folder` API: walk a folder's locations; those already labelled are skipped (or marked)."""
    path = Path(str(folder or "")).expanduser().resolve()
    if not any(path == r or r in path.parents for r in settings.data_roots):
        raise DatasetError(f"{path} is not inside a configured data root; add it to GEODEMO_DATA_ROOTS.")
    ids = list_locations(path)
    done = sorted(labelled_sources(store) & set(ids))
    walk = {"folder": str(path), "ids": ids, "pos": 0, "saved": [], "done": done, "skipped": 0}
    if skip_done and done:
        walk["ids"] = [i for i in ids if i not in set(done)]
        walk["skipped"] = len(done)
        if not walk["ids"]:
            gr.Info(f"All {len(ids)} locations of this folder are labelled already; untick “Skip "
                    "already-labelled locations” to revisit them.")
    if uncertain_first and walk["ids"]:  # predicts every location once: most useful to label first
        predictor = Predictor.load(checkpoint or settings.default_checkpoint)
        walk["ids"], walk["scores"], walk["unit"] = order_by_uncertainty(predictor, path, walk["ids"])
    return walk, *walk_view(walk)


@user_errors
def step(walk, delta: int):
    """◀ Previous / Skip ▶ through the walk (the point is cleared: each location starts without one)."""
    if not walk:
        return walk, *[gr.skip()] * 6, *[gr.skip()] * 3
    last = len(walk["ids"]) - 1
    if delta > 0 and walk["pos"] >= last:
        gr.Info("That was the last location in the folder.")
    walk = {**walk, "pos": min(max(walk["pos"] + delta, 0), last)}
    return walk, *walk_view(walk), *CLEARED


@user_errors
def suggest(north, east, south, west, checkpoint):
    """The model's point for these views, as the two coordinate boxes' text."""
    prediction = Predictor.load(checkpoint).predict(views_dict(north, east, south, west))
    lat, lon = round(prediction.latitude, 6), round(prediction.longitude, 6)
    return str(lat), str(lon)


def clicked(evt: gr.EventData):
    """A map click as the two coordinate boxes' text."""
    data = evt._data or {}
    return str(data.get("lat", "")), str(data.get("lon", ""))


def town_point(towns, name):
    """The chosen town's coordinates as the two boxes' text."""
    row = towns[towns.name == name]
    if row.empty:
        return gr.skip(), gr.skip()
    return str(float(row.latitude.iloc[0])), str(float(row.longitude.iloc[0]))


def _layout(settings: Settings, store: LabelStore, towns) -> dict:
    """The tab's components, by name."""
    c = {}
    gr.Markdown(
        "Load a location's photos, click where they were taken, then **Save & next** "
        "(<kbd>Ctrl</kbd>+<kbd>Enter</kbd>). Each location starts without a point. "
        "Labels go to the labels folder in the LUMEN layout."
    )
    with gr.Row(elem_id="label-layout"):
        with gr.Column(scale=3):
            c["views"] = view_inputs("label", height=170)
            with gr.Row(equal_height=True):
                c["folder"] = gr.Dropdown(
                    [str(r) for r in settings.data_roots], value=None, allow_custom_value=True,
                    label="Folder of unlabelled locations (LUMEN layout)", scale=4, elem_id="label-folder",
                )
                c["load"] = gr.Button("Load folder", scale=1, elem_id="label-load")
            with gr.Row():
                c["skip_done"] = gr.Checkbox(True, label="Skip already-labelled locations",
                                             elem_id="label-skip-done")
                c["uncertain_first"] = gr.Checkbox(
                    False, label="Most uncertain first (slower: predicts every location once)",
                    elem_id="label-uncertain-first",
                )
            c["walk_text"] = gr.Markdown(NO_FOLDER, elem_id="label-walk")
            with gr.Row(equal_height=True):
                c["previous"] = gr.Button("◀ Previous", size="sm", elem_id="label-previous", min_width=110)
                c["next"] = gr.Button("Skip ▶", size="sm", elem_id="label-skip", min_width=110)
                c["suggest"] = gr.Button("Accept the model's suggestion", size="sm", elem_id="label-suggest",
                                         scale=2, min_width=200)
        with gr.Column(scale=2, elem_id="label-map-column"):
            c["map"] = click_map("label-map")
            with gr.Row(equal_height=True):
                c["latitude"] = gr.Textbox(label="Latitude (°N)", placeholder="e.g. 45.8150", max_lines=1,
                                           elem_id="label-lat", min_width=100)
                c["longitude"] = gr.Textbox(label="Longitude (°E)", placeholder="e.g. 15.9819", max_lines=1,
                                            elem_id="label-lon", min_width=100)
                for number in (c["latitude"], c["longitude"]):
                    # Raw value to LabelStore, whose LabelError names a bad one (decimal commas are fine).
                    number.preprocess = _raw
                c["town"] = gr.Dropdown(towns.name.tolist(), value=None, label="Jump to a town",
                                        filterable=True, min_width=120)
            c["second"] = gr.Checkbox(False, label="Store a second label for this already-labelled location",
                                      visible=False, elem_id="label-second")
            with gr.Row(equal_height=True, elem_id="label-save-row"):
                c["save"] = gr.Button("Save & next  (Ctrl+Enter)", variant="primary", elem_id="label-save",
                                      scale=2, interactive=False)
                c["undo"] = gr.Button("Undo last label", elem_id="label-undo", scale=1)
            c["progress"] = gr.Markdown(partial(progress_text, store), elem_id="label-progress")
    with gr.Accordion("Saved label (JSON)", open=False):
        c["saved"] = gr.JSON(label="/label result")
    return c


def build(settings: Settings, checkpoint_state: gr.State) -> dict:
    """Lay out the tab and wire its events."""
    store = LabelStore(settings.labels_dir)
    towns = geo.places().sort_values("population", ascending=False)
    c = _layout(settings, store, towns)
    views, latitude, longitude = c["views"], c["latitude"], c["longitude"]
    walk = gr.State(None)
    walk_outputs = [walk, *views, c["second"], c["walk_text"]]
    point_outputs = [latitude, longitude, c["save"]]
    c["map"].click(clicked, None, [latitude, longitude], api_visibility="private", queue=False)
    for number in (latitude, longitude):
        number.change(_point_set, [latitude, longitude], [c["map"], c["save"]], api_visibility="private",
                      queue=False)
    c["town"].select(partial(town_point, towns), c["town"], [latitude, longitude], api_visibility="private",
                     queue=False)
    c["suggest"].click(suggest, [*views, checkpoint_state], [latitude, longitude], api_name="suggest",
                       concurrency_id="model")
    c["load"].click(
        partial(load_folder, settings, store), [c["folder"], c["uncertain_first"], checkpoint_state,
                                                c["skip_done"]],
        walk_outputs, api_name="load_folder",
    ).success(lambda: CLEARED, None, point_outputs, api_visibility="private", queue=False)
    c["previous"].click(lambda w: step(w, -1), walk, walk_outputs + point_outputs, api_visibility="private")
    c["next"].click(lambda w: step(w, +1), walk, walk_outputs + point_outputs, api_visibility="private")
    # The `/label` API (a hidden trigger, so its contract stays one JSON); the button saves and moves on in
    # one event, so the next location's point is cleared before another Save can be sent.
    request_id = gr.Textbox("", visible=False, label="request id")  # optional /label parameter for retries
    api_trigger = gr.Button(visible=False)
    api_trigger.click(partial(label, store), [*views, latitude, longitude, request_id], c["saved"],
                      api_name="label")
    c["save"].click(
        partial(save_next, store),
        [*views, latitude, longitude, walk, c["second"]],
        [c["saved"], *walk_outputs, *point_outputs, c["progress"]],
        api_visibility="private",
        trigger_mode="once",
    )
    c["undo"].click(partial(undo, store), walk, [c["progress"], *walk_outputs, *point_outputs],
                    api_name="undo_label", trigger_mode="once")
    return {}


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
