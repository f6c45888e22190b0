"""``predict``, ``embed``, ``validate-data``, ``export``, ``optimize``: parse, then call one library function.

Each ``add_*`` builds its parser and binds its run function (``set_defaults(run=...)``); heavy modules are
imported inside the run functions, so a bad argument is refused before torch loads. Progress goes to
stderr; stdout holds only the result.
"""

from __future__ import annotations

import json
from pathlib import Path

from training.cliutil import (
    CHECKPOINT_HELP,
    UsageError,
    add_backbone_flags,
    add_trainer_flags,
    backbone_weights,
    bounded,
    progress_writer,
    quiet_output,
    rank_zero,
    trainer_kwargs,
)

POINT_HELP = "geocell -> point: min_expected_km | weighted_mean | argmax (default: the checkpoint's own)"


def add_parser(sub) -> None:
    """Register every subcommand of this module."""
    add_predict(sub)
    add_embed(sub)
    add_validate(sub)
    add_optimize(sub)
    add_export(sub)


# ----------------------------------------------------------------------------------------- predict
def add_predict(sub) -> None:
    pr = sub.add_parser(
        "predict", help="predict every location: CSV uuid,latitude,longitude (classify: Id,Category)"
    )
    pr.add_argument("--checkpoint", type=Path, help=CHECKPOINT_HELP)
    pr.add_argument("--data", type=Path, help="dataset folder (classify: folder of images)")
    pr.add_argument(
        "--panorama",
        nargs="+",
        type=Path,
        help="instead of --data: equirectangular 2:1 360° image(s), each cut into the four training views",
    )
    pr.add_argument(
        "--heading",
        type=bounded(float, -360.0, 360.0),
        default=0.0,
        help="--panorama: compass heading of the panorama's centre column, degrees clockwise from "
        "north (Street View panoramas start facing the car's direction)",
    )
    pr.add_argument("--views-dir", type=Path, help="--panorama: also write the cut views as JPEGs here")
    pr.add_argument("--out", required=True, type=Path, help="CSV file to write")
    pr.add_argument(
        "--batch-size", type=bounded(int, 1, 65_536), default=16, help="locations per forward pass"
    )
    pr.add_argument("--point-mode", help=POINT_HELP)
    pr.add_argument("--progress-file", type=Path, help="JSON file kept up to date with progress")
    pr.add_argument(
        "--gradcam-dir",
        type=Path,
        help="also write Grad-CAM overlays (what decided the top class / cell) as JPEGs here",
    )
    pr.add_argument(
        "--gradcam-limit", type=bounded(int, 1), help="Grad-CAM for the first N images / locations only"
    )
    add_trainer_flags(pr).description = (
        "more than one process (e.g. --devices 2 --strategy ddp): Lightning's predict loop, each rank "
        "predicting its share; the defaults predict in this process"
    )
    pr.set_defaults(run=run_predict)


def run_predict(args) -> None:
    quiet_output()  # before lightning loads (training.distributed)
    from geodemo.checkpoint import DEFAULT_CHECKPOINT, read_config
    from training import distributed
    from training.evaluate import predict_images, predict_locations


    checkpoint = args.checkpoint or DEFAULT_CHECKPOINT
    ranks = not distributed.single_process(**trainer_kwargs(args))
    if ranks and (args.panorama or read_config(checkpoint).tasks == ["classify"]):
        raise UsageError(
            "--devices/--strategy/--num-nodes distribute `predict --data` with a location "
            "checkpoint; predict panoramas and classify images without them."
        )
    if ranks and args.accelerator not in ("cpu", "auto"):
        raise UsageError(
            f"distributed predict runs on CPU processes (the Predictor's ONNX engine), not "
            f"--accelerator {args.accelerator}; pass --accelerator cpu."
        )
    if args.panorama:
        return _predict_panoramas(args, checkpoint)
    if args.data is None:
        raise UsageError("predict needs --data DIR (a dataset folder) or --panorama FILE (a 360° image)")
    progress = progress_writer(args.progress_file, "predicting") if rank_zero() else None
    if read_config(checkpoint).tasks == ["classify"]:
        table = predict_images(checkpoint, args.data)
    elif ranks:  # Lightning's predict loop: every rank predicts its share, rank 0 merges
        table = distributed.predict_locations(
            checkpoint,
            args.data,
            args.out.parent / f".{args.out.name}.parts",
            batch_size=args.batch_size,
            point_mode=args.point_mode,
            progress=progress,
            **trainer_kwargs(args),
        )
        if table is None:  # not rank 0
            return None
    else:
        table = predict_locations(
            checkpoint, args.data, batch_size=args.batch_size, progress=progress, point_mode=args.point_mode
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    result = {"predictions": len(table), "out": str(args.out)}
    if args.gradcam_dir:
        from training.evaluate import write_gradcams

        written = write_gradcams(checkpoint, args.data, args.gradcam_dir, limit=args.gradcam_limit)
        result.update(gradcams=len(written), gradcam_dir=str(args.gradcam_dir))
    print(json.dumps(result))


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
    print(json.dumps({"predictions": len(rows), "out": str(args.out)}))


# ----------------------------------------------------------------------------------------- embed
def add_embed(sub) -> None:
    p = sub.add_parser(
        "embed",
        help="fill the embedding cache for dataset(s) with the keys training uses (frozen-backbone features)",
    )
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        action="append",
        help="dataset folder (LUMEN layout); repeat it for several (shared content embedded once)",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="embed with this checkpoint's backbone (what `train --init-from` it reads); "
        "default: --backbone with its --pretrained/--weights, as `train` builds it",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        help="embedding cache folder (default $GEODEMO_CACHE_DIR or ~/.cache/geodemo/embeddings)",
    )
    p.add_argument(
        "--mirror",
        action="store_true",
        help="also store each view flipped left-right (recipes that train with panorama flips)",
    )
    p.add_argument(
        "--batch-size",
        type=bounded(int, 1, 65_536),
        help="images per forward per process; default measured (or 16)",
    )
    p.add_argument(
        "--num-workers",
        type=bounded(int, 0, 256),
        help="decode processes per process; default the cores the processes leave free",
    )
    p.add_argument(
        "--seed",
        type=bounded(int, 0, 2**32 - 1),
        default=0,
        help="torch seed before building the backbone (default: 0)",
    )
    add_backbone_flags(p.add_argument_group("backbone (without --checkpoint)"))
    add_trainer_flags(p).description = (
        "more than one process (e.g. --devices 2 --strategy ddp): Lightning's predict loop, each rank "
        "embedding its share into the one cache; the defaults embed in this process"
    )
    p.set_defaults(run=run_embed)


