"""The model card: ``README.md`` in every checkpoint folder, in the Hugging Face Hub's model-card format.

YAML front matter (``library_name``, ``tags``, ``license``, ``pipeline_tag``, ``model-index`` metrics) and a
body generated from ``config.json`` alone: the backbone and recipe, the training data's fingerprint and size,
and every evaluation the checkpoint has had. The evaluations live in the front matter under
``geodemo_evaluations`` (one entry per dataset and kind, with all its figures); ``model-index`` and the
body's tables are regenerated from them, so the card never disagrees with itself.

Written by ``train`` (the held-out figures it has, if any) and updated by ``evaluate --update-card`` (or
``python -m training card --results FILE.json``), which append one evaluation per named dataset; a rerun on
the same dataset and kind replaces that entry, so the card never shows two figures for one question.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from training.cliutil import UsageError

# huggingface_hub and training.metrics are imported where used: `python -m training --help` and its argument
# checks must not pay for them (the CLI refuses a bad flag before anything heavy loads).
CARD_FILE = "README.md"
LIBRARY_NAME = "geodemo"
LICENSE = "mit"  # the project's licence (pyproject.toml); the data's own terms are stated in the body
PIPELINE_TAG = "image-classification"  # the Hub's closest task: the model classifies photos into geocells
TASK_NAME = "Street-level image geolocation in Croatia"
_NOT_INDEXED = ("count", "train_overlap")  # shown in the body, not model-index metrics


@functools.cache
def figures() -> dict[str, tuple[str, str]]:
    """Evaluation key -> (label in the card, format): the figures a card shows, in order."""
    from training.metrics import ACC_THRESHOLDS_KM

    return {
        "count": ("locations", "{:.0f}"),
        "mean_km": ("mean km", "{:.1f}"),
        "median_km": ("median km", "{:.1f}"),
        "geoscore": ("GeoScore (world, 1492.7 km)", "{:.0f}"),
        "geoscore_croatia": ("GeoScore (Croatia, 66.1 km)", "{:.0f}"),
        **{f"acc_{k}km": (f"≤ {k} km", "{:.0%}") for k in ACC_THRESHOLDS_KM},
        "county_accuracy": ("county accuracy", "{:.0%}"),
        "region_coverage_50": ("truth in 50% region", "{:.0%}"),
        "region_coverage_90": ("truth in 90% region", "{:.0%}"),
        "expected_error_ratio": ("expected / actual km", "{:.2f}"),
        "train_overlap": ("training locations among them", "{:.0f}"),
    }


class CardError(UsageError):
    """A checkpoint folder whose card cannot be written or read; one sentence naming the fix (CLI exit 2)."""


def _config(ckpt_dir: Path) -> dict:
    file = Path(ckpt_dir) / "config.json"
    if not file.is_file():
        raise CardError(f"{ckpt_dir} has no config.json; a model card describes a checkpoint folder.")
    return json.loads(file.read_text(encoding="utf-8"))


def _figures(results: dict) -> dict:
    """The card's figures of an evaluation-results dict (training.metrics.evaluation_results), rounded."""
    out = {}
    for key in figures():
        value = results.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            out[key] = int(value) if key in _NOT_INDEXED else round(float(value), 4)
    return out


def evaluation(results: dict, dataset: str, kind: str) -> dict:
    """One card entry: {dataset, kind, date (UTC, ISO), figures} from an evaluation-results dict."""
    return {"dataset": str(dataset), "kind": str(kind),
            "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
            "figures": _figures(results)}


def training_evaluations(config: dict) -> list[dict]:
    """The held-out figures ``train`` recorded in config.json's metrics (none when it trained on all)."""
    found = config.get("metrics") or {}
    held_out = int(found.get("val_locations") or 0)
    if not held_out or not _figures(found):
        return []
    chosen = (config.get("training") or {}).get("select_best", False)
    kind = f"held-out validation split of the training data ({held_out} locations)"
    kind += "; the best epoch was chosen on it, so mildly optimistic" if chosen else ""
    return [evaluation({**found, "count": held_out}, _data_name(config), kind)]


def _data_name(config: dict) -> str:
    names = [Path(str(s.get("path", ""))).name or "data" for s in config.get("data_sources") or []]
    return " + ".join(names) or "training data"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "data"


