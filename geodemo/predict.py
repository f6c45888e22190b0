"""Inference: Predictor (load once, predict one or many locations; the result is geodemo.prediction).

The hot path is decode (JPEG draft mode) -> crop/resize (cv2) -> normalise (numpy) -> ONE batched forward
pass of every present view -> numpy post-processing. Nothing else, so latency stays near the backbone's.
That backbone pass runs on ONNX Runtime where it is installed (see geodemo.onnx_engine; GEODEMO_ENGINE).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from geodemo.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from geodemo.data import VIEW_HEADINGS, read_locations, view_paths
from geodemo.geo import COUNTY_CODES, county_names
from geodemo.gradcam import location_gradcam
from geodemo.heads import get_head, in_registry_order
from geodemo.hub import local_checkpoint, pretrained_folder
from geodemo.images import center_square, decode_budget, load_rgb
from geodemo.model import POINT_TASKS, GeoModel, ModelConfig
from geodemo.onnx_engine import engine_setting, onnx_backbone
from geodemo.prediction import Prediction, view_slots
from geodemo.readout import Readout

log = logging.getLogger("geodemo.predict")
TOP_CELLS = 10
MAX_MODELS = 3  # loaded checkpoints kept per process (GEODEMO_MAX_MODELS); each holds ~80 MB
# Mirroring a panorama swaps east and west: slot v holds view (V - v) % V.
_MIRROR = [(len(VIEW_HEADINGS) - v) % len(VIEW_HEADINGS) for v in range(len(VIEW_HEADINGS))]


_blas = {"users": 0, "limits": None}  # see _one_blas_thread
_blas_lock = threading.Lock()


@contextlib.contextmanager
def _one_blas_thread():
    """numpy's BLAS on one thread while any batch runs in this process; counted, so overlapping batches
    restore the original thread count once, when the last one ends."""
    with _blas_lock:
        if _blas["users"] == 0:
            _blas["limits"] = threadpool_limits(1, user_api="blas")
        _blas["users"] += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas["users"] -= 1
            if _blas["users"] == 0:
                _blas["limits"].restore_original_limits()


def _square_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop, then resize to size: exactly geodemo.dataset's eval transform."""
    return center_square(rgb, size)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


