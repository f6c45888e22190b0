"""What the tabs share: the clickable SVG map of Croatia, the job progress bar and the prediction result.

Tabs import widgets from here, never from each other.
"""

from __future__ import annotations

import json
from html import escape

import gradio as gr

from geodemo import geo, images, maps
from geodemo.readout import CREDIBLE_MASSES, Readout
from geodemo.truth import parse_truth, train_overlap
from geodemo.ui.common import as_text

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
.label-map .town.minor { fill: #555; r: calc(3px / var(--z)); }
.label-map .town-label.minor { font: calc(17px / var(--z)) system-ui, sans-serif; fill: #444; }
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


def click_map(elem_id: str, value: dict | None = None) -> gr.HTML:
    """The clickable map of Croatia; its value is {lat, lon} (None, None: no point); `.click` sends it."""
    return gr.HTML(
        value=value or {"lat": None, "lon": None},
        html_template=MAP_TEMPLATE,
        css_template=MAP_CSS,
        js_on_load=MAP_JS,
        shapes=maps.label_map_svg(),
        elem_id=elem_id,
        **maps.svg_projection(),
    )


def clicked_point(evt: gr.EventData) -> tuple:
    """(lat, lon) degrees of a map click (None, None when the event carries none)."""
    data = evt._data or {}
    return data.get("lat"), data.get("lon")


ACTIVE = ("queued", "running")  # job states that still move
STAGE_TEXT = {"prepare": "preparing", "cache": "caching embeddings", "train": "training",
              "validate": "validating", "evaluate": "evaluating"}
SPLIT_TEXT = {"train": "train", "val": "validation", "test": "test"}
METRIC_TEXT = {"loss": "loss", "mean_km": "mean error", "median_km": "median error",
               "county_accuracy": "county accuracy", "heading_maae_deg": "heading error"}


def metric_text(key: str, value: float) -> str:
    """A logged metric in words: `val/loss_geocell` 3.32 -> "validation geocell loss 3.32"."""
    split, _, name = key.partition("/")
    where = SPLIT_TEXT.get(split, split)
    if name in METRIC_TEXT:
        what = METRIC_TEXT[name]
    elif name.startswith("loss_"):
        what = f"{name[5:].replace('_', ' ')} loss"
    elif name.startswith("acc_") and name.endswith("km"):
        what = f"within {name[4:-2]} km"
    else:
        what = name.replace("_", " ")
    if name.endswith("_km"):
        return f"{where} {what} {value:,.1f} km"
    if name.endswith("_deg"):
        return f"{where} {what} {value:.1f}°"
    if name.startswith("acc_") or name == "county_accuracy":
        return f"{where} {what} {value:.0%}"
    return f"{where} {what} {value:.3g}"


def progress_html(progress: dict, status: str) -> str:
    """A progress bar over the whole job with its stage (cache fill, epoch and step, validation)."""
    fraction = float(progress.get("fraction") or (1.0 if status == "done" else 0.0))
    parts = [escape(status)]
    stage = str(progress.get("stage") or "")
    if status in ACTIVE and stage in STAGE_TEXT:
        text = STAGE_TEXT[stage]
        if stage in ("cache", "evaluate") and progress.get("total_steps"):
            text += f" {progress.get('step', 0)} / {progress['total_steps']}"
        parts.append(text)
        if stage in ("train", "validate") and progress.get("max_epochs"):
            # geodemo.progress counts epochs from 1 (0: not started yet)
            parts.append(f"epoch {max(1, int(progress.get('epoch') or 0))} / {progress['max_epochs']}")
            if progress.get("total_steps"):
                parts.append(f"step {progress.get('step', 0)} / {progress['total_steps']}")
    logged = [
        (k, v) for k, v in (progress.get("metrics") or {}).items() if "/" in k and isinstance(v, (int, float))
    ]
    # in words, e.g. "validation mean error 134 km" for val/mean_km
    parts += [escape(metric_text(key, value)) for key, value in logged[:4]]
    colour = {"failed": "#d62728", "cancelled": "#888"}.get(status, "var(--color-accent)")
    return (
        f'<div class="job-progress"><div class="job-bar"><div style="width:{100 * fraction:.1f}%;'
        f'background:{colour}"></div></div><div class="job-text">{" · ".join(parts)} · '
        f"{100 * fraction:.0f}%</div></div>"
    )


PROGRESS_CSS = """
.job-bar { height: 14px; background: var(--neutral-200); border-radius: 7px; overflow: hidden; }
.job-bar > div { height: 100%; transition: width 0.5s; }
.job-text { font-size: 0.9em; padding-top: 4px; }
"""


# --- The prediction result, shared by Predict's Four views and Panorama -------------------------------

EMPTY_SUMMARY = "Prediction summary appears here."
TRUTH_HINT = (
    "<small>Optional: the true place, to see the error in km. Type both coordinates (scored when you pause "
    "or press Enter), click the result map, or upload a photo with GPS in its EXIF.</small>"
)
# Scores a typed truth once typing pauses: 700 ms after the last keystroke in either field, the HTML holding
# this script fires `submit` (its handler scores only when both numbers parse). PREFIX: the elem_id prefix.
TRUTH_DEBOUNCE_JS = """
const ids = ['PREFIX-truth-lat', 'PREFIX-truth-lon'];
let timer = null;
document.addEventListener('input', (ev) => {
  if (!ev.target.closest || !ids.some((id) => ev.target.closest('#' + id))) return;
  clearTimeout(timer);
  timer = setTimeout(() => trigger('submit', {}), 700);
});
"""


def map_fit_js(elem_id: str) -> str:
    """JS (for a js_on_load) that keeps all of Croatia in view in the Plotly map inside `#elem_id`.

    Every map figure opens at maps.ZOOM / maps.CENTER, which show the whole country in a map ~650 px wide; a
    narrower map (a phone) zooms out. The fit is redone whenever the map's width changes (a desktop window
    narrowed after a prediction) or a redraw put the figures' own zoom back (a new figure, drawn in place or
    re-plotted by Gradio, or a new MapLibre map), never otherwise, so a user's own zoom stays until then.
    Relayouts are chained after any pending in-place redraw (window.__geodemoDrawn).
    """
    return """
window.__geodemoFitZoom = (gd, zoom) => {
  const w = gd.clientWidth;
  return w > 0 && w < 650 ? zoom + Math.log2(w / 650) : zoom;
};
setInterval(() => {
  const gd = document.querySelector('#ELEM .js-plotly-plot');
  const full = gd && gd._fullLayout && gd._fullLayout.map;
  const map = full && full._subplot && full._subplot.map;
  if (!window.Plotly || !map || typeof full.zoom !== 'number' || !(gd.clientWidth > 0)) return;
  const home = {zoom: ZOOM, center: CENTER_JSON};  // every map figure's own view (geodemo.maps)
  const target = window.__geodemoFitZoom(gd, home.zoom);
  const zoom = map.getZoom();  // what MapLibre shows (Plotly's layout can say otherwise while a map loads)
  const reset = Math.abs(zoom - home.zoom) < 1e-6 && Math.abs(target - home.zoom) > 1e-6;
  if (!reset && map.__geodemoFitWidth === gd.clientWidth) return;
  map.__geodemoFitWidth = gd.clientWidth;
  if (Math.abs(zoom - target) < 1e-6) return;
  if (Math.abs(full.zoom - target) < 1e-6) {  // the layout has the fit already: move the map itself
    map.jumpTo({zoom: target, center: [home.center.lon, home.center.lat]});
    return;
  }
  window.__geodemoDrawn = (window.__geodemoDrawn || Promise.resolve())
    .then(() => window.Plotly.relayout(gd, {'map.zoom': target, 'map.center': home.center}))
    .catch((err) => console.error(err));
}, 400);
""".replace("ELEM", elem_id).replace("ZOOM", repr(maps.ZOOM)).replace("CENTER_JSON", json.dumps(maps.CENTER))


def summary_markdown(prediction) -> str:
    """The point, its town and county, the expected error, the county distribution and headings, as Markdown.

    The county named with the point is the one containing it; the county distribution is the model's
    separate estimate, shown as its own table, and a disagreement between the two is said in words.
    """
    town = as_text(geo.nearest_place(prediction.latitude, prediction.longitude))
    county = as_text(prediction.county)  # names are shown as text, never as HTML or Markdown
    top = [(as_text(name), p) for name, p in list(prediction.county_probabilities.items())[:5]]
    lines = [
        f"### {prediction.latitude:.4f}° N, {prediction.longitude:.4f}° E",
        f"near **{town}** · in **{county}** county",
    ]
    expected = getattr(prediction, "expected_error_km", None)
    if expected is not None:
        lines += ["", f"The model expects to be about **{expected:.0f} km** off (its own estimate)."]
    lines += [
        "",
        "**County distribution** (the model's separate county estimate, not the map point):",
        "",
        "| county | probability |",
        "|---|---:|",
        *[f"| {name} | {p:.1%} |" for name, p in top],
    ]
    if top and top[0][0] != county:
        lines += [
            "",
            f"⚠ The county estimate's first choice, **{top[0][0]}** ({top[0][1]:.0%}), is not the county "
            f"containing the point (**{county}**): the two parts of the model disagree.",
        ]
    if prediction.headings:
        names = dict(zip(("0", "90", "180", "270"), ("North", "East", "South", "West")))
        lines += [
            "",
            "**Camera heading** (predicted, ° from north): "
            + ", ".join(f"{names.get(k, k)} view {v:.0f}°" for k, v in prediction.headings.items()),
        ]
    lines += ["", f"<small>model `{prediction.model}`, {prediction.elapsed_ms:.0f} ms</small>"]
    return "\n".join(lines)


def truth_markdown(predictor, prediction, truth: tuple[float, float] | None) -> str:
    """The error in km against a known truth, and whether the truth fell in the 50% / 90% regions."""
    if truth is None:
        return ""
    if prediction is None:
        return f"Truth set to {truth[0]:.4f}° N, {truth[1]:.4f}° E. Predict to see the error."
    error = float(geo.haversine_km(truth[0], truth[1], prediction.latitude, prediction.longitude))
    lines = [f"### Error: {error:.1f} km", f"from the truth at {truth[0]:.4f}° N, {truth[1]:.4f}° E."]
    if prediction.expected_error_km is not None:
        lines[-1] += f" The model expected about {prediction.expected_error_km:.0f} km."
    if prediction.cell_probabilities is not None:
        out = {"geocell": prediction.cell_probabilities[None]}
        inside = {
            m: bool(predictor.readout.truth_in_region(out, truth[0], truth[1], m)[0]) for m in CREDIBLE_MASSES
        }
        if inside[0.5]:
            where = "inside the **50%** credible region (and so the 90% one)"
        elif inside[0.9]:
            where = "inside the **90%** credible region, outside the 50% one"
        else:
            where = "**outside** even the 90% credible region: the model was confidently wrong"
        lines.append(f"The truth is {where}.")
    seen = train_overlap(predictor.config, truth[0], truth[1], [""])
    if seen is not None and seen[0]:
        lines.append("⚠ This place is one of the checkpoint's training locations (within 10 m): the error is "
                     "not a test of how it does on new places.")
    if not geo.in_croatia(truth[0], truth[1]):
        lines.append("Note: this truth lies outside Croatia; check the coordinates.")
    return "\n\n".join(lines)


def result_figure(predictor, prediction, truth=None):
    """The prediction map with the 50% / 90% credible regions and, when known, the truth and error line."""
    regions = {}
    if prediction.cell_probabilities is not None:
        p = prediction.cell_probabilities[None]
        regions = {m: Readout.credible_set(p, m)[0] for m in CREDIBLE_MASSES}
    return maps.prediction_figure(prediction, predictor.cells, truth=truth, regions=regions)


def typed_truth(lat_text, lon_text, *, settled: bool = False):
    """(truth or None, a warning sentence or None) from the truth fields; a bad field never hides a result.

    Args:
        settled: typing paused (not Enter or Predict): then a half-typed or unfinished pair, or a point
            outside Croatia (a number still being typed), is not scored and not warned about: (None, None).
    """
    try:
        truth = parse_truth(lat_text, lon_text)
    except ValueError as err:
        return None, (None if settled else f"⚠ {err}")
    if settled and truth is not None and not geo.in_croatia(*truth):
        return None, None
    return truth, None


def truth_fields(prefix: str) -> tuple:
    """The true latitude and longitude boxes, elem_id f"{prefix}-truth-lat" and f"{prefix}-truth-lon"."""
    lat = gr.Textbox(label="True latitude (° N, optional)", placeholder="e.g. 45.8150 or 45,8150",
                     elem_id=f"{prefix}-truth-lat", min_width=160)
    lon = gr.Textbox(label="True longitude (° E, optional)", placeholder="e.g. 15.9819 or 15,9819",
                     elem_id=f"{prefix}-truth-lon", min_width=160)
    return lat, lon


def phone_gallery_css(*elem_ids: str) -> str:
    """A <style> for a page's head: on a phone (<= 640 px) these galleries wrap into two columns instead of
    needing a sideways scroll (Gradio's grid keeps every column at least 100 px wide), shown whole."""
    grids = ", ".join(f"#{i} .grid-container" for i in elem_ids)
    wraps = ", ".join(f"#{i}, #{i} .grid-wrap" for i in elem_ids)  # and grow to show the wrapped rows
    return (f"<style>@media (max-width: 640px) {{ {grids} {{ grid-template-columns: repeat(2, minmax(0, 1fr))"
            f" !important; }} {wraps} {{ height: auto !important; max-height: none !important; }} }}</style>")


def check_photo(path, name: str) -> None:
    """Refuse an uploaded photo from its header and a fast reduced decode (well under a second), through
    geodemo.images (its format allow-list and size limits), before any model runs.

    Raises:
        ImageError: one sentence naming the file and the fix.
    """
    if path:
        images.load_rgb(path, min_side=64, name=name)


def gradcam_items(overlays: dict, captions: dict) -> list[tuple]:
    """Gallery items (overlay, caption) in view order from {view: (S, S, 3) uint8}."""
    return [(img, captions.get(v, str(v))) for v, img in sorted(overlays.items())]
