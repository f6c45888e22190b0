"""``python -m training collect``: new Croatian locations in the LUMEN layout from Street View or Mapillary.

Parse, read the secret (flag, file or environment; never echoed), then call `geodemo.collect.collect`.
The JSON summary goes to stdout, progress lines to stderr (and to --progress-file for the app's job).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from geodemo.progress import PROGRESS_PREFIX, write_progress
from training.cliutil import UsageError, bounded

KEY_ENV = {"streetview": "GEODEMO_STREETVIEW_KEY", "mapillary": "GEODEMO_MAPILLARY_TOKEN"}

EPILOG = """\
Endpoints: Street View metadata https://maps.googleapis.com/maps/api/streetview/metadata (free) and images
https://maps.googleapis.com/maps/api/streetview (billed to your key under Google's terms; see --dry-run);
Mapillary https://graph.mapillary.com/images (free token; CC-BY-SA 4.0 imagery, credited per location in
the dataset's README.md, ATTRIBUTION and sources.csv). Re-running the same command resumes: finished and
refused points are not asked again. Skip reasons in the summary: {skips}."""


def add_parser(sub) -> None:
    """Register `collect`."""
    from geodemo.collect.vocab import PRICE_PER_1000_USD, SAMPLINGS, SOURCES, describe_skips

    p = sub.add_parser(
        "collect",
        help="collect new locations from Street View or Mapillary into a LUMEN-layout folder",
        description="Sample points inside Croatia, find imagery near each and write a LUMEN-layout dataset "
        "that validate-data, train and evaluate read.",
        epilog=EPILOG.format(skips=describe_skips()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--source", required=True, choices=SOURCES, help="where the images come from")
    p.add_argument("--out", required=True, type=Path,
                   help="dataset folder to write (created; an existing collect folder is resumed)")
    p.add_argument("--points", type=bounded(int, 1, 1_000_000), default=100,
                   help="sample points to try; each gives at most one location (default 100)")
    s = p.add_argument_group("where to look")
    s.add_argument("--sampling", choices=SAMPLINGS, default="prior",
                   help="prior: near the bundled 4,732 real Street View coordinates (most have imagery); "
                   "uniform: uniformly on land; county: equal shares of the 21 counties (default prior)")
    s.add_argument("--seed", type=int, default=0, help="random seed of the sample points (default 0)")
    s.add_argument("--min-spacing-km", type=bounded(float, 0, 100), default=1.0,
                   help="no two points or kept locations closer than this, km (default 1)")
    s.add_argument("--exclude", type=Path, action="append", default=[], metavar="DIR",
                   help="a dataset folder (or CSV of latitude,longitude) to stay away from, e.g. a training "
                   "set when collecting a test set; repeat for several")
    s.add_argument("--exclude-km", type=bounded(float, 0, 100), default=1.0,
                   help="how far from every --exclude location points and locations must be, km (default 1)")
    s.add_argument("--radius-m", type=bounded(float, 1, 5000), default=50.0,
                   help="how far from a sample point the imagery may be, metres (default 50)")
    k = p.add_argument_group("access (the key or token is sent to its API only; never logged or written)")
    k.add_argument("--key", help="Street View API key; visible to other users of this machine in the "
                   f"process list: prefer ${KEY_ENV['streetview']} or --key-file")
    k.add_argument("--token", help=f"Mapillary client token; prefer ${KEY_ENV['mapillary']} or --key-file")
    k.add_argument("--key-file", type=Path, help="a file holding the key or token (first line)")
    m = p.add_argument_group("Mapillary")
    m.add_argument("--group-m", type=bounded(float, 0.1, 100), default=5.0,
                   help="photos within this distance of each other form one location, metres (default 5)")
    m.add_argument("--min-views", type=bounded(int, 1, 4), default=1,
                   help="fewest views (of 0/90/180/270, each within ±45°) a location needs (default 1)")
    g = p.add_argument_group("Street View")
    g.add_argument("--allow-third-party", action="store_true",
                   help="also keep user-contributed panoramas (default: Google's own only)")
    g.add_argument("--price-per-1000", type=bounded(float, 0, 1000), default=PRICE_PER_1000_USD,
                   help=f"USD per 1,000 images for --dry-run's estimate (default {PRICE_PER_1000_USD:.2f}, "
                   "Google's 2025 list price; check your own)")
    c = p.add_argument_group("crawler limits")
    c.add_argument("--rate", type=bounded(float, 0.01, 100), default=5.0,
                   help="most requests per second, retries included (default 5)")
    c.add_argument("--retries", type=bounded(int, 0, 20), default=5,
                   help="retries of a request answered 429 or 5xx or dropped (default 5)")
    c.add_argument("--backoff-s", type=bounded(float, 0, 600), default=1.0,
                   help="first wait before a retry, seconds; doubles each retry; a Retry-After header wins "
                   "(default 1)")
    c.add_argument("--max-requests", type=bounded(int, 0, 10**9), default=0,
                   help="stop after this many requests; 0 = 10 per point (default 0)")
    c.add_argument("--max-bytes", type=bounded(int, 0, 10**13), default=0,
                   help="stop after downloading this many bytes; 0 = 8 MiB per point (default 0)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the requests and the estimated cost as JSON; send nothing, write nothing")
    p.add_argument("--progress-file", type=Path, help="JSON file kept up to date with progress (for the app)")
    p.set_defaults(run=run)


def _secret(args) -> str:
    """The key or token: --key/--token, else --key-file, else the environment; UsageError if none."""
    flag = "--key" if args.source == "streetview" else "--token"
    given = args.key if args.source == "streetview" else args.token
    if given:
        return given.strip()
    if args.key_file:
        try:
            text = args.key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"--key-file {args.key_file} cannot be read ({exc.strerror}); pass a readable "
                             "file holding the key.") from None
        if text:
            return text.splitlines()[0].strip()
        raise UsageError(f"--key-file {args.key_file} is empty; put the key on its first line.")
    env = os.environ.get(KEY_ENV[args.source], "").strip()
    if env:
        return env
    raise UsageError(f"no {'API key' if args.source == 'streetview' else 'token'} for {args.source}; set "
                     f"${KEY_ENV[args.source]}, or pass --key-file FILE (or {flag}).")


def config_from_args(args):
    """The CollectConfig of the parsed arguments."""
    from geodemo.collect import CollectConfig

    return CollectConfig(
        source=args.source, out=str(args.out), points=args.points, sampling=args.sampling, seed=args.seed,
        min_spacing_km=args.min_spacing_km, exclude=[str(p) for p in args.exclude],
        exclude_km=args.exclude_km, radius_m=args.radius_m, group_m=args.group_m, min_views=args.min_views,
        allow_third_party=args.allow_third_party, rate_per_s=args.rate, retries=args.retries,
        backoff_s=args.backoff_s, max_requests=args.max_requests, max_bytes=args.max_bytes,
        price_per_1000=args.price_per_1000,
    )


def run(args) -> int:
    from geodemo.collect import CollectError, collect, plan
    from geodemo.collect.http import redact

    for path in args.exclude:
        if not path.exists():
            raise UsageError(f"--exclude {path} does not exist; pass a dataset folder or a CSV of "
                             "latitude,longitude points.")
    cfg = config_from_args(args)
    if args.dry_run:
        print(json.dumps(plan(cfg), indent=1))
        return 0
    secret = _secret(args)
    total = args.points

    def progress(state: dict) -> None:
        step = state["step"]
        write_progress(args.progress_file, stage=f"collect: {step} / {total} points", step=step,
                       total_steps=total, fraction=step / total,
                       metrics={"kept": state["kept"], "locations": state["locations"],
                                "requests": state["requests"]})

    def log(line: str) -> None:
        print(f"{PROGRESS_PREFIX}{line}", file=sys.stderr, flush=True)

    write_progress(args.progress_file, stage="collect: sampling points", total_steps=total)
    try:
        summary = collect(cfg, secret, progress=progress, log=log)
    except CollectError as exc:  # no message holds the secret; this makes sure
        raise CollectError(redact(str(exc), [secret])) from None
    print(json.dumps(summary, indent=1))
    skipped = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(summary["skipped"].items()))
    log(f"done: {summary['kept']} new locations ({summary['locations']} in {args.out}); skipped: "
        f"{skipped or 'none'}")
    if summary["stopped"]:
        raise CollectError(f"{summary['stopped']} after {summary['kept']} new locations; re-run the same "
                           "command with a larger limit to go on (finished points are kept).")
    write_progress(args.progress_file, stage="done", step=total, total_steps=total, fraction=1.0, done=True,
                   metrics={"kept": summary["kept"], "locations": summary["locations"]})
    return 0
