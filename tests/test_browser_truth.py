"""Issue 8 in Debian's headless chromium: a truth typed (decimal comma), clicked on the result map or carried
by an example gives the error in km; a refused photo clears the old result; Clear resets the page."""

import re
import time

import pytest
from test_browser import ARGS, ARTIFACTS, CHROMIUM, _shot, _upload_views, browser, page  # noqa: F401 - fixtures

from geodemo.data import read_locations, view_paths
from geodemo.geo import haversine_km

pytest_plugins = ["app_fixtures"]
pytestmark = pytest.mark.browser


def _field(pg, elem_id: str):
    return pg.locator(f"#{elem_id} textarea, #{elem_id} input").first


# the result map shows a prediction (Plotly's data on the page's map div)
MAP_HAS_PREDICTION = (
    "(() => { const gd = document.querySelector('#predict-map .js-plotly-plot');"
    " return !!(gd && gd.data && gd.data.some((t) => t.name === 'prediction')); })()"
)


def _prediction_point(pg) -> tuple[float, float]:
    head = pg.locator("#predict-summary h3").inner_text()
    lat, lon = re.findall(r"(-?\d+\.\d+)°", head)[:2]
    return float(lat), float(lon)


def test_truth_gives_the_error_and_an_error_clears_the_old_result(page, sample_dir, tmp_path):  # noqa: F811
    uid = read_locations(sample_dir).uuid.iloc[2]
    _upload_views(page, "predict", view_paths(sample_dir, uid))
    _field(page, "predict-truth-lat").fill("45,8150")  # a decimal comma is fine
    _field(page, "predict-truth-lon").fill("15.9819")
    _field(page, "predict-truth-lon").press("Tab")
    page.evaluate("document.querySelector('#predict-map .js-plotly-plot').__before = true")
    page.click("#predict-button")
    page.wait_for_selector("#predict-summary h3")
    page.locator("#predict-truth-result", has_text="Error").wait_for()
    page.wait_for_function(MAP_HAS_PREDICTION)
    # drawn in place (Plotly.react on the map already there), not a re-created Plotly div and MapLibre map
    assert page.evaluate("document.querySelector('#predict-map .js-plotly-plot').__before === true")
    text = page.locator("#predict-truth-result").inner_text()
    shown = float(re.search(r"Error: ([\d.]+) km", text).group(1))
    lat, lon = _prediction_point(page)
    assert shown == pytest.approx(float(haversine_km(45.815, 15.9819, lat, lon)), abs=0.2)
    assert "credible region" in text
    # typing the latitude first (its field loses focus) is not an error
    assert page.locator(".toast-body", has_text="longitude too").count() == 0
    time.sleep(2)
    ARTIFACTS.mkdir(exist_ok=True)  # docs/screenshots/predict_truth.png comes from test_browser_predict_stale
    page.screenshot(path=str(ARTIFACTS / "predict_truth-typed.png"), full_page=True)

    broken = tmp_path / "north.jpg"
    broken.write_bytes(b"this is not a JPEG")
    page.locator("#predict-north input[type=file]").set_input_files(str(broken))
    # refused on upload (not after a model run), and the old result goes with the photos it was made from
    page.locator(".toast-body", has_text="not a readable image").first.wait_for()
    page.wait_for_function("!document.querySelector('#predict-north img')")
    page.wait_for_function("!document.querySelector('#predict-summary h3')")
    page.wait_for_function("document.querySelector('#predict-truth-result').innerText.trim() === ''")
    assert "appears here" in page.locator("#predict-summary").inner_text()
    page.wait_for_function("!" + MAP_HAS_PREDICTION)  # and the map no longer shows the old prediction
    _shot(page, "predict_error_cleared")

    page.click("#predict-clear")  # (the refused north view is already empty: wait on the others)
    page.wait_for_function("!document.querySelector('#predict-east img, #predict-west img')")
    page.wait_for_function("document.querySelector('#predict-truth-lat textarea, #predict-truth-lat input')"
                           ".value === ''")


def test_truth_from_an_example_and_from_a_click_on_the_map(page):  # noqa: F811
    page.locator("tr.tr-body").first.click()  # the first bundled example carries its truth
    page.wait_for_function(
        "document.querySelector('#predict-truth-lat textarea, #predict-truth-lat input').value !== ''"
    )
    truth = float(_field(page, "predict-truth-lat").input_value())
    assert 42.3 < truth < 46.6
    page.click("#predict-button")
    page.locator("#predict-truth-result", has_text="Error").wait_for()
    before = page.locator("#predict-truth-result").inner_text()
    plot = page.locator("#predict-map .js-plotly-plot").first
    plot.scroll_into_view_if_needed()
    page.wait_for_function(
        "(() => { const gd = document.querySelector('#predict-map .js-plotly-plot');"
        " const m = gd && gd._fullLayout.map && gd._fullLayout.map._subplot;"
        " return !!(m && m.map && m.map.__geodemoTruth); })()"
    )
    box = plot.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.25)  # northern Croatia
    page.wait_for_function(
        f"document.querySelector('#predict-truth-lat textarea, #predict-truth-lat input').value !== '{truth}'"
        " && document.querySelector('#predict-truth-lat textarea, #predict-truth-lat input').value !== ''"
    )
    clicked = float(_field(page, "predict-truth-lat").input_value())
    assert 44.5 < clicked < 46.6 and clicked != truth
    page.wait_for_function(f"!document.querySelector('#predict-truth-result').innerText.includes({before!r})")
    assert "Error" in page.locator("#predict-truth-result").inner_text()


def test_truth_at_phone_width(browser, app_server, sample_dir):  # noqa: F811
    context = browser.new_context(viewport={"width": 390, "height": 844})
    pg = context.new_page()
    pg.set_default_timeout(180_000)  # the 2-core test machine is shared: prediction + Grad-CAM can be slow
    pg.goto(app_server.url)
    pg.wait_for_selector("#predict-button")
    pg.locator("tr.tr-body").nth(1).click()
    pg.wait_for_function(
        "document.querySelector('#predict-truth-lat textarea, #predict-truth-lat input').value !== ''"
        " && document.querySelectorAll('#predict-north img, #predict-west img').length >= 2"
    )
    pg.click("#predict-button")
    pg.locator("#predict-truth-result", has_text="Error").wait_for()
    time.sleep(2)
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "predict_truth_390.png"), full_page=True)
    # the whole country stays in view on a phone: the map zooms out to fit Croatia's extent
    bounds = pg.evaluate("""() => {
      const gd = document.querySelector('#predict-map .js-plotly-plot');
      const b = gd._fullLayout.map._subplot.map.getBounds();
      return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()];
    }""")
    assert bounds[0] < 13.6 and bounds[2] > 19.3 and bounds[1] < 42.5 and bounds[3] > 46.4, bounds
    context.close()
