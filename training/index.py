"""Building a checkpoint's similar-places index (geodemo.retrieval reads and searches it): from the
training run's cached features, or by embedding the training locations' views with the checkpoint itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from geodemo.data import VIEW_HEADINGS, read_locations, view_paths
from geodemo.predict import Predictor
from geodemo.retrieval import build_index


def index_checkpoint(checkpoint, data_dir, uuids=None, fingerprint: str = "", batch_size: int = 16) -> Path:
    """Embed a checkpoint's training locations with the checkpoint itself and store the index in it.

    Args:
        data_dir: the LUMEN-layout training data; uuids: the training locations (default every one).
        fingerprint: the training data's fingerprint (default the checkpoint config's data_fingerprint).

    Returns:
        The written index file.
    """
    frame = read_locations(data_dir)
    if uuids is not None:
        frame = frame[frame["uuid"].astype(str).isin({str(u) for u in uuids})]
    items, keep = [], []
    for i, uid in enumerate(frame["uuid"].astype(str)):
        paths = view_paths(data_dir, uid)
        if paths:
            items.append({VIEW_HEADINGS[v]: p for v, p in paths.items()})
            keep.append(i)
    frame = frame.iloc[keep]
    predictor = Predictor.load(checkpoint)
    fused = predictor.embed_batch(items, batch_size)
    index = build_index(
        fused, frame["latitude"], frame["longitude"], frame["uuid"].astype(str).tolist(),
        fingerprint or predictor.config.data_fingerprint,
    )
    out = index.save(predictor.path)
    predictor.__dict__.pop("index", None)  # the process's cached Predictor re-reads its (new) index
    return out


@torch.inference_mode()
def write_retrieval_index(model, dm, out_dir, fingerprint: str, batch: int = 4096) -> Path:
    """Store the training locations' fused embeddings as the checkpoint's similar-places index.

    When every epoch trained on cached features (the backbone never changed), the index is fused from those
    features: no second pass over the images (at 16k locations that pass costs as much as a cache fill).
    Otherwise (fine-tuned backbone, flip TTA) the images are embedded again with the finished checkpoint.
    """
    frame, bank = dm.frames["train"], getattr(dm.datasets.get("train"), "feats", None)
    frozen = dm.use_cache and dm.cache_epochs >= dm.cfg.max_epochs and not model.config.tta_flip
    if not frozen or bank is None or len(bank) != len(frame):
        return index_checkpoint(out_dir, dm.data_dir, frame["uuid"], fingerprint)
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    fused = []
    for start in range(0, len(bank), batch):
        rows = range(start, min(start + batch, len(bank)))
        feats = torch.stack([bank[i][0] for i in rows]).to(device)  # (n, V, D): the plain (unmirrored) views
        mask = dm.datasets["train"].mask[start : rows.stop].to(device)
        fused.append(model.fuse(feats, mask).float().cpu().numpy())
    model.train(was_training)
    keep = dm.datasets["train"].mask.any(1).numpy()
    index = build_index(np.concatenate(fused)[keep], frame["latitude"].to_numpy()[keep],
                        frame["longitude"].to_numpy()[keep], frame["uuid"].astype(str)[keep].tolist(),
                        fingerprint)
    return index.save(out_dir)