def run_embed(args) -> None:
    quiet_output()  # before lightning loads (training.distributed)
    from training.distributed import embed_datasets, embedding_model

    weights = None if args.checkpoint else backbone_weights(args)
    model, backbone = embedding_model(args.checkpoint, args.backbone, weights, args.image_size, args.seed)
    summary = embed_datasets(
        args.data,
        model,
        backbone,
        cache_dir=args.cache_dir,
        mirror=args.mirror,
        batch_size=args.batch_size,
        workers=args.num_workers,
        progress=progress_writer(None, "embedding") if rank_zero() else None,
        **trainer_kwargs(args),
    )
    if summary is not None:  # rank 0
        print(json.dumps(summary, default=str))


# ----------------------------------------------------------------------------------------- validate-data
def add_validate(sub) -> None:
    v = sub.add_parser(
        "validate-data", help="check a dataset; exit 1 on any error (--strict: on warnings too)"
    )
    v.add_argument("dir", type=Path, help="dataset folder holding data.csv and images/")
    v.add_argument(
        "--tolerance-km",
        type=bounded(float, 0.0, 20_000.0),
        default=5.0,
        help="how far outside Croatia a point may lie, km (default: 5)",
    )
    v.add_argument("--no-images", action="store_true", help="skip decoding every view (faster)")
    v.add_argument(
        "--strict",
        action="store_true",
        help="also fail on warnings, e.g. locations with fewer than four views (allowed by "
        "default: the model handles 1-4 views)",
    )
    v.set_defaults(run=run_validate)


def run_validate(args) -> int:
    from geodemo.validate import validate_dataset

    report = validate_dataset(
        args.dir,
        tolerance_km=args.tolerance_km,
        check_images=not args.no_images,
        progress=progress_writer(None, "checking locations"),
    )
    print(report.format())
    if args.strict and report.warnings:
        return 1
    return 0 if report.ok else 1


# ----------------------------------------------------------------------------------------- export, optimize
def add_export(sub) -> None:
    x = sub.add_parser("export", help="export a checkpoint's model to ONNX (views + view mask -> outputs)")
    x.add_argument("--checkpoint", type=Path, help=CHECKPOINT_HELP)
    x.add_argument("--format", default="onnx", choices=("onnx",), help="export format")
    x.add_argument("--out", required=True, type=Path, help="file to write, e.g. model.onnx")
    x.set_defaults(run=run_export)


def run_export(args) -> None:
    from training.export import export_onnx

    print(json.dumps(export_onnx(args.checkpoint, args.out)))


def add_optimize(sub) -> None:
    o = sub.add_parser(
        "optimize", help="write LUMEN folder(s) as litdata chunks of pre-resized views (train --data CHUNKS)"
    )
    o.add_argument(
        "--data",
        required=True,
        type=Path,
        action="append",
        help="dataset folder (LUMEN layout); repeat it to combine several as train does",
    )
    o.add_argument("--out", required=True, type=Path, help="chunks folder to create (must not exist)")
    o.add_argument(
        "--image-size",
        type=bounded(int, 32, 1024),
        default=224,
        help="short side of the stored views, px: at least the training input size (default: 224)",
    )
    o.add_argument(
        "--num-workers", type=bounded(int, 1, 256), help="worker processes (default: one per usable core)"
    )
    o.set_defaults(run=run_optimize)


def run_optimize(args) -> None:
    from training.streaming import optimize_chunks

    if args.out.exists():
        raise UsageError(f"--out {args.out} already exists; pass a new folder for the chunks.")
    meta = optimize_chunks(args.data, args.out, image_size=args.image_size, num_workers=args.num_workers)
    print(json.dumps({"chunks": str(args.out), **{k: meta[k] for k in ("locations", "views", "image_size")}}))
