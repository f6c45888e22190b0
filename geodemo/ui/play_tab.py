"""Play tab: you vs the model. Five random locations, click a guess on the map, see who was closer.

The game (truth included) lives in a per-session gr.State on the server; the page and the `/play_*` API get
the views as re-encoded pixels (no file names, no EXIF) and the truth only in the reveal after a guess.
A fair game by default: rounds come from locations the chosen checkpoint did not train on (its config's
`train_locations`), and the page says where they come from and what the model scores on unseen data.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from geodemo import geo, maps
from geodemo.checkpoint import read_config
from geodemo.data import DatasetError
from geodemo.game import SCORE_SCALE_KM, TRAINING, UNSEEN, honest_error_km, new_game
from geodemo.images import load_rgb
from geodemo.predict import Predictor
from geodemo.ui.common import VIEW_LABELS, user_errors
from geodemo.ui.settings import Settings
from geodemo.ui.widgets import click_map, clicked_point

VIEW_SIDE = 640  # px; views are shown at the training resolution
ANY_UNSEEN = "unseen"  # the default "Play on" choice: every dataset, only locations the model did not see
INTRO = (
    "**You vs the model.** Each round shows one place's street views; click on the map where you think it "
    "is, then press **Guess**. The reveal shows the truth, your guess and the model's answer. "
    f"Points: 5000 × e<sup>−d / {SCORE_SCALE_KM} km</sup> for a guess d km away (GeoGuessr's rule with its "
    "scale shrunk from the world's diagonal to Croatia's: 0 km = 5000, 10 km ≈ 4300, 50 km ≈ 2350)."
)
BEFORE = "Rounds are drawn from locations the selected model **did not train on**, so its score is honest."
NO_POINT = {"lat": None, "lon": None}
CSS = """
#play-fairness.training { border: 2px solid #d62728; border-radius: 8px; padding: 6px 10px;
  background: #fdecec; }
"""


def honest_note(checkpoint) -> str:
    """The model's mean error on unseen data (cross-validated, from its config or card), or "unknown"."""
    km = honest_error_km(checkpoint)
    if km is None:
        return "its error on unseen data is unknown (no cross-validated figure recorded with this checkpoint)"
    return f"its honest error on unseen data is **{km:,.0f} km** on average (cross-validated)"


def _round_text(game, honest: str, revealed: dict | None = None) -> str:
    n, total = game.current + 1, len(game.rounds)
    you = sum(r["you_score"] for r in game.results)
    model = sum(r["model_score"] for r in game.results)
    head = (f"### Round {n} / {total}  ·  you **{you:,}** : model **{model:,}**\n\n"
            f"<small>The model: {honest}.</small>")
    if revealed is None:
        return head + "\n\nClick the map where these photos were taken, then press **Guess**."
    town = str(geo.nearest_place(revealed["truth"]["latitude"], revealed["truth"]["longitude"]))
    lines = [
        head,
        "",
        f"It was near **{town}**. You were **{revealed['you_km']:.1f} km** off "
        f"(**{revealed['you_score']:,}** points); the model **{revealed['model_km']:.1f} km** "
        f"(**{revealed['model_score']:,}** points).",
    ]
    if game.over:
        lines += ["", "**Game over** — the summary is below. Press **New game** to play again."]
    else:
        lines += ["", "Press **Next round** to continue."]
    return "\n".join(lines)


def fairness_text(game, where: str, model_name: str) -> str:
    """Where the rounds come from, in one sentence; a prominent warning when they trained the model."""
    n = len(game.rounds)
    if game.fairness == UNSEEN:
        return (f"Fair game: the {n} rounds come from {game.pool} location(s) of {where} that **{model_name} "
                "did not train on**.")
    if game.fairness == TRAINING:
        return (f"⚠ **Not a fair game: every location of {where} was used to train {model_name}**, so it has "
                "seen the answers and its score flatters it. Label new places (Label tab) or pick a "
                "dataset it did not train on for an honest game.")
    return (f"The rounds come from {where}; {model_name} does not record its training locations, so some "
            "may be places it has seen.")


def _views(game) -> list:
    """The current round's views as pixels (N, E, S, W; None where missing): no path or EXIF leaks."""
    paths = game.round.views
    return [load_rgb(paths[h], min_side=VIEW_SIDE) if h in paths else None for h in (0, 90, 180, 270)]


def _start(game, honest: str) -> tuple:
    return (game, *_views(game), _round_text(game, honest), NO_POINT, None, None,
            gr.update(visible=False, value=None), gr.update(interactive=True), gr.update(visible=False))


