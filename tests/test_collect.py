"""`python -m training collect` against a local fake of the Street View and Mapillary APIs (offline).

Done-when of issue 25: a 20-point run validates; a killed and resumed run gives the same dataset; 429s are
retried (Retry-After honoured); a point without imagery is skipped and counted; the key appears in no
output; --dry-run sends nothing.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from collect_fakes import KEY, SNAP_DEG, TOKEN, FakeApis, no_imagery
from PIL import Image

from geodemo import geo
from geodemo.collect import CollectConfig, CollectError, collect
from geodemo.collect.http import TEST_URL_ENV, base_url
from geodemo.collect.mapillary import choose_views
from geodemo.collect.sampling import PointIndex, sample_points
from training.__main__ import main

REPO = Path(__file__).resolve().parents[1]
FAST = ["--rate", "100", "--backoff-s", "0.01", "--min-spacing-km", "0.5"]


@pytest.fixture()
def api(sample_dir):
    with FakeApis(sample_dir) as fake:
        yield fake


@pytest.fixture()
def env(api, monkeypatch):
    monkeypatch.setenv(TEST_URL_ENV, api.url)
    monkeypatch.setenv("GEODEMO_STREETVIEW_KEY", KEY)
    monkeypatch.setenv("GEODEMO_MAPILLARY_TOKEN", TOKEN)
    return api


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _snapshot(root: Path) -> dict:
    """Every file of a dataset (but the run's own .collect state) -> its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".collect" not in p.parts}


def _assert_no_secret(root: Path, *texts: str) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert KEY.encode() not in data and TOKEN.encode() not in data, path
    for text in texts:
        assert KEY not in text and TOKEN not in text


def _collect_cli(out: Path, *extra: str, points: int = 20) -> int:
    return main(["collect", "--source", "streetview", "--out", str(out), "--points", str(points), *FAST,
                 *extra])


def test_streetview_20_points_validate_and_count_skips(env, tmp_path, capsys):
    out = tmp_path / "sv"
    assert _collect_cli(out) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    misses = sum(status == "ZERO_RESULTS" for _, status in env.statuses)
    assert misses >= 1, "the fake's no-imagery rule should hit some of 20 points"
    assert summary["skipped"].get("no_imagery") == misses
    assert summary["kept"] + sum(summary["skipped"].values()) == 20
    rows = _rows(out / "data.csv")
    assert len(rows) == summary["kept"] == summary["locations"] > 10
    # data.csv holds the panorama's own coordinates (the fake snaps SNAP_DEG north-east), inside Croatia
    asked = [r["params"]["location"] for r in env.requests if r["path"] == "/streetview/metadata"]
    snapped = {(round(float(a.split(",")[0]) + SNAP_DEG, 6), round(float(a.split(",")[1]) + SNAP_DEG, 6))
               for a in asked if not no_imagery(*map(float, a.split(",")))}
    assert {(round(float(r["latitude"]), 6), round(float(r["longitude"]), 6)) for r in rows} == snapped
    assert geo.in_croatia([float(r["latitude"]) for r in rows], [float(r["longitude"]) for r in rows]).all()
    # four 640x640 views per location, exactly the competition's requests
    for row in rows:
        for heading in (0, 90, 180, 270):
            assert Image.open(out / "images" / row["uuid"] / f"{heading}.jpg").size == (640, 640)
    image_params = [r["params"] for r in env.requests if r["path"] == "/streetview"]
    assert len(image_params) == 4 * len(rows)
    assert {(p["fov"], p["pitch"], p["size"]) for p in image_params} == {("90", "0", "640x640")}
    sources = {s["uuid"]: s for s in _rows(out / "sources.csv")}
    assert set(sources) == {r["uuid"] for r in rows}
    assert all(s["source_id"].startswith("pano") and s["captured"] == "2019-07" for s in sources.values())
    assert "Google" in (out / "README.md").read_text()
    assert main(["validate-data", str(out), "--strict"]) == 0
    _assert_no_secret(out, captured.out, captured.err)


def test_killed_run_resumes_to_the_same_dataset(sample_dir, tmp_path):
    with FakeApis(sample_dir, delay_s=0.05) as api:
        env = {**os.environ, TEST_URL_ENV: api.url, "GEODEMO_STREETVIEW_KEY": KEY,
               "PYTHONPATH": str(REPO)}
        args = [sys.executable, "-m", "training", "collect", "--source", "streetview", "--points", "20",
                *FAST]
        killed = tmp_path / "killed"
        proc = subprocess.Popen([*args, "--out", str(killed)], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if (killed / "data.csv").is_file() and len(_rows(killed / "data.csv")) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        partial = len(_rows(killed / "data.csv"))
        assert 3 <= partial < 15
        metadata_before = api.count("/streetview/metadata")
        resumed = subprocess.run([*args, "--out", str(killed)], cwd=REPO, env=env, capture_output=True,
                                 text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr
        summary = json.loads(resumed.stdout)
        assert summary["already_done"] >= partial  # finished (and refused) points are not asked again
        assert api.count("/streetview/metadata") - metadata_before == 20 - summary["already_done"]
        whole = tmp_path / "whole"
        clean = subprocess.run([*args, "--out", str(whole)], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=600)
        assert clean.returncode == 0, clean.stderr
    assert _snapshot(killed).keys() == _snapshot(whole).keys()
    for name, data in _snapshot(whole).items():
        if name != "README.md":  # it counts this run's own skips
            assert _snapshot(killed)[name] == data, name
    assert not list((killed / ".collect").glob("tmp-*"))
    _assert_no_secret(killed, err.decode(), resumed.stdout, resumed.stderr, clean.stderr)


def test_429_and_500_are_retried_with_backoff(env, tmp_path):
    env.faults = {2: 429, 3: 500, 6: 503}  # the 2nd, 3rd and 6th requests fail once
    waits = []
    cfg = CollectConfig("streetview", str(tmp_path / "r"), points=4, min_spacing_km=0.5, rate_per_s=100,
                        backoff_s=0.25)
    summary = collect(cfg, KEY, sleep=waits.append)
    assert summary["retries"] == 3
    assert summary["http"]["429"] == 1 and summary["http"]["500"] == 1 and summary["http"]["503"] == 1
    assert 1.0 in waits  # the 429's Retry-After: 1
    assert 0.25 in waits or 0.5 in waits  # exponential backoff for the 5xx
    assert "fetch_failed" not in summary["skipped"]
    assert summary["kept"] + sum(summary["skipped"].values()) == 4


def test_failing_server_is_not_remembered_and_a_rerun_fetches(env, tmp_path):
    cfg = CollectConfig("streetview", str(tmp_path / "f"), points=5, min_spacing_km=0.5, rate_per_s=100,
                        retries=2, backoff_s=0.0)
    env.persistent = ("/streetview/metadata",)
    first = collect(cfg, KEY)
    assert first["skipped"] == {"fetch_failed": 5} and first["kept"] == 0
    assert env.count("/streetview/metadata") == 15  # 1 try + 2 retries per point
    env.persistent = ()
    second = collect(cfg, KEY)
    assert second["already_done"] == 0 and second["kept"] >= 1


def test_budget_stops_cleanly_and_resumes(env, tmp_path, capsys):
    out = tmp_path / "b"
    assert _collect_cli(out, "--max-requests", "7", points=6) == 1
    err = capsys.readouterr().err
    assert "--max-requests 7" in err and "re-run" in err
    assert len(env.requests) == 7
    assert main(["validate-data", str(out)]) == 0  # what was kept is a whole dataset
    capsys.readouterr()
    assert _collect_cli(out, points=6) == 0
    assert len(_rows(out / "data.csv")) == json.loads(capsys.readouterr().out)["locations"]


def test_dry_run_sends_nothing(env, tmp_path, capsys):
    out = tmp_path / "dry"
    assert _collect_cli(out, "--dry-run", points=250) == 0
    plan = json.loads(capsys.readouterr().out)
    assert env.requests == [] and not out.exists()
    assert plan["lookup_requests"] == 250 and plan["image_requests_at_most"] == 1000
    assert plan["estimated_cost_usd_at_most"] == pytest.approx(plan["price_per_1000_images_usd"])  # 1000


def test_refused_key_is_one_sentence_without_the_key(env, tmp_path, monkeypatch, capsys):
    wrong = "AIzaWRONG-another-secret-999"
    monkeypatch.setenv("GEODEMO_STREETVIEW_KEY", wrong)
    assert _collect_cli(tmp_path / "k", points=3) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Street View answered REQUEST_DENIED") and len(err.splitlines()) == 1
    assert wrong not in err
    monkeypatch.delenv("GEODEMO_STREETVIEW_KEY")
    assert _collect_cli(tmp_path / "k2", points=3) == 2
    assert "GEODEMO_STREETVIEW_KEY" in capsys.readouterr().err


def test_changed_settings_are_refused(env, tmp_path, capsys):
    out = tmp_path / "s"
    assert _collect_cli(out, points=2) == 0
    assert _collect_cli(out, "--seed", "5", points=2) == 1
    assert "other settings" in capsys.readouterr().err


def test_mapillary_views_attribution_and_token_in_header(env, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["collect", "--source", "mapillary", "--out", str(out), "--points", "8", *FAST]) == 0
    summary = json.loads(capsys.readouterr().out)
    searches = [r for r in env.requests if r["path"] == "/mapillary/images"]
    assert len(searches) == 8 and all(TOKEN not in r["query"] for r in env.requests)
    assert all(r["headers"].get("Authorization") == f"OAuth {TOKEN}" for r in searches)
    assert not any("Authorization" in r["headers"] for r in env.requests if r["path"].startswith("/cdn/"))
    rows = _rows(out / "data.csv")
    assert len(rows) == summary["kept"] == 8 - summary["skipped"].get("no_imagery", 0) > 0
    for source in _rows(out / "sources.csv"):
        assert source["licence"] == "CC-BY-SA 4.0" and source["creator"] == "mapper0;mapper1"
        # compass 3, 95, 170, 260 fill the slots; 300 (270 is taken by 260) and the panorama are not used
        assert [v.split("@")[1] for v in source["views"].split(";")] == ["3.0", "95.0", "170.0", "260.0"]
        assert source["uuid"] in (out / "ATTRIBUTION").read_text()
    for row in rows:
        assert Image.open(out / "images" / row["uuid"] / "90.jpg").size == (640, 640)  # cropped 1024x768
    assert "CC-BY-SA 4.0" in (out / "README.md").read_text()
    assert main(["validate-data", str(out)]) == 0
    _assert_no_secret(out)


def test_choose_views_leaves_missing_slots_missing():
    photos = [{"id": "1", "compass": 350.0}, {"id": "2", "compass": 50.0}, {"id": "3", "compass": 200.0}]
    chosen = choose_views(photos)
    assert {h: p["id"] for h, p in chosen.items()} == {0: "1", 90: "2", 180: "3"}  # 50° is within ±45° of 90
    assert choose_views([{"id": "9", "compass": 136.0}]) == {180: {"id": "9", "compass": 136.0}}
    assert choose_views([{"id": "8", "compass": 315.0 + 40}, {"id": "7", "compass": 225.0}]) == {
        0: {"id": "8", "compass": 355.0}, 180: {"id": "7", "compass": 225.0}}  # 225: 45° from 180 and 270


@pytest.mark.parametrize("sampling", ["prior", "uniform", "county"])
def test_sampling_is_seeded_spaced_and_on_land(sampling, tmp_path):
    lat, lon = sample_points(42, sampling, seed=3, min_spacing_km=5.0)
    again = sample_points(42, sampling, seed=3, min_spacing_km=5.0)
    assert np.array_equal(lat, again[0]) and np.array_equal(lon, again[1])
    assert not np.array_equal(lat, sample_points(42, sampling, seed=4, min_spacing_km=5.0)[0])
    assert geo.in_croatia(lat, lon, tolerance_km=0.0).all()
    d = geo.haversine_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :]) + np.eye(42) * 1e9
    assert d.min() >= 5.0 * 0.999  # EPSG:3765 metres vs the sphere: within 0.1 %
    if sampling == "county":
        counts = np.bincount(geo.county_index(lat, lon, tolerance_km=0.5), minlength=21)
        assert counts.min() == counts.max() == 2


def test_exclusion_keeps_away_from_another_dataset(sample_dir):
    from geodemo.collect.sampling import exclusion_index
    from geodemo.data import read_locations

    index = exclusion_index([sample_dir], 10.0)
    assert len(index) == 100
    lat, lon = sample_points(30, "prior", seed=1, exclude=index)
    frame = read_locations(sample_dir)
    d = geo.haversine_km(lat[:, None], lon[:, None], frame["latitude"].to_numpy()[None, :],
                         frame["longitude"].to_numpy()[None, :])
    assert d.min() >= 10.0 * 0.999
    with pytest.raises(CollectError, match="only .* points fit"):
        sample_points(30, "uniform", seed=1, min_spacing_km=90.0)
    spaced = PointIndex(1.0)
    spaced.add(0.0, 0.0)
    assert spaced.near(999.0, 0.0) and not spaced.near(1001.0, 0.0)


def test_base_url_is_for_loopback_tests_only(monkeypatch):
    monkeypatch.delenv(TEST_URL_ENV, raising=False)
    assert base_url("streetview") == "https://maps.googleapis.com/maps/api/streetview"
    assert base_url("mapillary") == "https://graph.mapillary.com"
    monkeypatch.setenv(TEST_URL_ENV, "https://collector.example.com")
    with pytest.raises(CollectError, match="only name this machine"):
        base_url("streetview")
    assert base_url("mapillary", "http://127.0.0.1:9") == "http://127.0.0.1:9/mapillary"


def test_app_job_collects_with_progress_and_the_panel_builds(env, sample_dir, tmp_path, monkeypatch):
    import gradio as gr

    from geodemo.collect.job import CollectFormError, collect_args
    from geodemo.jobs import JobManager
    from geodemo.ui import collect_panel
    from geodemo.ui.settings import Settings

    settings = Settings(default_checkpoint=tmp_path / "none", labels_dir=tmp_path / "labels",
                        jobs_dir=tmp_path / "jobs", checkpoints_dir=tmp_path / "ckpts",
                        data_roots=[sample_dir], uploads_dir=tmp_path / "uploads")
    params = {"source": "streetview", "points": 6, "sampling": "uniform", "seed": 2, "min_spacing_km": 0.5,
              "radius_m": 500, "name": "fresh", "exclude": [str(sample_dir)]}
    args, out = collect_args(params, settings.data_roots, settings.uploads_dir)
    assert out == (tmp_path / "uploads" / "collect-fresh").resolve() and KEY not in args
    manager = JobManager(settings.jobs_dir, start=False)
    job = manager.submit("collect", [*args, "--rate", "100"], out, title="collect test")
    assert manager.run_next()
    job = manager.get(job.id)
    assert job.status == "done", manager.log_tail(job.id)
    progress = manager.progress(job.id)
    assert progress["done"] and progress["metrics"]["locations"] == len(_rows(out / "data.csv")) > 0
    assert "done:" in manager.curated_log(job.id)
    _assert_no_secret(settings.jobs_dir)
    _assert_no_secret(out)
    for bad, message in (({"points": 0}, "Points must be"), ({"name": "../x"}, "The name"),
                         ({"exclude": ["/etc"]}, "pick datasets"), ({"sampling": "grid"}, "Sampling")):
        with pytest.raises(CollectFormError, match=message):
            collect_args({**params, **bad}, settings.data_roots, settings.uploads_dir)
    monkeypatch.delenv("GEODEMO_MAPILLARY_TOKEN")
    with pytest.raises(CollectFormError, match="GEODEMO_MAPILLARY_TOKEN"):
        collect_args({**params, "source": "mapillary"}, settings.data_roots, settings.uploads_dir)
    with gr.Blocks() as demo:
        parts = collect_panel.build(settings, manager)
    assert parts["timer"] in demo.blocks.values()
    assert "5 locations" in collect_panel.progress_html({"fraction": 0.5, "metrics": {"locations": 5}},
                                                        "running")
