"""The app in Debian's headless chromium (Playwright): each tab end to end, and no request leaves the host.

Screenshots go to tests/artifacts/; with GEODEMO_UPDATE_SCREENSHOTS=1 also to docs/screenshots/<tab>.png, the
README's pictures (`GEODEMO_UPDATE_SCREENSHOTS=1 .venv/bin/python -m pytest -m browser`).
"""

import os
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from geodemo.data import read_locations, view_paths

pytest_plugins = ["app_fixtures"]
pytestmark = pytest.mark.browser
playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        reason = "Debian chromium is not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("GEODEMO_REQUIRE_BROWSER") == "1":  # CI: a missing browser is a failure
            pytest.fail(reason)
        pytest.skip(reason)
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, app_server):
    """A fresh page on the app; after the test, asserts that every request stayed on this host."""
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    pg = context.new_page()
    requests = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.set_default_timeout(60_000)
    pg.goto(app_server.url)
    pg.wait_for_selector("#predict-button")
    yield pg
    context.close()
    off_host = [
        u
        for u in requests
        if urlparse(u).scheme not in ("data", "blob")
        and urlparse(u).hostname not in ("127.0.0.1", "localhost")
    ]
    assert not off_host, f"requests left the host: {off_host[:5]}"


def _shot(pg, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    if os.environ.get("GEODEMO_UPDATE_SCREENSHOTS") == "1":  # a test run leaves tracked files alone
        DOCS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(DOCS / f"{name}.png"), full_page=True)


def _upload_views(pg, prefix: str, paths: dict) -> None:
    for v, name in enumerate(("north", "east", "south", "west")):
        if v in paths:
            pg.locator(f"#{prefix}-{name} input[type=file]").set_input_files(str(paths[v]))
    for v, name in enumerate(("north", "east", "south", "west")):
        if v in paths:
            pg.locator(f"#{prefix}-{name} img").first.wait_for()


def _pick(pg, elem_id: str, text: str) -> None:
    """Choose `text` in a Gradio dropdown."""
    box = pg.locator(f"#{elem_id} input")
    box.click()
    box.fill(text)
    pg.locator("ul[role=listbox] li", has_text=text).first.click()


def _fill(pg, elem_id: str, value) -> None:
    box = pg.locator(f"#{elem_id} input")
    box.fill(str(value))
    box.press("Tab")


def test_predict_shows_map_and_summary(page, sample_dir):
    uid = read_locations(sample_dir).uuid.iloc[0]
    _upload_views(page, "predict", view_paths(sample_dir, uid))
    page.click("#predict-button")
    page.wait_for_selector("#predict-summary h3")
    page.locator("#predict-map .js-plotly-plot").first.wait_for()
    assert "°" in page.locator("#predict-summary").inner_text()
    time.sleep(2)  # let the map finish drawing before the screenshot
    _shot(page, "predict")


def test_label_by_clicking_the_map(page, app_server, sample_dir):
    page.get_by_role("tab", name="Label").click()
    page.wait_for_selector("#label-map svg path.county")
    uid = read_locations(sample_dir).uuid.iloc[1]
    _upload_views(page, "label", view_paths(sample_dir, uid))
    box = page.locator("#label-map svg").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.42, box["y"] + box["height"] * 0.2)  # near Zagreb
    page.wait_for_function("document.querySelector('#label-lat input').value !== ''")
    page.locator("#label-map .pin").wait_for()
    lat = float(page.locator("#label-lat input").input_value())
    lon = float(page.locator("#label-lon input").input_value())
    assert 45.3 < lat < 46.3 and 15.4 < lon < 16.5
    csv = app_server.settings.labels_dir / "data.csv"
    before = len(read_locations(app_server.settings.labels_dir)) if csv.exists() else 0
    _shot(page, "label")
    page.keyboard.press("Control+Enter")  # the save & next shortcut
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not csv.exists() or len(read_locations(csv.parent)) == before):
        time.sleep(0.2)
    frame = read_locations(app_server.settings.labels_dir)
    assert len(frame) == before + 1
    assert abs(frame.latitude.iloc[-1] - lat) < 1e-5 and abs(frame.longitude.iloc[-1] - lon) < 1e-5


def test_train_job_shows_progress_and_cancels(page):
    page.get_by_role("tab", name="Train").click()
    _pick(page, "train-backbone", "test_efficientnet")
    _pick(page, "train-dataset", "LUMEN sample")
    _pick(page, "train-accelerator", "cpu")
    page.locator("#train-name input, #train-name textarea").first.fill("browser-run")
    for elem_id, value in (
        ("train-epochs", 1),
        ("train-image-size", 64),
        ("train-batch-size", 4),
        ("train-limit", 1),
    ):
        _fill(page, elem_id, value)
    page.click("#train-start")
    status = page.locator("#train-status input, #train-status textarea").first
    page.wait_for_function("document.querySelector('#train-job textarea, #train-job input').value !== ''")
    deadline = time.monotonic() + 60
    while status.input_value() != "running" and time.monotonic() < deadline:
        time.sleep(0.3)
    assert status.input_value() == "running"
    page.locator("#train-progress .job-bar").wait_for()
    log = page.locator("#train-log textarea")
    deadline = time.monotonic() + 30  # let the job log a few lines for the screenshot
    while log.input_value().count("\n") < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    _shot(page, "train")
    page.click("#train-cancel")
    deadline = time.monotonic() + 30
    while status.input_value() != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.3)
    assert status.input_value() == "cancelled"


def test_evaluate_and_inspect_the_worst_location(page):
    page.get_by_role("tab", name="Evaluate").click()
    _pick(page, "eval-dataset", "bundled examples")
    page.click("#eval-run")
    page.locator("#eval-metrics", has_text="mean error").wait_for(timeout=120_000)
    page.locator("#eval-worst [role=gridcell]").nth(1).click()
    page.wait_for_selector("#eval-views img")
    page.locator("#eval-detail", has_text="error").wait_for()
    assert page.locator("#eval-views img").count() >= 1
    time.sleep(2)
    _shot(page, "evaluate")
