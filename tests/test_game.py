"""You vs the model: the score formula, the game's rules and its summary, on the real sample."""

import math

import pytest

from geodemo import geo
from geodemo.data import read_locations
from geodemo.game import MAX_SCORE, ROUNDS, SCORE_SCALE_KM, new_game, score

ZAGREB, SPLIT = (45.8150, 15.9819), (43.5081, 16.4402)


def test_score_scale_is_a_tenth_of_croatias_diagonal():
    lon0, lat0, lon1, lat1 = geo.outline().bounds
    assert SCORE_SCALE_KM == pytest.approx(float(geo.haversine_km(lat0, lon0, lat1, lon1)) / 10, abs=0.05)


def test_score_formula():
    assert score(0.0) == MAX_SCORE
    assert score(SCORE_SCALE_KM) == round(MAX_SCORE / math.e)  # 1839
    assert score(50) == round(5000 * math.exp(-50 / 66.1))
    assert score(1000) == 0
    assert [score(d) for d in (1, 10, 100)] == sorted([score(d) for d in (1, 10, 100)], reverse=True)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            score(bad)


def test_new_game_draws_distinct_real_locations(sample_dir):
    game = new_game(sample_dir, seed=1)
    truth = read_locations(sample_dir).set_index("uuid")
    uuids = [r.uuid for r in game.rounds]
    assert len(uuids) == ROUNDS == len(set(uuids))
    for r in game.rounds:
        assert r.truth == (truth.latitude[r.uuid], truth.longitude[r.uuid])
        assert set(r.views) == {0, 90, 180, 270} and all(p.is_file() for p in r.views.values())
    assert [r.uuid for r in new_game(sample_dir, seed=1).rounds] == uuids
    assert [r.uuid for r in new_game(sample_dir, seed=2).rounds] != uuids


def test_a_game_scores_each_round_and_sums_up(sample_dir):
    game = new_game(sample_dir, seed=3)
    for i in range(ROUNDS):
        truth = game.round.truth
        result = game.guess(*ZAGREB, model_point=truth)  # the model is spot on, the player guesses Zagreb
        assert result["round"] == i + 1 and result["model_km"] == pytest.approx(0)
        assert result["model_score"] == 5000
        assert result["you_km"] == pytest.approx(float(geo.haversine_km(*truth, *ZAGREB)))
        assert result["you_score"] == score(result["you_km"])
        with pytest.raises(ValueError, match="already guessed"):
            game.guess(*SPLIT, model_point=truth)
        if i < ROUNDS - 1:
            game.next_round()
    assert game.over
    with pytest.raises(ValueError, match="game is over"):
        game.next_round()
    table = game.summary()
    assert list(table["round"]) == [1, 2, 3, 4, 5, "mean", "total"]
    assert table["you (points)"].iloc[-1] == sum(r["you_score"] for r in game.results)
    assert table["model (points)"].iloc[-1] == 5 * 5000
    # the km are averaged on their own row; the points' total row holds no km (no mean beside a sum)
    assert table["you (km)"].iloc[-2] == pytest.approx(sum(r["you_km"] for r in game.results) / 5, abs=0.06)
    assert table["you (km)"].iloc[-1] == "" and table["you (points)"].iloc[-2] == ""


def test_bad_guesses_are_refused_and_the_truth_waits_for_a_guess(sample_dir):
    game = new_game(sample_dir, rounds=2, seed=4)
    with pytest.raises(ValueError, match="no guess yet"):
        game.round.result()
    with pytest.raises(ValueError, match="Guess this round first"):
        game.next_round()
    with pytest.raises(ValueError, match="Click the map"):
        game.guess(None, None, model_point=ZAGREB)
    with pytest.raises(ValueError, match="outside Croatia"):
        game.guess(48.2, 16.37, model_point=ZAGREB)  # Vienna
    with pytest.raises(ValueError, match="numbers"):
        game.guess("north", 16, model_point=ZAGREB)
    assert game.results == [] and game.round.guess is None


def test_a_dataset_smaller_than_a_game_plays_all_its_locations(tmp_path, sample_dir):
    from geodemo.ui.settings import EXAMPLES_DIR

    game = new_game(EXAMPLES_DIR, seed=0)
    assert len(game.rounds) == len(read_locations(EXAMPLES_DIR)) == 3
    (tmp_path / "data.csv").write_text("uuid,latitude,longitude\nabc,45.8,15.9\n")
    with pytest.raises(ValueError):
        new_game(tmp_path)


def test_a_fair_game_draws_only_locations_the_model_did_not_train_on(sample_dir):
    """With the checkpoint's training locations, rounds come from the others; with only those, it says so."""
    from geodemo.game import TRAINING, UNKNOWN, UNSEEN

    frame = read_locations(sample_dir)
    held_out = set(frame.uuid.iloc[:7])
    trained = frame[~frame.uuid.isin(held_out)]
    train_locations = {"uuid": trained.uuid.tolist(), "latitude": trained.latitude.tolist(),
                       "longitude": trained.longitude.tolist()}
    for seed in range(4):
        game = new_game(sample_dir, seed=seed, train_locations=train_locations)
        assert game.fairness == UNSEEN and game.pool == 7
        assert {r.uuid for r in game.rounds} <= held_out and len(game.rounds) == ROUNDS
    everything = {"uuid": frame.uuid.tolist(), "latitude": frame.latitude.tolist(),
                  "longitude": frame.longitude.tolist()}
    assert new_game(sample_dir, seed=0, train_locations=everything).fairness == TRAINING
    assert new_game(sample_dir, seed=0).fairness == UNKNOWN


def test_a_label_made_from_a_training_photo_is_not_unseen(sample_dir, tmp_path):
    """A labelled copy of a training location (its source_uuid) counts as seen, whatever its point."""
    import pandas as pd

    from geodemo.game import seen_in_training

    frame = read_locations(sample_dir).head(3)
    labels = pd.DataFrame({"uuid": ["new1", "new2"], "latitude": [45.1, 45.2], "longitude": [15.1, 15.2],
                           "source_uuid": [frame.uuid.iloc[0], None]})
    train = {"uuid": frame.uuid.tolist(), "latitude": frame.latitude.tolist(),
             "longitude": frame.longitude.tolist()}
    assert seen_in_training(labels, train).tolist() == [True, False]
    assert seen_in_training(labels, None) is None


def test_the_honest_error_comes_from_the_config_or_the_card(tmp_path):
    import json

    from geodemo.game import honest_error_km

    (tmp_path / "config.json").write_text(json.dumps({"metrics": {"train_seconds": 3}}))
    assert honest_error_km(tmp_path) is None  # nothing recorded: unknown, never a made-up figure
    (tmp_path / "README.md").write_text(
        "---\nmodel-index:\n- name: m\n  results:\n  - task: {type: image-classification}\n"
        "    dataset: {name: LUMEN sample (5-fold cross-validation), type: lumen}\n"
        "    metrics:\n    - {type: mean_km, name: mean error (km), value: 134.2}\n---\n# card\n"
    )
    assert honest_error_km(tmp_path) == pytest.approx(134.2)
    (tmp_path / "config.json").write_text(json.dumps({"metrics": {"cv": {"mean_km": 120.5}}}))
    assert honest_error_km(tmp_path) == pytest.approx(120.5)
    assert honest_error_km(tmp_path / "missing") is None