def card_data(config: dict, evaluations: list[dict], name: str):
    """The front matter (a huggingface_hub ModelCardData): Hub metadata, the evaluations, model-index."""
    from huggingface_hub import EvalResult, ModelCardData

    results = [
        EvalResult(task_type=PIPELINE_TAG, task_name=TASK_NAME, dataset_type=_slug(e["dataset"]),
                   dataset_name=e["dataset"], dataset_split=e["kind"], metric_type=key,
                   metric_name=figures()[key][0], metric_value=value)
        for e in evaluations for key, value in e["figures"].items() if key not in _NOT_INDEXED
    ]
    tags = ["geolocation", "image-geolocation", "croatia", "street-view", "geodemo", "timm",
            str(config.get("backbone", "")), *config.get("tasks", [])]
    return ModelCardData(library_name=LIBRARY_NAME, license=LICENSE, pipeline_tag=PIPELINE_TAG,
                         tags=list(dict.fromkeys(t for t in tags if t)), model_name=name,
                         eval_results=results or None, geodemo_evaluations=evaluations)


def _model_section(config: dict) -> list[str]:
    cells = config.get("cells") or {}
    n_cells = len(cells.get("center_lat", []) or []) if isinstance(cells, dict) else 0
    recipe = config.get("training") or {}
    unfreeze = recipe.get("unfreeze_epoch")
    tuned = "frozen" if unfreeze is None else f"fine-tuned from epoch {unfreeze}"
    weights = recipe.get("weights", config.get("weights_source", "?"))
    rows = [
        ("backbone", f"`{config.get('backbone')}` ({weights} weights, {config.get('image_size')} px, "
                     f"{tuned})"),
        ("heads", " + ".join(config.get("tasks", [])) + f" (hidden dim {config.get('hidden_dim', 0)})"),
        ("views", f"up to {config.get('num_views', 4)} (N, E, S, W), {config.get('fusion')} fusion"),
        ("cells", f"{cells.get('kind', '-') if isinstance(cells, dict) else '-'}: {n_cells} cells, "
                  f"{'weighted' if config.get('weighted_centroids') else 'plain'} centroids"),
        ("point", f"`{config.get('point_mode')}`, read-out temperature {config.get('temperature', 1.0)}"),
        ("recipe", ", ".join(f"{k} {recipe[k]}" for k in (
            "max_epochs", "batch_size", "lr", "schedule", "weight_decay", "haversine_tau_km",
            "label_smoothing", "val_fraction", "select_best", "seed") if k in recipe) or "not recorded"),
        ("size", f"{(config.get('metrics') or {}).get('model_mb', '?')} MB (`model.safetensors`)"),
        ("software", ", ".join(f"{k} {v}" for k, v in (config.get("versions") or {}).items())),
    ]
    return ["## Model", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]


def _data_section(config: dict) -> list[str]:
    sources = config.get("data_sources") or []
    count = (config.get("metrics") or {}).get("train_locations")
    if count is None:
        count = len((config.get("train_locations") or {}).get("uuid", []))
    lines = ["## Training data", "",
             f"{count} locations (LUMEN layout: four street-level views each), fingerprint "
             f"`{config.get('data_fingerprint') or 'not recorded'}` (SHA-256 over data.csv and the image "
             "files' names and sizes: the same data gives the same fingerprint).", ""]
    if sources:
        lines += ["| source | locations | fingerprint |", "|---|---|---|"]
        lines += [f"| {Path(str(s.get('path', ''))).name} | {s.get('locations', '?')} | "
                  f"`{str(s.get('fingerprint', ''))[:16]}…` |" for s in sources]
        lines.append("")
    return lines


