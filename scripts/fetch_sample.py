"""Fetch the public 100-location LUMEN Data Science 2022 sample into data/lumen-sample (needs internet).

The sample is the folder ``data/dataset_external_subset`` of the public LUMEN 2022 GeoGuessr project
(github.com/ciglenecki/geoguessr-ai): ``data.csv`` plus ``images/<uuid>/{0,90,180,270}.jpg`` (640x640 JPEG,
imagery (c) Google). This script downloads data.csv and the 400 views one file at a time from GitHub's
raw file host, checks every view is a readable image, keeps only ``uuid,latitude,longitude`` and moves the
finished folder into place in one step, so an interrupted run leaves nothing half-written.

Usage (repo root):
    .venv/bin/python scripts/fetch_sample.py                  # -> data/lumen-sample ($GEODEMO_SAMPLE if set)
    .venv/bin/python scripts/fetch_sample.py --if-missing     # a no-op when geodemo.paths finds a sample
    .venv/bin/python scripts/fetch_sample.py --out /data/lumen-sample
    .venv/bin/python scripts/fetch_sample.py --ref <commit>   # a fixed revision instead of the default branch

``--if-missing`` is what the README's test command runs first: a no-op where the sample is found
($GEODEMO_SAMPLE, else data/lumen-sample, else ../shared/data/lumen-sample), a download otherwise.

Exit status: 0 done (or nothing to do), 1 a download or file failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geodemo.data import DatasetError, read_locations  # noqa: E402
from geodemo.images import ImageError, load_rgb  # noqa: E402
from geodemo.paths import REPO as PROJECT  # noqa: E402
from geodemo.paths import SAMPLE_ENV, find_sample, sample_candidates  # noqa: E402

REPO = "ciglenecki/geoguessr-ai"
FOLDER = "data/dataset_external_subset"
HEADINGS = (0, 90, 180, 270)


def _url(base: str, ref: str, path: str) -> str:
    return f"{base.rstrip('/')}/{ref}/{FOLDER}/{path}"


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (https or a local file://)
        return response.read()


def fetch(out: Path, base: str, ref: str = "HEAD", timeout: float = 30.0, progress=print) -> int:
    """Download the sample into ``out`` (must not exist yet); returns the number of locations.

    Raises:
        RuntimeError: with one sentence naming the file that failed and what to do.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        url = _url(base, ref, "data.csv")
        try:
            (work / "data.csv").write_bytes(_get(url, timeout))
            frame = read_locations(work)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RuntimeError(f"could not download {url} ({exc}); check the internet connection, or "
                               f"download {FOLDER} from github.com/{REPO} by hand.") from None
        except DatasetError as exc:
            raise RuntimeError(f"the downloaded data.csv is not usable: {exc}") from None
        frame[["uuid", "latitude", "longitude"]].to_csv(work / "data.csv", index=False)
        total = len(frame) * len(HEADINGS)
        done = 0
        for uuid in frame["uuid"]:
            folder = work / "images" / uuid
            folder.mkdir(parents=True)
            for heading in HEADINGS:
                url = _url(base, ref, f"images/{uuid}/{heading}.jpg")
                try:
                    data = _get(url, timeout)
                    load_rgb(io.BytesIO(data), name=url)  # a real, bounded image, or ImageError
                except ImageError:
                    raise RuntimeError(f"{url} is not a usable image; run the script again, or report it "
                                       f"at github.com/{REPO} if it stays broken.") from None
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    raise RuntimeError(f"could not download {url} ({exc}); run the script again.") from None
                (folder / f"{heading}.jpg").write_bytes(data)
                done += 1
                if progress and (done % 40 == 0 or done == total):
                    progress(f"{done}/{total} views")
        os.replace(work, out)
        return len(frame)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Download the public 100-location LUMEN 2022 sample (data.csv + images/<uuid>/*.jpg).",
        epilog=f"Source: github.com/{REPO}, folder {FOLDER}. Imagery (c) Google.",
    )
    default_out = sample_candidates()[0]  # $GEODEMO_SAMPLE when set, else data/lumen-sample in the repository
    shown = default_out.relative_to(PROJECT) if default_out.is_relative_to(PROJECT) else default_out
    parser.add_argument("--out", type=Path, default=default_out,
                        help=f"folder to create (default: ${SAMPLE_ENV} if set, else {shown}); "
                             "must not exist yet")
    parser.add_argument("--if-missing", action="store_true",
                        help="do nothing when a sample is already found ($GEODEMO_SAMPLE, data/lumen-sample, "
                             "../shared/data/lumen-sample); download it otherwise")
    parser.add_argument("--ref", default="HEAD",
                        help="branch, tag or commit of the repository (default: HEAD)")
    parser.add_argument("--base-url", default=f"https://raw.githubusercontent.com/{REPO}",
                        help="where the repository's raw files are served (a mirror, or file:// for a copy)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per file (default: 30)")
    args = parser.parse_args(argv)
    if args.if_missing and find_sample() is not None:
        return 0
    if args.out.exists():
        print(f"error: {args.out} already exists; remove it or pass another --out.", file=sys.stderr)
        return 2
    try:
        n = fetch(args.out, args.base_url, args.ref, args.timeout)
    except RuntimeError as exc:
        print(f"error: the LUMEN sample (needed by the tests and the examples) is missing and {exc}",
              file=sys.stderr)
        return 1
    print(f"{n} locations in {args.out}; check them with: python -m training validate-data {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
