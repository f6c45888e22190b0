"""Issue 11 in Debian's headless chromium: predict from a panorama, play a round against the model, see the
similar known places on the map, walk a folder most-uncertain first. Screenshots at 1300 px and 390 px."""

import time

import pytest
from test_browser import ARGS, ARTIFACTS, CHROMIUM, _shot, browser, page  # noqa: F401 - fixtures

from geodemo.ui.settings import EXAMPLES_DIR

pytest_plugins = ["app_fixtures"]
pytestmark = pytest.mark.browser
PANORAMA = EXAMPLES_DIR / "panorama.jpg"


def _artifact(pg, name: str) -> None:
    """A screenshot to tests/artifacts/ only (docs/screenshots/ of these: test_browser_predict_stale)."""
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _mobile_shot(browser, url: str, name: str, steps) -> None:  # noqa: F811 - the fixture's value
    """Run `steps(page)` in a 390 px wide phone-sized page and save a full-page screenshot."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(url)
    pg.wait_for_selector("#predict-button")
    steps(pg)
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    context.close()


def _open_tab(pg, name: str) -> None:
    """Click a tab, through Gradio's "More tabs" menu where a narrow screen hides it there."""
    tab = pg.get_by_role("tab", name=name, exact=True)
    if tab.count():
        tab.first.click()
    else:
        pg.get_by_label("More tabs").first.click()
        pg.locator(".overflow-dropdown button", has_text=name).first.click()


def _predict_panorama(pg) -> None:
    _open_tab(pg, "Panorama")
    pg.locator("#panorama-image input[type=file]").set_input_files(str(PANORAMA))
    pg.locator("#panorama-image img").first.wait_for()
    pg.click("#panorama-button")
    pg.wait_for_selector("#panorama-summary h3")
    pg.locator("#panorama-crops img").nth(3).wait_for()
    pg.locator("#panorama-map .js-plotly-plot").first.wait_for()
    time.sleep(2)  # let the map finish drawing before the screenshot


def test_upload_a_panorama_and_see_the_crops(page, browser, app_server):  # noqa: F811
    _predict_panorama(page)
    assert "°" in page.locator("#panorama-summary").inner_text()
    assert page.locator("#panorama-crops img").count() >= 4
    captions = page.locator("#panorama-crops").inner_text()
    assert "North" in captions and "West" in captions
    _artifact(page, "panorama")
    _mobile_shot(browser, app_server.url, "panorama-390", _predict_panorama)


def _play_one_round(pg) -> None:
    _open_tab(pg, "Play")
    pg.click("#play-new")
    pg.wait_for_function("document.querySelector('#play-round').innerText.includes('Round 1 /')")
    pg.locator("#play-view-0 img").first.wait_for()
    pg.locator("#play-map svg path.county").first.wait_for()
    pg.locator("#play-map svg").scroll_into_view_if_needed()
    box = pg.locator("#play-map svg").bounding_box()
    pg.mouse.click(box["x"] + box["width"] * 0.42, box["y"] + box["height"] * 0.2)  # near Zagreb
    pg.wait_for_function("document.querySelector('#play-lat input').value !== ''")
    pg.click("#play-guess")
    # the first guess loads the model (and exports its ONNX backbone): allow for a busy machine
    revealed = "document.querySelector('#play-round').innerText.includes('points')"
    pg.wait_for_function(revealed, timeout=240_000)
    pg.locator("#play-reveal .js-plotly-plot").first.wait_for()
    time.sleep(2)  # let the map finish drawing before the screenshot


def test_play_one_round(page, browser, app_server):  # noqa: F811
    _play_one_round(page)
    text = page.locator("#play-round").inner_text()
    assert "It was near" in text and "km off" in text and "model" in text
    legend = page.locator("#play-reveal").inner_text()
    assert "your guess" in legend and "truth" in legend
    _shot(page, "play")
    _mobile_shot(browser, app_server.url, "play-390", _play_one_round)


def _predict_with_neighbours(pg, sample_dir) -> None:
    from test_browser import _upload_views

    from geodemo.data import read_locations, view_paths

    uid = read_locations(sample_dir).uuid.iloc[3]
    _upload_views(pg, "predict", view_paths(sample_dir, uid))
    pg.click("#predict-button")
    pg.wait_for_selector("#predict-summary h3")
    pg.locator("#predict-neighbours img").nth(4).wait_for()
    pg.locator("#predict-map .js-plotly-plot").first.wait_for()
    time.sleep(2)  # let the map finish drawing before the screenshot


def test_neighbours_on_the_map_with_their_photos(page, browser, app_server, sample_dir):  # noqa: F811
    _predict_with_neighbours(page, sample_dir)
    assert "similar-looking known places" in page.locator("#predict-map").inner_text()
    assert "not the answer" in page.locator("#predict-neighbours-caption").inner_text()
    assert "cosine" in page.locator("#predict-neighbours").inner_text()
    _artifact(page, "neighbours")
    page.click("#predict-clear")  # Clear takes the neighbours away with the rest of the result
    page.locator("#predict-neighbours").wait_for(state="hidden")
    page.wait_for_function(  # and the map (redrawn in place) shows no prediction any more
        "(() => { const gd = document.querySelector('#predict-map .js-plotly-plot');"
        " return !!(gd && gd.data) && !gd.data.some((t) => t.name === 'prediction'); })()"
    )
    page.wait_for_function("!document.querySelector('#predict-map').innerText.includes('similar-looking')")
    _mobile_shot(browser, app_server.url, "neighbours-390", lambda p: _predict_with_neighbours(p, sample_dir))


def test_walk_a_folder_most_uncertain_first(page):  # noqa: F811
    import re

    from test_browser import _pick

    page.get_by_role("tab", name="Label").click()
    _pick(page, "label-folder", str(EXAMPLES_DIR))
    page.locator("#label-uncertain-first input").check()
    page.click("#label-load")
    page.wait_for_function("document.querySelector('#label-walk').innerText.includes('expected error')",
                           timeout=240_000)
    first = re.search(r"expected error (\d+)", page.locator("#label-walk").inner_text())
    page.click("#label-skip")
    page.wait_for_function("document.querySelector('#label-walk').innerText.includes('2 / 3')")
    second = re.search(r"expected error (\d+)", page.locator("#label-walk").inner_text())
    assert first and second and int(first.group(1)) >= int(second.group(1))
    _shot(page, "label-uncertain")