def _results_section(evaluations: list[dict]) -> list[str]:
    lines = ["## Results", ""]
    if not evaluations:
        return lines + ["No held-out evaluation yet: this checkpoint trained on all its data. Add one with "
                        "`python -m training evaluate --checkpoint DIR --data NEW_DATA --out m.json "
                        "--update-card`.", ""]
    keys = [k for k in figures() if any(k in e["figures"] for e in evaluations)]
    lines += ["| dataset | kind | date | " + " | ".join(figures()[k][0] for k in keys) + " |",
              "|---|---|---|" + "---|" * len(keys)]
    for e in evaluations:
        shown = [figures()[k][1].format(e["figures"][k]) if k in e["figures"] else "–" for k in keys]
        lines.append(f"| {e['dataset']} | {e['kind']} | {e['date']} | " + " | ".join(shown) + " |")
    lines += ["", "Errors are great-circle km. GeoScore is the mean of 5000·e^(−d/1492.7 km) (OSV-5M's "
              "world scale) and of 5000·e^(−d/66.1 km) (the app's Croatia scale). Accuracy within 750 / "
              "2,500 km is not reported: every point in Croatia is within 661 km of every other. Coverage "
              "is the share of truths inside the 50% / 90% credible regions the app draws (nominal: 50% / "
              "90%); expected / actual is the model's mean own expected error over its mean actual error "
              "(1 = calibrated). Figures on locations the model trained on (\"training locations among "
              "them\", when shown) are not a test.", ""]
    return lines


def _geo_use() -> list[str]:
    return [
        "Where in Croatia was this street-level photo taken? A geodemo checkpoint: up to four photos of one "
        "place (facing north, east, south, west) give a point on Croatian land, the probabilities of the 21 "
        "counties, the model's own expected error and 50% / 90% credible regions.",
        "", "## Use", "", "```python", "from geodemo.predict import Predictor", "",
        'predictor = Predictor.from_pretrained("USER/MODEL")  # a Hub repo id, hf://USER/MODEL or a folder',
        'print(predictor.predict({0: "north.jpg", 90: "east.jpg"}).to_json())', "```", "",
        "or `python -m training evaluate --checkpoint hf://USER/MODEL --data DIR --out m.json`. The files "
        "are `config.json` (everything needed to predict) and `model.safetensors` (no pickle), plus "
        "`retrieval.safetensors` (similar training places) when present.", "",
    ]


def _classifier_use(config: dict) -> list[str]:
    names = config.get("class_names") or []
    return [
        f"A geodemo image classifier (ImageFolder) of {len(names)} classes: {', '.join(names[:20])}"
        f"{', ...' if len(names) > 20 else ''}.", "", "## Use", "",
        "`python -m training predict --checkpoint hf://USER/MODEL --data FOLDER --out preds.csv`", "",
    ]


def build_card(config: dict, evaluations: list[dict], name: str):
    """The whole card (a huggingface_hub ModelCard: front matter + body) of a config.json and evaluations."""
    from huggingface_hub import ModelCard

    use = _classifier_use(config) if config.get("tasks") == ["classify"] else _geo_use()
    body = [f"# {name}", "", *use, *_model_section(config), *_data_section(config),
            *_results_section(evaluations), "## Limitations", "",
            "Croatia only: every answer is a point on Croatian land (a classifier: one of its classes). "
            "Trained on few locations; figures on a few hundred locations carry standard errors of several "
            "km. The expected error is honest on average, not a per-photo guarantee.", ""]
    data = card_data(config, evaluations, name)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def read_evaluations(ckpt_dir) -> list[dict]:
    """The evaluations recorded in a checkpoint's card ([] without a card)."""
    from huggingface_hub import ModelCard

    file = Path(ckpt_dir) / CARD_FILE
    if not file.is_file():
        return []
    try:
        found = ModelCard.load(file).data.to_dict().get("geodemo_evaluations") or []
    except Exception as err:  # noqa: BLE001 - YAML or format errors all mean "not a readable card"
        raise CardError(f"{file} is not a readable model card ({type(err).__name__}); delete it and run "
                        "`python -m training card --checkpoint DIR` to write a new one.") from None
    return [e for e in found if isinstance(e, dict) and {"dataset", "kind", "figures"} <= set(e)]


def has_card(ckpt_dir) -> bool:
    """True when the folder holds a geodemo model card (README.md with this library's front matter)."""
    from huggingface_hub import ModelCard

    try:
        file = Path(ckpt_dir) / CARD_FILE
        return file.is_file() and ModelCard.load(file).data.library_name == LIBRARY_NAME
    except Exception:  # noqa: BLE001 - any unreadable card is no card
        return False


