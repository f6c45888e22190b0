"""The Play tab's API through gradio_client: a whole game, no truth before the guess, sessions kept apart."""

import json
import re
from pathlib import Path

import pytest
from gradio_client import Client

from geodemo import geo
from geodemo.data import read_locations
from geodemo.images import load_rgb

pytest_plugins = ["app_fixtures"]
ZAGREB = (45.815, 15.982)


def _client(app_server) -> Client:
    return Client(app_server.url, verbose=False)


def _numbers(obj) -> list[float]:
    """Every number in a JSON-able result (strings included), to look for leaked coordinates."""
    return [float(x) for x in re.findall(r"-?\d+\.\d+", json.dumps(obj, default=str))]


def _which_location(sample_dir, north_view: str) -> str:
    """The sample location whose north view is pixel-identical (up to JPEG) to the one the game showed."""
    shown = load_rgb(north_view).astype(int)
    best = {}
    for uid in read_locations(sample_dir).uuid:
        view = load_rgb(Path(sample_dir) / "images" / uid / "0.jpg").astype(int)
        best[uid] = abs(view - shown).mean() if view.shape == shown.shape else 1e9
    return min(best, key=best.get)


def test_a_round_reveals_the_truth_only_after_the_guess(app_server, sample_dir):
    client = _client(app_server)
    start = client.predict(str(Path(sample_dir).resolve()), api_name="/play_new")
    views, text = start[:4], start[4]
    assert all(v is not None for v in views) and "Round 1 / 5" in text
    assert not any(str(sample_dir) in str(v) for v in views)  # no dataset path (or uuid folder) on the page
    truth_frame = read_locations(sample_dir).set_index("uuid")
    uid = _which_location(sample_dir, views[0])
    truth = (truth_frame.latitude[uid], truth_frame.longitude[uid])
    leaked = [x for x in _numbers(start) if abs(x - truth[0]) < 1e-3 or abs(x - truth[1]) < 1e-3]
    assert not leaked and uid not in json.dumps(start, default=str)

    result = client.predict(*ZAGREB, api_name="/play_guess")[0]
    assert (result["truth"]["latitude"], result["truth"]["longitude"]) == pytest.approx(truth)
    assert result["you_km"] == pytest.approx(float(geo.haversine_km(*truth, *ZAGREB)), rel=1e-6)
    assert 0 <= result["model_score"] <= 5000 and result["round"] == 1
    with pytest.raises(Exception, match="already guessed"):
        client.predict(*ZAGREB, api_name="/play_guess")


def test_a_whole_game_and_its_summary(app_server, sample_dir):
    client = _client(app_server)
    client.predict(str(Path(sample_dir).resolve()), api_name="/play_new")
    for n in range(5):
        out = client.predict(*ZAGREB, api_name="/play_guess")
        assert out[0]["round"] == n + 1
        if n < 4:
            assert f"Round {n + 2} / 5" in client.predict(api_name="/play_next")[4]
    summary = out[-1]  # a gr.update: shown now that the game is over
    assert summary.get("visible", True)
    rows = summary.get("value", summary)["data"]
    assert [str(r[0]) for r in rows] == ["1", "2", "3", "4", "5", "mean", "total"]
    assert rows[-1][2] == sum(r[2] for r in rows[:-2])  # your total points
    assert rows[-1][1] in ("", None)  # no mean km on the row of summed points
    assert "Game over" in out[2]  # (the State output is not returned to API clients)
    with pytest.raises(Exception, match="game is over"):
        client.predict(api_name="/play_next")


def test_two_sessions_do_not_interfere(app_server, sample_dir):
    a, b = _client(app_server), _client(app_server)
    a.predict(str(Path(sample_dir).resolve()), api_name="/play_new")
    with pytest.raises(Exception, match="New game first"):
        b.predict(*ZAGREB, api_name="/play_guess")  # b has no game although a has one
    b.predict(str(Path(sample_dir).resolve()), api_name="/play_new")
    ra = a.predict(*ZAGREB, api_name="/play_guess")[0]
    rb = b.predict(*ZAGREB, api_name="/play_guess")[0]
    assert ra["round"] == rb["round"] == 1  # each session's own round 1, not a shared game


def test_only_the_apps_datasets_can_be_played(app_server, tmp_path):
    client = _client(app_server)
    with pytest.raises(Exception, match="listed datasets|not in the list of choices"):
        client.predict(str(tmp_path), api_name="/play_new")
    with pytest.raises(Exception, match="outside Croatia"):
        client.predict(str(Path(app_server.settings.data_roots[0]).resolve()), api_name="/play_new")
        client.predict(48.2, 16.37, api_name="/play_guess")
