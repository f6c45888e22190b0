"""Issue 22 in headless chromium: on Predict and Panorama an output belongs to the inputs that made it.

New photos clear the previous truth and result; a truth is scored only once both numbers are in (after a
pause or Enter); a text file named .jpg is refused on upload; a new or refused panorama clears the old crops,
map and summary; a window narrowed after a prediction re-fits the map. Screenshots at 1366 px and 390 px
(docs/screenshots/ with GEODEMO_UPDATE_SCREENSHOTS=1).
"""

import os
import re
import time
from urllib.parse import urlparse

import pytest
from PIL import Image
from test_browser import ARTIFACTS, DOCS, _upload_views, browser  # noqa: F401, F811 - fixtures
from test_browser_beyond import _open_tab

from geodemo.data import read_locations, view_paths
from geodemo.ui.settings import EXAMPLES_DIR

pytest_plugins = ["app_fixtures"]
pytestmark = pytest.mark.browser
PANORAMA = EXAMPLES_DIR / "panorama.jpg"
MAP_HAS = (
    "(() => {{ const gd = document.querySelector('#{prefix}-map .js-plotly-plot');"
    " return !!(gd && gd.data && gd.data.some((t) => t.name === '{name}')); }})()"
)
CROATIA_IN_VIEW = """() => {
  const gd = document.querySelector('#predict-map .js-plotly-plot');
  const b = gd._fullLayout.map._subplot.map.getBounds();
  return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()];
}"""