class Predictor:
    """A loaded checkpoint ready to predict; get one with `Predictor.load(path)` (cached per process)."""

    _cache: dict[tuple, Predictor] = {}
    _lock = threading.Lock()

    def __init__(self, model: GeoModel, config: ModelConfig, name: str = "model", path: Path | None = None):
        self.model, self.config, self.name, self.path = model.eval(), config, name, path
        self._onnx = None  # an OnnxBackbone replacing model.backbone in _forward (see load)
        self.engine = "torch"  # which engine runs the backbone: "torch" or "onnx"
        self.readout = Readout(config)  # outputs -> point and county probabilities (shared with training)
        self.cells, self.xy_stats = self.readout.cells, self.readout.xy_stats
        self._codes = self.readout.codes
        names = dict(zip(COUNTY_CODES, county_names()))
        self._names = [names.get(code, code) for code in self._codes]
        # (x / 255 - mean) / std as one multiply-add on uint8 pixels: x * scale + shift.
        mean, std = np.asarray(config.mean, np.float32), np.asarray(config.std, np.float32)
        self._scale, self._shift = (1.0 / (255.0 * std))[:, None, None], (-mean / std)[:, None, None]

    @classmethod
    def load(cls, path=DEFAULT_CHECKPOINT) -> Predictor:
        """Load a checkpoint once per process; a checkpoint rewritten in place is reloaded.

        The backbone runs on ONNX Runtime unless GEODEMO_ENGINE=torch or the export fails (then PyTorch).
        """
        path = local_checkpoint(path).resolve()  # hf://user/name: its downloaded folder (geodemo.hub)
        weights = path / "model.safetensors"
        key = (path, weights.stat().st_mtime_ns if weights.exists() else 0, engine_setting())
        with cls._lock:
            if key not in cls._cache:
                model, config = load_checkpoint(path, expect_tasks=list(POINT_TASKS))
                cls._cache = {k: v for k, v in cls._cache.items() if k[0] != path}  # drop stale versions
                predictor = cls(model, config, path.name, path)
                predictor._onnx = onnx_backbone(model.backbone, path, config.image_size)
                predictor.engine = "torch" if predictor._onnx is None else "onnx"
                cls._cache[key] = predictor
            cls._cache[key] = cls._cache.pop(key)  # most recently used last: a small LRU bounds memory
            while len(cls._cache) > max(1, int(os.environ.get("GEODEMO_MAX_MODELS", MAX_MODELS))):
                cls._cache.pop(next(iter(cls._cache)))
            return cls._cache[key]

    @classmethod
    def from_pretrained(cls, name_or_path, revision: str | None = None, cache_dir=None) -> Predictor:
        """A checkpoint folder or a Hub model, "user/name" or "hf://user/name" (hub.pretrained_folder)."""
        return cls.load(pretrained_folder(name_or_path, revision, cache_dir))

    # ------------------------------------------------------------ preprocessing

    def _decode(self, items: list) -> tuple[list[dict[int, np.ndarray]], float, float]:
        """Locations -> ([{view index: (S, S, 3) uint8 crop} per location], decode ms, resize ms)."""
        size, decode_s, resize_s = self.config.image_size, 0.0, 0.0
        crops = []
        for views in items:
            location = {}
            with decode_budget():  # one location's views share one pixel budget and decode deadline
                for v, source in view_slots(views).items():
                    t0 = time.perf_counter()
                    shown = None if isinstance(source, (str, Path)) else f"the {VIEW_HEADINGS[v]} degree view"
                    rgb = load_rgb(source, min_side=size, name=shown)
                    t1 = time.perf_counter()
                    location[v] = _square_resize(rgb, size)
                    decode_s, resize_s = decode_s + t1 - t0, resize_s + time.perf_counter() - t1
            crops.append(location)
        return crops, 1000 * decode_s, 1000 * resize_s

    def _tensors(
        self, crops: list[dict[int, np.ndarray]], mirror: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Crops -> images (P, 3, S, S) normalised float32, contiguous, in row-major mask order (what ONNX
        Runtime takes without a copy), view_mask (B, V) bool."""
        mask = torch.zeros(len(crops), len(VIEW_HEADINGS), dtype=torch.bool)
        stack = []
        for b, location in enumerate(crops):
            if mirror:  # flip every view and swap east <-> west
                location = {_MIRROR[v]: rgb[:, ::-1] for v, rgb in location.items()}
            for v in sorted(location):
                mask[b, v] = True
                stack.append(location[v])
        size = self.config.image_size
        x = np.empty((len(stack), 3, size, size), np.float32)
        for image, rgb in zip(x, stack):  # uint8 HWC -> float32 CHW in one pass per view, no stacked copy
            np.multiply(rgb.transpose(2, 0, 1), self._scale, out=image)
            image += self._shift
        return torch.from_numpy(x), mask

    def _inputs(self, crops: list[dict[int, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Crops -> the forward pass's images and view_mask; with TTA the mirrored panoramas follow."""
        images, mask = self._tensors(crops)
        if self.config.tta_flip:
            mirrored, mirror_mask = self._tensors(crops, mirror=True)
            images, mask = torch.cat([images, mirrored]), torch.cat([mask, mirror_mask])
        return images, mask

    def _prepare(self, items: list, pool: ThreadPoolExecutor | None = None):
        """Items -> (images, view_mask, decode ms, resize + normalise ms): all the work before the forward
        pass, which the batch paths do in a thread for the next chunk. With a pool, half of the items are
        decoded there meanwhile (the first chunk, which nothing else overlaps)."""
        if pool is not None and len(items) > 1:
            half = pool.submit(self._decode, items[: len(items) // 2])
            try:
                rest, decode_ms, resize_ms = self._decode(items[len(items) // 2 :])
            except Exception:
                half.result()  # a bad image in the first half is the one to report, as without the split
                raise
            crops, more_decode_ms, more_resize_ms = half.result()
            crops, decode_ms, resize_ms = crops + rest, decode_ms + more_decode_ms, resize_ms + more_resize_ms
        else:
            crops, decode_ms, resize_ms = self._decode(items)
        t0 = time.perf_counter()
        images, mask = self._inputs(crops)
        return images, mask, decode_ms, resize_ms + 1000 * (time.perf_counter() - t0)

    # ------------------------------------------------------------ prediction

    def _forward(self, crops: list[dict[int, np.ndarray]]) -> dict[str, np.ndarray]:
        """One batched forward of every present view (and of the mirrored panoramas with TTA)."""
        return self._run(*self._inputs(crops))

    @functools.cached_property
    def _batch_onnx(self):
        """The ONNX backbone for the batch paths: a second session whose idle threads sleep, leaving the
        core to the thread decoding the next chunk (the interactive one keeps ORT's spinning, which is
        quicker for a lone call). Falls back to the interactive session."""
        if self._onnx is None or self._onnx.path is None:
            return self._onnx
        try:
            return self._onnx.sleeping()
        except Exception as exc:  # noqa: BLE001 - the verified session still works; only slower in batches
            log.warning("second ONNX session for batches failed (%s); using the interactive one", exc)
            return self._onnx

    @torch.inference_mode()
    def _run(self, images: torch.Tensor, mask: torch.Tensor, engine=None) -> dict[str, np.ndarray]:
        """The forward pass of `_inputs` output -> numpy outputs per location (probabilities, embedding,
        view_mask, neighbours). engine: an OnnxBackbone (default the interactive one, else PyTorch)."""
        engine = self._onnx if engine is None else engine
        if engine is None:  # PyTorch takes the channels-last layout the model was benchmarked with
            feats = self.model.embed_present(images.contiguous(memory_format=torch.channels_last), mask)
        else:  # as embed_present: present views' features scattered into (B, V, D), zeros where missing
            present = engine(images)
            feats = present.new_zeros(*mask.shape, present.shape[-1])
            feats[mask] = present
        out = self.model.forward_features(feats, mask)
        out["embedding"] = self.model.fuse(feats, mask)  # (B, F): the retrieval query
        out = {k: v.float().numpy() for k, v in out.items()}
        heads = [get_head(name) for name in in_registry_order(self.config.tasks)]
        for key in (key for head in heads for key in head.probabilities):  # logits -> probabilities
            if key in out:
                out[key] = _softmax(out[key].astype(np.float64))
        b = len(mask) // 2 if self.config.tta_flip else len(mask)  # locations
        if self.config.tta_flip:
            # Mirroring the photos does not mirror geography: average what the two panoramas say about the
            # place (cell/county probabilities, coords); per-view outputs (headings) come from the original
            # views only.
            own = {key for head in heads if head.per_view for key in head.outputs}
            out = {k: (v[:b] if k in own else (v[:b] + v[b:]) / 2) for k, v in out.items()}
        out["view_mask"] = mask[:b].numpy()
        self._retrieve(out)
        return out

    def _predictions(
        self, out: dict[str, np.ndarray], timings: dict, elapsed_ms: float, point_mode: str | None = None
    ) -> list[Prediction]:
        reading = self.readout.read(out, point_mode)
        lat, lon, county_p = reading.lat, reading.lon, reading.county_p
        predictions = []
        for b in range(len(lat)):
            order = np.argsort(-county_p[b], kind="stable")
            expected = float(reading.expected_km[b])
            cell_p, top, argmax_cell = None, [], None
            if "geocell" in out:
                cell_p = reading.cell_p[b]  # at the checkpoint's read-out temperature
                best = np.argsort(-cell_p, kind="stable")[:TOP_CELLS]
                top = [
                    {
                        "latitude": float(self.readout.cell_lat[c]),
                        "longitude": float(self.readout.cell_lon[c]),
                        "probability": float(cell_p[c]),
                    }
                    for c in best
                ]
                argmax_cell = (float(self.readout.cell_lat[best[0]]), float(self.readout.cell_lon[best[0]]))
            headings = {}
            if "heading" in out:
                sin, cos = out["heading"][b, :, 0], out["heading"][b, :, 1]
                degrees = np.degrees(np.arctan2(sin, cos)) % 360.0
                headings = {
                    str(VIEW_HEADINGS[v]): float(degrees[v]) for v in np.flatnonzero(out["view_mask"][b])
                }
            predictions.append(
                Prediction(
                    latitude=float(lat[b]),
                    longitude=float(lon[b]),
                    county=self._names[reading.county[b]],
                    county_code=self._codes[reading.county[b]],
                    county_probabilities={self._names[j]: float(county_p[b, j]) for j in order},
                    cell_probabilities=cell_p,
                    top_cells=top,
                    argmax_cell=argmax_cell,
                    headings=headings,
                    model=self.name,
                    elapsed_ms=elapsed_ms,
                    timings_ms=dict(timings),
                    neighbours=out["neighbours"][b] if "neighbours" in out else [],
                    expected_error_km=expected if np.isfinite(expected) else None,
                )
            )
        return predictions

    def predict_batch(
        self, items: list, batch_size: int = 16, point_mode: str | None = None
    ) -> list[Prediction]:
        """Predict many locations, one forward pass per `batch_size` locations.

        Args:
            items: each as `predict` takes (dict of headings -> image, or a list N, E, S, W).
            point_mode: override the checkpoint's point mode (geodemo.model.POINT_MODES).

        Returns:
            One Prediction per item; timings and elapsed_ms are the batch's divided by its size.
        """
        chunks = (items[start : start + batch_size] for start in range(0, len(items), batch_size))
        return [p for batch in self._stream(chunks, point_mode) for p in batch]

    def _stream(self, chunks, point_mode: str | None = None):
        """Yield the Predictions of each chunk (a list of items) in turn (see `_outputs`)."""
        for n, out, timings in self._outputs(chunks):
            if not n:
                yield []
                continue
            t2 = time.perf_counter()
            batch = self._predictions(out, timings, 0.0, point_mode)
            post = 1000 * (time.perf_counter() - t2) / n
            for p in batch:
                p.timings_ms["post"] = post
                p.elapsed_ms = sum(timings.values()) + post
            yield batch

    def _outputs(self, chunks):
        """Yield (locations, outputs, timings ms per location) of each chunk (a list of items) in turn.

        While one chunk runs its forward pass, the next one is decoded and normalised in a thread (PIL, cv2,
        numpy and ONNX Runtime release the GIL), so only ~2 chunks of pixels are ever in memory. With more
        than one chunk the backbone runs in `_batch_onnx`, and numpy's BLAS (the read-out and retrieval
        products) keeps to one thread until the last chunk is out (`_one_blas_thread`): its idle threads
        spin after each product, on the cores of the backbone and the decoder.
        """
        chunks = iter(chunks)
        current, upcoming = next(chunks, None), next(chunks, None)
        pool = ThreadPoolExecutor(max_workers=1) if upcoming is not None else None
        engine = self._onnx if upcoming is None else self._batch_onnx
        try:
            with _one_blas_thread() if pool else contextlib.nullcontext():
                prepared = self._prepare(current, pool) if current else None
                while current is not None:
                    pending = pool.submit(self._prepare, upcoming) if upcoming else None
                    if not current:
                        yield 0, None, {}
                    else:
                        images, mask, decode_ms, resize_ms = prepared
                        n, t1 = len(current), time.perf_counter()
                        out = self._run(images, mask, engine)
                        forward_ms = 1000 * (time.perf_counter() - t1)
                        ms = {"decode": decode_ms, "resize": resize_ms, "forward": forward_ms}
                        yield n, out, {k: v / n for k, v in ms.items()}
                    current, prepared = upcoming, pending.result() if pending else None
                    upcoming = next(chunks, None)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    def predict(self, views) -> Prediction:
        """Predict one location.

        Args:
            views: dict {0|90|180|270 (or "north"...): path | bytes | PIL image | array | None} or a list of
                up to 4 of those in order N, E, S, W. At least one view is required.
        """
        return self.predict_batch([views])[0]

    def iter_dataset(self, root, frame: pd.DataFrame | None = None, batch_size: int = 16, point_mode=None):
        """Yield ``(uuid, Prediction or None)`` for every location of a LUMEN-layout dataset, in order.

        The next chunk's files are found and decoded while this one runs forward (``_outputs``); None for a
        location without any view file. ``frame``: rows of `read_locations(root)` (default all).
        """
        frame = read_locations(root) if frame is None else frame
        uuids = frame["uuid"].astype(str).tolist()
        queued = deque()

        def chunks():
            for start in range(0, len(uuids), batch_size):
                chunk = uuids[start : start + batch_size]
                items = {u: {VIEW_HEADINGS[v]: p for v, p in view_paths(root, u).items()} for u in chunk}
                present = [u for u in chunk if items[u]]
                queued.append((chunk, present))
                yield [items[u] for u in present]

        for batch in self._stream(chunks(), point_mode):
            chunk, present = queued.popleft()
            predicted = dict(zip(present, batch))
            yield from ((u, predicted.get(u)) for u in chunk)

    def predict_dataset(
        self, root, frame: pd.DataFrame | None = None, batch_size: int = 16, progress=None, point_mode=None
    ) -> pd.DataFrame:
        """Predict every location of a LUMEN-layout dataset (``iter_dataset``) into a table.

        ``progress``: called (done, total). Returns a DataFrame with uuid, latitude, longitude (predicted,
        degrees), county (code of the county containing the point), expected_error_km (the model's own),
        plus each head's columns (argmax_latitude/longitude, heading_<h>); NaN where a location has no view.
        """
        frame, rows = read_locations(root) if frame is None else frame, []
        for uuid, p in self.iter_dataset(root, frame, batch_size, point_mode):
            rows.append(self._row(uuid, p))
            if progress is not None and (len(rows) % batch_size == 0 or len(rows) == len(frame)):
                progress(len(rows), len(frame))
        return pd.DataFrame(rows, columns=self._columns())

    def _columns(self) -> list[str]:
        columns = ["uuid", "latitude", "longitude", "county", "expected_error_km"]
        for name in in_registry_order(self.config.tasks):  # argmax_* (geocell), heading_<h> (heading)
            columns += get_head(name).columns
        return columns

    def _row(self, uuid: str, p: Prediction | None) -> dict:
        row = {c: math.nan for c in self._columns()}
        row["uuid"] = uuid
        if p is not None:
            row.update(latitude=p.latitude, longitude=p.longitude, county=p.county_code)
            row["expected_error_km"] = math.nan if p.expected_error_km is None else p.expected_error_km
            if p.argmax_cell is not None:
                row.update(argmax_latitude=p.argmax_cell[0], argmax_longitude=p.argmax_cell[1])
            row.update({f"heading_{h}": d for h, d in p.headings.items()})
        return row

    # ------------------------------------------------------------ retrieval

    @functools.cached_property
    def index(self):
        """The checkpoint's stored training locations (geodemo.retrieval.RetrievalIndex), or None."""
        from geodemo.retrieval import load_index

        return load_index(self.path)

    def _retrieve(self, out: dict[str, np.ndarray]) -> None:
        """Add each location's K most similar training locations to `out`; with KNN_WEIGHT > 0 also mix
        their kNN cell vote into the geocell probabilities, before the point is read out."""
        from geodemo import retrieval

        if self.index is None:
            return
        idx, sims = self.index.search(out["embedding"], retrieval.K)
        out["neighbours"] = self.index.records(idx, sims)
        if retrieval.KNN_WEIGHT > 0 and "geocell" in out and self.cells is not None:
            vote = retrieval.knn_vote(self.index, idx, sims, self.cells.assign, out["geocell"].shape[1])
            out["geocell"] = retrieval.mix(out["geocell"], vote, retrieval.KNN_WEIGHT)

    def embed_batch(self, items: list, batch_size: int = 16) -> np.ndarray:
        """Fused embeddings (N, F) float32 of locations (as `predict` takes them): what the index stores."""
        chunks = (items[start : start + batch_size] for start in range(0, len(items), batch_size))
        embedded = [np.asarray(out["embedding"], np.float32) for _, out, _ in self._outputs(chunks)]
        return np.concatenate(embedded) if embedded else np.zeros((0, 0), np.float32)

    # ------------------------------------------------------------ explanation

    def gradcam(self, views, alpha: float = 0.45) -> dict[int, np.ndarray]:
        """Grad-CAM overlays of one location (as `predict` takes it): view index -> (S, S, 3) uint8 overlay
        of the model's input crop, for the top predicted cell (see geodemo.gradcam.location_gradcam)."""
        crops = self._decode([views])[0][0]
        images, mask = self._tensors([crops])
        return location_gradcam(self.model, crops, images, mask, alpha)