def _write(ckpt_dir: Path, card) -> Path:
    """Write README.md atomically (a temp file renamed over it)."""
    out = Path(ckpt_dir) / CARD_FILE
    fd, tmp = tempfile.mkstemp(prefix=".README.", suffix=".tmp", dir=ckpt_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(str(card))
    os.replace(tmp, out)
    return out


def _name(ckpt_dir: Path) -> str:
    return f"geodemo-{Path(ckpt_dir).resolve().name}"


def write_card(ckpt_dir) -> Path:
    """A fresh card from config.json (what ``train`` calls): only the figures training itself recorded."""
    config = _config(ckpt_dir)
    return _write(ckpt_dir, build_card(config, training_evaluations(config), _name(ckpt_dir)))


def add_evaluation(ckpt_dir, results: dict, dataset: str, kind: str = "evaluate") -> Path:
    """Append one evaluation to the checkpoint's card (replacing an earlier one of the same dataset and kind).

    Args:
        results: an evaluation-results dict (``evaluate``'s JSON). dataset: the name shown for the data.
        kind: what the evaluation was, e.g. "evaluate" or "5-fold cross-validation of this recipe".
    """
    config = _config(ckpt_dir)
    if not _figures(results).keys() - set(_NOT_INDEXED):
        raise CardError(f"the results for {dataset} hold no figure a card can show (mean_km, geoscore, ...); "
                        "pass the JSON that `evaluate` writes.")
    found = read_evaluations(ckpt_dir) if has_card(ckpt_dir) else training_evaluations(config)
    entry = evaluation(results, dataset, kind)
    found = [e for e in found if (e["dataset"], e["kind"]) != (entry["dataset"], entry["kind"])] + [entry]
    return _write(ckpt_dir, build_card(config, found, _name(ckpt_dir)))


# ----------------------------------------------------------------------------------------- command line
def add_parser(sub) -> None:
    """``python -m training card --checkpoint DIR [--results FILE.json --dataset NAME --kind TEXT]``."""
    p = sub.add_parser("card", help="write or refresh a checkpoint's model card (README.md, Hub format)")
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint folder (config.json inside)")
    p.add_argument("--results", type=Path, help="evaluation JSON (as `evaluate` writes) to add to the card")
    p.add_argument("--dataset", help="name shown for the --results data (default: the file's stem)")
    p.add_argument("--kind", default="evaluate", help="what --results measured, e.g. '5-fold CV'")


def run(args) -> None:
    """The ``card`` subcommand: refresh the card from config.json, keeping its evaluations, + --results."""
    ckpt = args.checkpoint
    if not (ckpt / "config.json").is_file():
        raise CardError(f"--checkpoint {ckpt} has no config.json; pass a checkpoint folder.")
    if args.results:
        try:
            results = json.loads(args.results.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise CardError(f"--results {args.results} is not a readable JSON file ({err}).") from None
        if not isinstance(results, dict):
            raise CardError(f"--results {args.results} holds no JSON object; pass `evaluate`'s JSON.")
        out = add_evaluation(ckpt, results, args.dataset or args.results.stem, args.kind)
    else:
        kept = read_evaluations(ckpt) if has_card(ckpt) else training_evaluations(_config(ckpt))
        out = _write(ckpt, build_card(_config(ckpt), kept, _name(ckpt)))
    print(json.dumps({"card": str(out), "evaluations": len(read_evaluations(ckpt))}))


def add_card_flags(parser) -> None:
    """``evaluate``'s --update-card and --dataset-name."""
    parser.add_argument("--update-card", action="store_true",
                        help="also add these figures to the checkpoint's model card (README.md): one entry "
                        "per dataset name, replacing an earlier evaluation of the same name")
    parser.add_argument("--dataset-name", help="the data's name on the card (default: the --data folder or "
                        "zip name)")


def update_from_evaluate(args, results: dict) -> Path | None:
    """After ``evaluate``: add its results to the checkpoint's card when --update-card was given."""
    if not getattr(args, "update_card", False):
        return None
    from geodemo.checkpoint import DEFAULT_CHECKPOINT

    ckpt = args.checkpoint or DEFAULT_CHECKPOINT  # a Hub model was refused by push.resolve_hub_checkpoints
    data = Path(args.data)
    out = add_evaluation(ckpt, results, args.dataset_name or (data.stem if data.is_file() else data.name))
    print(f"model card updated: {out}", file=sys.stderr)
    return out