def _save(pg, name: str, full_page: bool = True) -> None:
    """A screenshot to tests/artifacts/, and to docs/screenshots/ with GEODEMO_UPDATE_SCREENSHOTS=1."""
    at = pg.evaluate("window.scrollY")
    for y in range(0, pg.evaluate("document.body.scrollHeight"), 500):  # galleries load their images lazily
        pg.evaluate(f"window.scrollTo(0, {y})")
        time.sleep(0.1)
    pg.evaluate(f"window.scrollTo(0, {at})")
    pg.wait_for_function("[...document.images].every((i) => i.complete)")
    time.sleep(2)  # let the map finish drawing
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)
    if os.environ.get("GEODEMO_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(DOCS / f"{name}.png"), full_page=full_page)


def _page(browser, url: str, width: int):  # noqa: F811 - the fixture's value
    context = browser.new_context(viewport={"width": width, "height": 900 if width > 500 else 844})
    pg = context.new_page()
    pg.requests = []
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.set_default_timeout(180_000)  # the 2-core test machine is shared: a prediction can be slow
    pg.goto(url)
    pg.wait_for_selector("#predict-button")
    return context, pg


@pytest.fixture
def page(browser, app_server):  # noqa: F811
    """A fresh 1366 px page; afterwards, asserts that every request stayed on this host."""
    context, pg = _page(browser, app_server.url, 1366)
    yield pg
    context.close()
    off_host = [u for u in pg.requests if urlparse(u).scheme not in ("data", "blob")
                and urlparse(u).hostname not in ("127.0.0.1", "localhost")]
    assert not off_host, f"requests left the host: {off_host[:5]}"


def _field(pg, elem_id: str):
    return pg.locator(f"#{elem_id} textarea, #{elem_id} input").first


def _text(pg, elem_id: str) -> str:
    return pg.locator(f"#{elem_id}").inner_text()


def _predict_example(pg, row: int = 0) -> None:
    """Load a bundled example (its photos and its truth) and predict; wait for the error and the map."""
    pg.locator("tr.tr-body").nth(row).click()
    pg.wait_for_function(
        "document.querySelector('#predict-truth-lat textarea, #predict-truth-lat input').value !== ''"
        " && document.querySelectorAll('#predict-north img, #predict-west img').length >= 2"
    )
    pg.click("#predict-button")
    pg.locator("#predict-truth-result", has_text="Error").wait_for()
    pg.wait_for_function(MAP_HAS.format(prefix="predict", name="truth"))


def test_new_photos_clear_the_previous_truth_and_result(page, sample_dir):  # noqa: F811
    _predict_example(page)
    _save(page, "predict_truth")
    uid = read_locations(sample_dir).uuid.iloc[5]
    _upload_views(page, "predict", view_paths(sample_dir, uid))
    # the truth given for the previous location, its error and the old result are all gone
    page.wait_for_function("document.querySelector('#predict-truth-lat textarea, #predict-truth-lat input')"
                           ".value === ''")
    assert _field(page, "predict-truth-lon").input_value() == ""
    page.wait_for_function("!document.querySelector('#predict-summary h3')")
    assert _text(page, "predict-truth-result").strip() == ""
    page.wait_for_function("!" + MAP_HAS.format(prefix="predict", name="prediction"))
    page.click("#predict-button")  # the next prediction is not scored against the old truth
    page.wait_for_selector("#predict-summary h3")
    page.wait_for_function(MAP_HAS.format(prefix="predict", name="prediction"))
    assert "Error" not in _text(page, "predict-truth-result")
    assert not page.evaluate(MAP_HAS.format(prefix="predict", name="truth"))
    page.locator("#predict-neighbours img").nth(4).wait_for()
    _save(page, "predict")
    # the map with the similar places' pink dots, and their photos below it, in one (taller) window
    page.set_viewport_size({"width": 1366, "height": 1280})
    page.evaluate("document.querySelector('#predict-map-title').scrollIntoView({block: 'start'})")
    _save(page, "neighbours", full_page=False)
    page.set_viewport_size({"width": 1366, "height": 900})


def test_a_typed_truth_is_scored_once_both_numbers_are_in(page, sample_dir):  # noqa: F811
    uid = read_locations(sample_dir).uuid.iloc[2]
    _upload_views(page, "predict", view_paths(sample_dir, uid))
    page.click("#predict-button")
    page.wait_for_selector("#predict-summary h3")
    page.wait_for_function(MAP_HAS.format(prefix="predict", name="prediction"))
    seen = []
    _field(page, "predict-truth-lat").press_sequentially("45.815", delay=120)
    _field(page, "predict-truth-lon").click()
    for key in "15.98":  # typing the longitude: no half-typed point is scored or warned about
        _field(page, "predict-truth-lon").press_sequentially(key)
        time.sleep(0.12)
        seen.append(_text(page, "predict-truth-result"))
    assert not any("Error" in s or "outside Croatia" in s for s in seen), seen
    page.locator("#predict-truth-result", has_text="Error").wait_for(timeout=30_000)  # after the pause
    assert "outside Croatia" not in _text(page, "predict-truth-result")
    page.wait_for_function(MAP_HAS.format(prefix="predict", name="truth"))
    # a cleared field takes the truth's error and marker away again after the pause
    _field(page, "predict-truth-lon").fill("")
    page.wait_for_function("document.querySelector('#predict-truth-result').innerText.trim() === ''")
    page.wait_for_function("!" + MAP_HAS.format(prefix="predict", name="truth"))
    # Enter scores at once
    _field(page, "predict-truth-lon").fill("16.44")
    _field(page, "predict-truth-lon").press("Enter")
    page.locator("#predict-truth-result", has_text="Error").wait_for()


def test_a_text_file_named_jpg_is_refused_on_upload(page, tmp_path):  # noqa: F811
    fake = tmp_path / "north.jpg"
    fake.write_text("not a photo\n" * 100)
    start = time.perf_counter()
    page.locator("#predict-north input[type=file]").set_input_files(str(fake))
    page.locator(".toast-body", has_text="not a readable image").first.wait_for(timeout=20_000)
    took = time.perf_counter() - start
    page.wait_for_function("!document.querySelector('#predict-north img')")  # the refused file is not kept
    assert "north.jpg" in page.locator(".toast-body").first.inner_text()
    # refused on upload, with no Predict pressed and no model run; the check's own speed (< 0.5 s) is timed in
    # test_predict_tab (here the browser's upload and the shared machine's load dominate)
    print(f"refused {took:.2f} s after the upload began")
    assert page.locator("#predict-summary h3").count() == 0


def _predict_panorama(pg) -> None:
    _open_tab(pg, "Panorama")
    pg.locator("#panorama-image input[type=file]").set_input_files(str(PANORAMA))
    pg.locator("#panorama-image img").first.wait_for()
    _field(pg, "panorama-truth-lat").fill("42.65")
    _field(pg, "panorama-truth-lon").fill("18.09")
    pg.click("#panorama-button")
    pg.wait_for_selector("#panorama-summary h3")
    pg.locator("#panorama-crops img").nth(3).wait_for()
    pg.locator("#panorama-truth-result", has_text="Error").wait_for()
    pg.locator("#panorama-cams img").first.wait_for()
    pg.wait_for_function(MAP_HAS.format(prefix="panorama", name="50% credible region"))


def test_panorama_has_the_result_panel_and_a_new_or_refused_upload_clears_it(  # noqa: F811
    page, browser, app_server, tmp_path  # noqa: F811
):
    _predict_panorama(page)
    assert page.evaluate(MAP_HAS.format(prefix="panorama", name="truth"))
    _save(page, "panorama")
    square = tmp_path / "square.jpg"
    Image.new("RGB", (640, 640), "grey").save(square)
    page.locator("#panorama-image input[type=file]").set_input_files(str(square))
    page.locator(".toast-body", has_text="not a 2:1").first.wait_for(timeout=20_000)
    page.wait_for_function("!document.querySelector('#panorama-summary h3')")
    assert page.locator("#panorama-crops img").count() == 0
    # the clearing event may still show Gradio's pending timer ("0.0s") for a moment: wait for it to end
    page.wait_for_function("document.querySelector('#panorama-truth-result').innerText.trim() === ''",
                           timeout=20_000)
    assert _field(page, "panorama-truth-lat").input_value() == ""
    page.wait_for_function("!" + MAP_HAS.format(prefix="panorama", name="prediction"))
    context, phone = _page(browser, app_server.url, 390)
    _predict_panorama(phone)
    fits = ("(() => { const gd = document.querySelector('#panorama-map .js-plotly-plot');"
            " const b = gd._fullLayout.map._subplot.map.getBounds();"
            " return b.getWest() < 13.6 && b.getEast() > 19.3 && b.getNorth() > 46.4; })()")
    phone.wait_for_function(fits, timeout=20_000)  # the phone's map shows all of Croatia
    _save(phone, "panorama-390")
    context.close()


def test_phone_screenshots_and_the_map_refits_when_the_window_narrows(  # noqa: F811
    page, browser, app_server, sample_dir  # noqa: F811
):
    _predict_example(page, 1)
    page.set_viewport_size({"width": 390, "height": 844})  # a desktop window narrowed after a prediction
    fits = f"(() => {{ const b = ({CROATIA_IN_VIEW})(); return b[0] < 13.6 && b[2] > 19.3; }})()"
    page.wait_for_function(fits, timeout=20_000)
    time.sleep(3)  # and it stays fitted (Gradio re-plots its Plot on a resize)
    page.wait_for_function(fits, timeout=20_000)
    bounds = page.evaluate(CROATIA_IN_VIEW)
    assert bounds[0] < 13.6 and bounds[2] > 19.3 and bounds[1] < 42.5 and bounds[3] > 46.4, bounds
    _save(page, "predict_truth-390")
    page.set_viewport_size({"width": 1366, "height": 900})  # and widening zooms back in
    page.wait_for_function(f"(() => {{ const b = ({CROATIA_IN_VIEW})(); return b[2] - b[0] < 9; }})()",
                           timeout=20_000)
    context, phone = _page(browser, app_server.url, 390)
    uid = read_locations(sample_dir).uuid.iloc[3]
    _upload_views(phone, "predict", view_paths(sample_dir, uid))
    phone.click("#predict-button")
    phone.wait_for_selector("#predict-summary h3")
    phone.locator("#predict-neighbours img").nth(4).wait_for()
    phone.locator("#predict-cams img").nth(3).wait_for()
    _save(phone, "predict-390")
    for gallery in ("predict-neighbours", "predict-cams"):  # galleries wrap: no sideways scrolling
        assert phone.evaluate(f"(() => {{ const g = document.querySelector('#{gallery} .grid-container');"
                              " return g.scrollWidth <= g.clientWidth + 1; })()"), gallery
    phone.evaluate("document.querySelector('#predict-neighbours').scrollIntoView({block: 'end'})")
    _save(phone, "neighbours-390", full_page=False)
    context.close()
    assert re.search(r"\d+\.\d+° N", _text(page, "predict-summary"))


def test_one_view_grad_cam_shows_the_photo(page, sample_dir):  # noqa: F811
    uid = read_locations(sample_dir).uuid.iloc[7]
    _upload_views(page, "predict", {0: view_paths(sample_dir, uid)[0]})
    page.click("#predict-button")
    cam = page.locator("#predict-cams img").first
    cam.wait_for()
    time.sleep(1)
    box = cam.bounding_box()
    fit = cam.evaluate("(img) => getComputedStyle(img).objectFit")
    gallery = page.locator("#predict-cams").bounding_box()
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#predict-cams").screenshot(path=str(ARTIFACTS / "predict-one-view-cam.png"))
    # the whole square overlay is shown (not a full-width crop of it): contained, or a square tile
    assert fit == "contain" or abs(box["width"] / box["height"] - 1) < 0.1, (fit, box)
    assert box["width"] < 0.6 * gallery["width"], (box, gallery)
