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
    context = browser.new_context(viewport={"width": 1366, "height": 900})
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


NO_TOASTS = "geodemo-no-toasts"  # a style that hides notifications while a screenshot is taken


def _toasts(pg, shown: bool) -> None:
    """Hide (or show again) the notifications, which would cover the page in a screenshot."""
    pg.evaluate(
        "([id, shown]) => { const old = document.getElementById(id); if (old) old.remove();"
        " if (!shown) { const s = document.createElement('style'); s.id = id;"
        " s.textContent = '.toast-wrap { display: none !important; }'; document.head.append(s); } }",
        [NO_TOASTS, shown],
    )


def _shot(pg, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    _toasts(pg, False)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    if os.environ.get("GEODEMO_UPDATE_SCREENSHOTS") == "1":  # a test run leaves tracked files alone
        DOCS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(DOCS / f"{name}.png"), full_page=True)
    _toasts(pg, True)


def _shot_mobile(pg, name: str) -> None:
    """The same state at a phone's width (390 px), to tests/artifacts/<name>-390.png (and docs/screenshots/
    with GEODEMO_UPDATE_SCREENSHOTS=1); then back to the desktop width."""
    ARTIFACTS.mkdir(exist_ok=True)
    desktop = pg.viewport_size
    pg.set_viewport_size({"width": 390, "height": 844})
    time.sleep(1.5)
    _toasts(pg, False)
    pg.screenshot(path=str(ARTIFACTS / f"{name}-390.png"), full_page=True)
    if os.environ.get("GEODEMO_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(DOCS / f"{name}-390.png"), full_page=True)
    _toasts(pg, True)
    pg.set_viewport_size(desktop)
    time.sleep(0.5)


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
    page.keyboard.press("Control+Enter")  # the save & next shortcut
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not csv.exists() or len(read_locations(csv.parent)) == before):
        time.sleep(0.2)
    frame = read_locations(app_server.settings.labels_dir)
    assert len(frame) == before + 1
    assert abs(frame.latitude.iloc[-1] - lat) < 1e-5 and abs(frame.longitude.iloc[-1] - lon) < 1e-5


def _map_click(pg, fx: float, fy: float) -> None:
    box = pg.locator("#label-map svg").bounding_box()
    pg.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)


def _value(pg, elem_id: str) -> str:
    return pg.locator(f"#{elem_id} input, #{elem_id} textarea").first.input_value()


def test_label_three_locations_from_a_folder(page, app_server, sample_dir):
    """Walk a folder: each location starts without a point, Save waits for a click, undo steps back."""
    page.get_by_role("tab", name="Label").click()
    page.wait_for_selector("#label-map svg path.county")
    store = app_server.settings.labels_dir
    before = len(read_locations(store)) if (store / "data.csv").exists() else 0
    _pick(page, "label-folder", "lumen-sample")
    page.click("#label-load")
    page.locator("#label-walk", has_text="Location 1 /").wait_for()
    from geodemo.labels import LabelStore
    from geodemo.ui.label_tab import labelled_sources

    done = labelled_sources(LabelStore(store))  # skipped by the walk (another test may have labelled some)
    ids = sorted(p.name for p in (sample_dir / "images").iterdir() if p.name not in done)
    points = [(0.42, 0.2), (0.3, 0.35), (0.75, 0.25)]  # near Zagreb, in Lika, in Slavonia
    clicked = []
    for k, (fx, fy) in enumerate(points):
        page.locator("#label-walk", has_text=f"Location {k + 1} /").wait_for()
        assert _value(page, "label-lat") == "" and _value(page, "label-lon") == ""  # nothing carried over
        assert page.locator("#label-save").is_disabled()
        assert page.locator("#label-map .pin").count() == 0
        page.keyboard.press("Control+Enter")  # ignored: this location has no point yet
        _map_click(page, fx, fy)
        page.wait_for_function("document.querySelector('#label-lat input').value !== ''")
        page.locator("#label-map .pin").wait_for()
        clicked.append((float(_value(page, "label-lat")), float(_value(page, "label-lon"))))
        if k == 0:
            _shot(page, "label")
            _shot_mobile(page, "label")
        page.wait_for_function("!document.querySelector('#label-save').disabled")
        page.keyboard.press("Control+Enter")
        page.keyboard.press("Control+Enter")  # a double press must not save this point twice
    page.locator("#label-walk", has_text="Location 4 /").wait_for()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(read_locations(store)) < before + 3:
        time.sleep(0.2)
    time.sleep(1)
    frame = read_locations(store).iloc[before:]
    assert len(frame) == 3
    assert frame.source_uuid.tolist() == ids[:3]
    for (lat, lon), row in zip(clicked, frame.itertuples()):
        assert abs(row.latitude - lat) < 1e-5 and abs(row.longitude - lon) < 1e-5
    assert len({(round(a, 3), round(b, 3)) for a, b in clicked}) == 3
    page.click("#label-undo")
    page.locator("#label-walk", has_text="Location 3 /").wait_for()
    assert _value(page, "label-lat") == "" and page.locator("#label-save").is_disabled()
    assert read_locations(store).source_uuid.tolist()[before:] == ids[:2]
    assert not (store / "images" / frame.uuid.iloc[2]).exists()
    # zoom in twice about the centre: a click there still lands on the map's centre (44.475 N, 16.45 E)
    full = page.locator("#label-map svg").get_attribute("viewBox")
    page.click("#label-map [data-zoom=in]")
    page.click("#label-map [data-zoom=in]")
    _wait(lambda: page.locator("#label-map svg").get_attribute("viewBox") != full, 10, "the zoom")
    _map_click(page, 0.5, 0.5)
    page.wait_for_function("document.querySelector('#label-lat input').value !== ''")
    lat, lon = float(_value(page, "label-lat")), float(_value(page, "label-lon"))
    assert abs(lat - 44.475) < 0.02 and abs(lon - 16.45) < 0.02
    _shot_mobile(page, "label-zoomed")
    page.click("#label-map [data-zoom=reset]")
    width = float(full.split()[2])
    svg = page.locator("#label-map svg")
    _wait(lambda: float(svg.get_attribute("viewBox").split()[2]) == width, 10, "the reset")


