"""The similar-places index at the end of training: fused from cached features vs the images embedded again.

Trains nothing: loads a checkpoint trained with the default (frozen, cached) recipe, builds its datamodule on
the sample (warm cache), then times, alternately, `training.index.index_checkpoint` (decode + embed every
training view with the checkpoint: what `train` did before) and `training.index.write_retrieval_index`
(fuse the cached features: what a frozen cached run does now).

Usage: .venv/bin/python benchmarks/retrieval_index_build.py [--checkpoint DIR] [--repeats 5]
"""

import argparse
import statistics
import time

from _common import SAMPLE, write_result

from geodemo.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from training.config import TrainConfig
from training.datamodule import GeoDataModule
from training.index import index_checkpoint, write_retrieval_index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="a copy of a checkpoint (its index is rewritten)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.checkpoint is None:
        raise SystemExit("pass --checkpoint: a COPY of a checkpoint directory (its index file is rewritten), "
                         f"e.g. cp -r {DEFAULT_CHECKPOINT} /tmp/ck")
    model, config = load_checkpoint(args.checkpoint)
    dm = GeoDataModule(SAMPLE, TrainConfig.from_dict(config.training))
    dm.embedder = model
    dm.prepare_data()
    dm.setup("fit")
    images, features = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        index_checkpoint(args.checkpoint, SAMPLE, dm.frames["train"]["uuid"])
        images.append(time.perf_counter() - t)
        t = time.perf_counter()
        write_retrieval_index(model, dm, args.checkpoint, config.data_fingerprint)
        features.append(time.perf_counter() - t)
    result = {
        "locations": len(dm.frames["train"]),
        "embed_images_s": images,
        "fuse_cached_s": features,
        "ratio_median": statistics.median(images) / statistics.median(features),
    }
    print(result)
    write_result("retrieval_index_build", result)


if __name__ == "__main__":
    main()