@user_errors
def play_new(settings: Settings, dataset, checkpoint=None):
    """The `/play_new` API: a new game; returns round 1's views only (and where the rounds come from)."""
    checkpoint = checkpoint or settings.default_checkpoint
    roots = [Path(r).resolve() for r in settings.data_roots]
    if str(dataset or "") == ANY_UNSEEN:
        chosen = [r for r in roots if (r / "data.csv").is_file()]
        where = "the app's datasets"
        if not chosen:
            raise DatasetError("No dataset has labelled locations yet; label some in the Label tab first.")
    else:
        path = Path(str(dataset or "")).resolve()
        if path not in roots:
            raise DatasetError("Choose one of the listed datasets to play on.")
        if not (path / "data.csv").is_file():
            raise DatasetError(f"{path.name} has no labelled locations yet; choose another dataset.")
        chosen = [path]
        labels = {Path(p).resolve(): label for label, p in settings.dataset_choices()}
        where = labels.get(path, path.name)
    config = read_config(checkpoint)
    game = new_game(chosen, train_locations=config.train_locations)
    names = {p: label for label, p in settings.checkpoint_choices()}
    model_name = names.get(str(checkpoint), Path(str(checkpoint)).name)
    honest = honest_note(checkpoint)
    fair = fairness_text(game, where, f"the model ({model_name})")
    return (*_start(game, honest), gr.update(value=fair, elem_classes=[game.fairness]), honest)


@user_errors
def play_guess(latitude, longitude, game, checkpoint, honest):
    """The `/play_guess` API: score the guess (degrees) against the truth and the model; the reveal."""
    if game is None:
        raise ValueError("Press New game first.")
    if game.over or game.round.guess is not None:
        raise ValueError("This round is already guessed; press Next round (or New game).")
    prediction = Predictor.load(checkpoint).predict(dict(game.round.views))
    result = game.guess(latitude, longitude, (prediction.latitude, prediction.longitude))
    summary = gr.update(value=game.summary(), visible=game.over)
    figure = gr.update(value=maps.game_figure(result), visible=True)
    text = _round_text(game, honest or honest_note(checkpoint), result)
    return game, result, figure, text, summary, gr.update(interactive=False)


@user_errors
def play_next(game, honest):
    """The `/play_next` API: the next round's views (after a guess)."""
    if game is None:
        raise ValueError("Press New game first.")
    game.next_round()
    return _start(game, honest)[:-1]


def _guess_point(lat, lon) -> dict:
    return {"lat": lat, "lon": lon} if lat is not None and lon is not None else NO_POINT


def build(settings: Settings, checkpoint_state: gr.State) -> dict:
    """Lay out the tab and wire its events; the model is the Predict tab's selected checkpoint."""
    gr.Markdown(INTRO)
    with gr.Row(equal_height=True):
        dataset = gr.Dropdown(
            [("places the model did not train on (every dataset)", ANY_UNSEEN), *settings.dataset_choices()],
            value=ANY_UNSEEN,
            label="Play on",
            scale=3,
            elem_id="play-dataset",
        )
        new_button = gr.Button("New game", variant="primary", scale=1, elem_id="play-new")
    fairness = gr.Markdown(BEFORE, elem_id="play-fairness")
    round_text = gr.Markdown("Press **New game** to start.", elem_id="play-round")
    with gr.Row(equal_height=True):
        images = [
            gr.Image(label=label, type="numpy", format="jpeg", interactive=False, height=190, min_width=140,
                     elem_id=f"play-view-{h}", buttons=["fullscreen"])
            for h, label in zip((0, 90, 180, 270), VIEW_LABELS)
        ]
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            guess_map = click_map("play-map")
            with gr.Row(equal_height=True):
                latitude = gr.Number(label="Your guess: latitude (°N)", precision=6, elem_id="play-lat")
                longitude = gr.Number(label="longitude (°E)", precision=6, elem_id="play-lon")
            with gr.Row():
                guess_button = gr.Button("Guess", variant="primary", elem_id="play-guess")
                next_button = gr.Button("Next round ▶", elem_id="play-next")
        with gr.Column(scale=1, min_width=300):
            reveal = gr.Plot(label="Reveal", visible=False, elem_id="play-reveal")
    summary = gr.Dataframe(label="Game summary", visible=False, interactive=False, elem_id="play-summary",
                           buttons=["copy"])
    with gr.Accordion("Round result (JSON)", open=False):
        result = gr.JSON(label="/play_guess result")

    game = gr.State(None)  # per browser session; never sent to the page
    honest = gr.State("")
    round_outputs = [game, *images, round_text, guess_map, latitude, longitude, reveal, guess_button]
    new_button.click(lambda d, c: play_new(settings, d, c), [dataset, checkpoint_state],
                     [*round_outputs, summary, fairness, honest], api_name="play_new")
    # A guessed round disables Guess until the next round: a second press can't turn the reveal into an error.
    guess_button.click(
        play_guess,
        [latitude, longitude, game, checkpoint_state, honest],
        [game, result, reveal, round_text, summary, guess_button],
        api_name="play_guess",
        concurrency_id="model",
        trigger_mode="once",
    )
    next_button.click(play_next, [game, honest], round_outputs, api_name="play_next")
    guess_map.click(clicked_point, None, [latitude, longitude], api_visibility="private", queue=False)
    for number in (latitude, longitude):
        number.change(_guess_point, [latitude, longitude], guess_map, api_visibility="private", queue=False)
    return {}
