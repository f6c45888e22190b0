"""The Predict tab's "similar-looking known places": the neighbours' photos where the app can read them."""

from __future__ import annotations

import gradio as gr

from geodemo import geo
from geodemo.data import is_safe_id, view_paths
from geodemo.ui.settings import Settings

CAPTION = (
    "**Similar-looking known places** (pink dots on the map): the training locations whose photos look "
    "most like yours. They are *not* the answer — places far apart can look alike — but show what the model "
    "compares your photos with."
)


def neighbour_photo(settings: Settings, uuid: str):
    """A neighbour's first view (north if present) from the app's data roots, or None when unreadable."""
    if not is_safe_id(uuid):
        return None
    for root in settings.data_roots:
        paths = view_paths(root, uuid) if (root / "images" / uuid).is_dir() else {}
        if paths:
            return str(paths[min(paths)])
    return None


def hidden() -> tuple:
    """Updates for the panel's outputs that hide it (no prediction shown)."""
    return gr.update(visible=False), CAPTION, gr.update(value=[], visible=False)


def build(settings: Settings):
    """Lay out the panel; returns (show(prediction) -> its outputs' updates, those outputs)."""
    with gr.Column(visible=False) as panel:
        caption = gr.Markdown(CAPTION, elem_id="predict-neighbours-caption")
        gallery = gr.Gallery(label="Similar-looking known places", columns=5, height=200, preview=False,
                             fit_columns=False, elem_id="predict-neighbours")

    def show(prediction):
        neighbours = getattr(prediction, "neighbours", None) or []
        items, missing = [], 0
        for i, n in enumerate(neighbours):
            photo = neighbour_photo(settings, n["uuid"])
            point = (prediction.latitude, prediction.longitude)
            km = float(geo.haversine_km(n["latitude"], n["longitude"], *point))
            if photo is None:
                missing += 1
                continue
            items.append((photo, f"#{i + 1} · cosine {n['similarity']:.2f} · {km:.0f} km from the answer"))
        note = CAPTION
        if missing:
            note += f"\n\n<small>{missing} of {len(neighbours)} have no photos this app can read.</small>"
        return gr.update(visible=bool(neighbours)), note, gr.update(value=items, visible=bool(items))

    return show, [panel, caption, gallery]
