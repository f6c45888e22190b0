"""Play tab: you vs the model. Five random locations, click a guess on the map, see who was closer.

The game (truth included) lives in a per-session gr.State on the server; the page and the `/play_*` API get
the views as re-encoded pixels (no file names, no EXIF) and the truth only in the reveal after a guess.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from geodemo import geo, maps
from geodemo.data import DatasetError
from geodemo.game import SCORE_SCALE_KM, new_game
from geodemo.images import load_rgb
from geodemo.predict import Predictor
from geodemo.ui.common import VIEW_LABELS, user_errors
from geodemo.ui.label_tab import MAP_CSS, MAP_JS, MAP_TEMPLATE
from geodemo.ui.settings import Settings

VIEW_SIDE = 640  # px; views are shown at the training resolution
INTRO = (
    "**You vs the model.** Each round shows one place's street views; click on the map where you think it "
    "is, then press **Guess**. The reveal shows the truth, your guess and the model's answer. "
    f"Points: 5000 × e<sup>−d / {SCORE_SCALE_KM} km</sup> for a guess d km away (GeoGuessr's rule with its "
    "scale shrunk from the world's diagonal to Croatia's: 0 km = 5000, 10 km ≈ 4300, 50 km ≈ 2350)."
)
FAIRNESS = (
    "<small>The bundled model was trained on the LUMEN sample (which the examples come from): there it has "
    "seen the answers. For a fair game play on locations it was not trained on, e.g. your own labels.</small>"
)


def _round_text(game, revealed: dict | None = None) -> str:
    n, total = game.current + 1, len(game.rounds)
    you = sum(r["you_score"] for r in game.results)
    model = sum(r["model_score"] for r in game.results)
    head = f"### Round {n} / {total}  ·  you **{you:,}** : model **{model:,}**"
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


def _views(game) -> list:
    """The current round's views as pixels (N, E, S, W; None where missing): no path or EXIF leaks."""
    paths = game.round.views
    return [load_rgb(paths[h], min_side=VIEW_SIDE) if h in paths else None for h in (0, 90, 180, 270)]


def build(settings: Settings, checkpoint_state: gr.State) -> dict:
    """Lay out the tab and wire its events; the model is the Predict tab's selected checkpoint."""
    roots = [Path(r).resolve() for r in settings.data_roots]
    no_point = {"lat": None, "lon": None}

    def start(game):
        return (game, *_views(game), _round_text(game), no_point, None, None,
                gr.update(visible=False), gr.update(visible=False))

    @user_errors
    def play_new(dataset):
        """The `/play_new` API: a new game on one of the app's datasets; returns round 1's views only."""
        path = Path(str(dataset or "")).resolve()
        if path not in roots:
            raise DatasetError("Choose one of the listed datasets to play on.")
        if not (path / "data.csv").is_file():
            raise DatasetError(f"{path.name} has no labelled locations yet; choose another dataset.")
        return start(new_game(path))

    @user_errors
    def play_guess(latitude, longitude, game, checkpoint):
        """The `/play_guess` API: score the guess (degrees) against the truth and the model; the reveal."""
        if game is None:
            raise ValueError("Press New game first.")
        prediction = Predictor.load(checkpoint).predict(dict(game.round.views))
        result = game.guess(latitude, longitude, (prediction.latitude, prediction.longitude))
        summary = gr.update(value=game.summary(), visible=game.over)
        figure = gr.update(value=maps.game_figure(result), visible=True)
        return game, result, figure, _round_text(game, result), summary

    @user_errors
    def play_next(game):
        """The `/play_next` API: the next round's views (after a guess)."""
        if game is None:
            raise ValueError("Press New game first.")
        game.next_round()
        return start(game)[:-1]

    def clicked(evt: gr.EventData):
        data = evt._data or {}
        return data.get("lat"), data.get("lon")

    gr.Markdown(INTRO)
    with gr.Row(equal_height=True):
        dataset = gr.Dropdown(
            settings.dataset_choices(),
            value=str(roots[0]) if roots else None,
            label="Play on",
            scale=3,
            elem_id="play-dataset",
        )
        new_button = gr.Button("New game", variant="primary", scale=1, elem_id="play-new")
    gr.Markdown(FAIRNESS)
    round_text = gr.Markdown("Press **New game** to start.", elem_id="play-round")
    with gr.Row(equal_height=True):
        images = [
            gr.Image(label=label, type="numpy", format="jpeg", interactive=False, height=190, min_width=140,
                     elem_id=f"play-view-{h}")
            for h, label in zip((0, 90, 180, 270), VIEW_LABELS)
        ]
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            click_map = gr.HTML(
                value=no_point,
                html_template=MAP_TEMPLATE,
                css_template=MAP_CSS,
                js_on_load=MAP_JS,
                shapes=maps.label_map_svg(),
                elem_id="play-map",
                **maps.svg_projection(),
            )
            with gr.Row(equal_height=True):
                latitude = gr.Number(label="Your guess: latitude (°N)", precision=6, elem_id="play-lat")
                longitude = gr.Number(label="longitude (°E)", precision=6, elem_id="play-lon")
            with gr.Row():
                guess_button = gr.Button("Guess", variant="primary", elem_id="play-guess")
                next_button = gr.Button("Next round ▶", elem_id="play-next")
        with gr.Column(scale=1, min_width=300):
            reveal = gr.Plot(label="Reveal", visible=False, elem_id="play-reveal")
    summary = gr.Dataframe(label="Game summary", visible=False, interactive=False, elem_id="play-summary")
    with gr.Accordion("Round result (JSON)", open=False):
        result = gr.JSON(label="/play_guess result")

    game = gr.State(None)  # per browser session; never sent to the page
    round_outputs = [game, *images, round_text, click_map, latitude, longitude, reveal]
    new_button.click(play_new, dataset, [*round_outputs, summary], api_name="play_new")
    guess_button.click(
        play_guess,
        [latitude, longitude, game, checkpoint_state],
        [game, result, reveal, round_text, summary],
        api_name="play_guess",
        concurrency_id="model",
    )
    next_button.click(play_next, game, round_outputs, api_name="play_next")
    click_map.click(clicked, None, [latitude, longitude], api_visibility="private", queue=False)
    for number in (latitude, longitude):
        number.change(
            lambda lat, lon: {"lat": lat, "lon": lon} if lat is not None and lon is not None else no_point,
            [latitude, longitude],
            click_map,
            api_visibility="private",
            queue=False,
        )
    return {}