def _wait(condition, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def _start_job(pg, name: str) -> None:
    pg.locator("#train-name input, #train-name textarea").first.fill(name)
    pg.click("#train-start")


def test_two_jobs_reload_find_and_cancel_the_running_one(page, app_server, sample_dir):
    """Start two jobs; after a reload the table lists both, the running one is found and cancelled."""
    from geodemo.labels import LabelStore

    manager = app_server.demo.geodemo_jobs
    store = LabelStore(app_server.settings.labels_dir)
    if store.count() == 0:  # "my labels" needs one label to train on (the label tests may not have run)
        uid = read_locations(sample_dir).uuid.iloc[5]
        store.add(dict(zip((0, 90, 180, 270), view_paths(sample_dir, uid).values())), 45.8, 15.98)
    page.get_by_role("tab", name="Train").click()
    _pick(page, "train-backbone", "test_efficientnet")
    page.locator("#train-datasets label", has_text="LUMEN sample").click()
    page.locator("#train-datasets label", has_text="my labels").click()  # sample + my labels
    page.locator("#train-datasets label", has_text="bundled examples").click()  # untick the default
    _pick(page, "train-accelerator", "cpu")
    # long enough (500 epochs of every batch) that the first job is still running after the reload below,
    # even on a warm embedding cache; both jobs are cancelled
    for elem_id, value in (("train-epochs", 500), ("train-image-size", 64), ("train-batch-size", 4),
                           ("train-limit", 0)):
        _fill(page, elem_id, value)
    job_box = page.locator("#train-job textarea, #train-job input").first
    status = page.locator("#train-status input, #train-status textarea").first
    _start_job(page, "browser-run")
    _wait(lambda: job_box.input_value() != "", what="the first job id")
    first = job_box.input_value()
    assert manager.get(first).args.count("--data") == 2  # trains on the sample and my labels together
    _wait(lambda: status.input_value() == "running", what="the first job to run")
    _start_job(page, "browser-run")  # the name is taken from submission on
    page.locator(".toast-body", has_text="already exists").first.wait_for()
    _start_job(page, "browser-run-2")
    _wait(lambda: len(manager.list()) >= 2, what="the second job")
    assert job_box.input_value() == first  # the view stays on the running job
    log = page.locator("#train-log textarea")
    _wait(lambda: "epoch" in log.input_value() or "caching" in log.input_value(), 120, "progress lines")
    assert "Tip" not in log.input_value() and "warn" not in log.input_value().lower()
    bar = page.locator("#train-progress").inner_text()
    assert "val/" not in bar and "train/" not in bar  # metrics in words, never raw logged keys
    _shot(page, "train")
    _shot_mobile(page, "train")

    page.reload()
    page.get_by_role("tab", name="Train").click()
    # the form is as it was left, not back to its defaults
    _wait(lambda: page.locator("#train-epochs input").input_value() == "500", 30, "the restored form")
    assert page.locator("#train-image-size input").input_value() == "64"
    assert page.locator("#train-datasets label", has_text="my labels").locator("input").is_checked()
    rows = page.locator("#train-jobs [role=row]")
    _wait(lambda: rows.filter(has_text="browser-run").count() >= 2, what="the jobs table after a reload")
    assert "running" in rows.filter(has_text=first).inner_text()
    assert "queued" in rows.filter(has_text="browser-run-2").inner_text()
    rows.filter(has_text=first).locator("[role=gridcell]").first.click()  # follow the running job
    _wait(lambda: job_box.input_value() == first and status.input_value() == "running", what="following")
    page.click("#train-cancel")
    _wait(lambda: manager.get(first).status == "cancelled", 60, "the cancel")
    second = next(j for j in manager.list() if j.title.startswith("browser-run-2"))
    _wait(lambda: manager.get(second.id).status == "running", 60, "the queued job to start")
    manager.cancel(second.id)
    _wait(lambda: manager.get(second.id).status == "cancelled", 60, "the second cancel")
    # a cancelled job can be deleted, which frees its name
    rows.filter(has_text=first).locator("[role=gridcell]").first.click()
    _wait(lambda: status.input_value() == "cancelled", what="the cancelled status")
    page.click("#train-delete")
    _wait(lambda: not (app_server.settings.jobs_dir / first).exists(), 30, "the delete")
    assert not (app_server.settings.checkpoints_dir / "browser-run").exists()


def _done_evaluations(manager) -> int:
    return sum(j.kind == "evaluate" and j.status == "done" for j in manager.list())


def test_evaluate_an_uploaded_zip_then_compare_two_checkpoints(page, app_server, sample_dir, tmp_path):
    """Upload a zip of 10 sample locations, see metrics and the error map, inspect one, then compare the
    bundled checkpoint with a second one (the same weights read out by argmax) on the same data."""
    import json
    import shutil

    from test_archive import sample_zip

    from geodemo.checkpoint import DEFAULT_CHECKPOINT

    manager = app_server.demo.geodemo_jobs
    second = app_server.settings.checkpoints_dir / "default-argmax"
    shutil.copytree(DEFAULT_CHECKPOINT, second)
    config = json.loads((second / "config.json").read_text())
    (second / "config.json").write_text(json.dumps({**config, "point_mode": "argmax"}))

    page.get_by_role("tab", name="Evaluate").click()
    page.locator("#eval-upload-box").get_by_text("Upload a dataset").click()
    archive = sample_zip(sample_dir, tmp_path / "ten.zip")
    page.locator("#eval-upload input[type=file]").set_input_files(str(archive))
    page.locator("#eval-dataset input").first.wait_for()
    _wait(lambda: "ten.zip" in page.locator("#eval-dataset input").input_value(), 60, "the unpacked dataset")
    before = _done_evaluations(manager)
    page.click("#eval-run")
    page.locator("#eval-metrics", has_text="mean error").wait_for(timeout=180_000)
    assert page.locator("#eval-metrics", has_text="locations").inner_text().count("10") >= 1
    page.locator("#eval-worst [role=gridcell]").nth(1).click()
    page.wait_for_selector("#eval-views img")
    page.locator("#eval-detail", has_text="error").wait_for()
    _wait(lambda: page.locator("#eval-views img").count() == 4, 30, "the four views")
    worst = page.locator("#eval-worst").inner_text()
    assert "HR-" not in worst  # counties by name
    time.sleep(2)
    _shot(page, "evaluate")
    _shot_mobile(page, "evaluate")

    page.get_by_role("tab", name="Predict").click()  # refreshes the checkpoint lists
    page.get_by_role("tab", name="Evaluate").click()
    _pick(page, "eval-checkpoint", "default-argmax")
    page.click("#eval-run")
    _wait(lambda: _done_evaluations(manager) == before + 2, 180, "the second evaluation")
    page.locator("#eval-compare-box").get_by_text("Compare two checkpoints").click()
    _pick(page, "eval-compare-a", "default on uploaded ten.zip")
    _pick(page, "eval-compare-b", "default-argmax on uploaded ten.zip")
    page.click("#eval-compare")
    page.locator("#eval-compare-table", has_text="difference").wait_for(timeout=60_000)
    assert "better" in page.locator("#eval-compare-text").inner_text()
    table = page.locator("#eval-compare-table").inner_text()
    assert "default-argmax" in table and "± " in table
    page.locator("#eval-compare-box").scroll_into_view_if_needed()
    _shot(page, "evaluate-compare")
    _shot_mobile(page, "evaluate-compare")
