"""Places that look like this: the training locations' embeddings stored with a checkpoint, the k most
similar of them for a query (cosine), and their kNN vote over the geocells.

The index is `retrieval.safetensors` beside `model.safetensors` in a checkpoint directory (no pickle):
tensors `embeddings` (N, d) float16 (L2-normalised), `latitude`/`longitude` (N,) float64 degrees and, above
PCA_ABOVE locations, `pca_mean` (F,) / `pca_components` (F, d) float32 that reduce a fused embedding (F) to d
dimensions; metadata `uuids` (JSON list) and `fingerprint` (the training data's). A checkpoint without the
file simply has no neighbours. Search is exact numpy below EXACT_BELOW locations, faiss above.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INDEX_FILE = "retrieval.safetensors"
K = 5  # neighbours returned with a prediction
PCA_ABOVE = 5000  # more stored locations than this: reduce the embedding with a stored PCA
PCA_DIM = 128  # dimensions kept by that PCA
EXACT_BELOW = 50_000  # exact numpy search below this many locations (a few ms); faiss above
KNN_TEMPERATURE = 0.05  # softmax temperature over cosine similarities for the kNN vote
# Weight of the kNN vote mixed into the geocell probabilities before the point is chosen. 0 = off: nested
# CV on the sample did not show a win beyond 2 SE (benchmarks/research/knn_mix.py, BENCHMARKS.md).
KNN_WEIGHT = 0.0


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


@dataclass
class RetrievalIndex:
    """Stored training locations: unit embeddings (N, d), coordinates (degrees), uuids, data fingerprint."""

    embeddings: np.ndarray  # (N, d) float16, unit length
    latitude: np.ndarray  # (N,) degrees
    longitude: np.ndarray  # (N,) degrees
    uuids: list[str]
    fingerprint: str = ""
    pca_mean: np.ndarray | None = None  # (F,) float32
    pca_components: np.ndarray | None = None  # (F, d) float32
    _faiss: object = None
    _f32: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.uuids)

    def project(self, fused: np.ndarray) -> np.ndarray:
        """Fused embeddings (B, F) -> unit search vectors (B, d) float32."""
        x = np.asarray(fused, np.float32)
        if self.pca_components is not None:
            x = (x - self.pca_mean) @ self.pca_components
        return _normalise(x)

    def search(self, fused: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
        """The k most similar stored locations of each query.

        Args:
            fused: (B, F) fused embeddings (GeoModel.fuse), as the index was built from.

        Returns:
            (indices (B, k) int64, cosine similarities (B, k) float32), most similar first.
        """
        q = self.project(fused)
        k = min(k, len(self))
        if len(self) >= EXACT_BELOW:
            return self._faiss_search(q, k)
        if self._f32 is None:  # converted once: float16 matmuls are slow on CPUs
            self._f32 = np.ascontiguousarray(self.embeddings, np.float32)
        sims = q @ self._f32.T  # (B, N)
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        part = np.take_along_axis(sims, idx, 1)
        order = np.argsort(-part, axis=1, kind="stable")
        return np.take_along_axis(idx, order, 1), np.take_along_axis(part, order, 1).clip(-1.0, 1.0)

    def _faiss_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        if self._faiss is None:  # inner product on unit vectors = cosine; exact (flat) but BLAS-batched
            index = faiss.IndexFlatIP(self.embeddings.shape[1])
            index.add(np.ascontiguousarray(self.embeddings, np.float32))  # float32 copy, like _f32
            self._faiss = index
        sims, idx = self._faiss.search(np.ascontiguousarray(q, np.float32), k)
        return idx.astype(np.int64), sims.clip(-1.0, 1.0)

    def records(self, idx: np.ndarray, sims: np.ndarray) -> list[list[dict]]:
        """`search` results as /predict neighbours: per query [{latitude, longitude, similarity, uuid}]."""
        return [
            [
                {
                    "latitude": float(self.latitude[i]),
                    "longitude": float(self.longitude[i]),
                    "similarity": float(s),
                    "uuid": self.uuids[i],
                }
                for i, s in zip(row_idx, row_sims)
            ]
            for row_idx, row_sims in zip(idx, sims)
        ]

    def neighbours(self, fused: np.ndarray, k: int = K) -> list[list[dict]]:
        """Per query, the k most similar stored locations as records (see `records`)."""
        return self.records(*self.search(fused, k))

    def save(self, checkpoint_dir) -> Path:
        """Write `INDEX_FILE` into a checkpoint directory atomically."""
        from safetensors.numpy import save_file

        tensors = {
            "embeddings": np.ascontiguousarray(self.embeddings, np.float16),
            "latitude": np.asarray(self.latitude, np.float64),
            "longitude": np.asarray(self.longitude, np.float64),
        }
        if self.pca_components is not None:
            tensors["pca_mean"] = np.asarray(self.pca_mean, np.float32)
            tensors["pca_components"] = np.ascontiguousarray(self.pca_components, np.float32)
        out = Path(checkpoint_dir) / INDEX_FILE
        fd, tmp = tempfile.mkstemp(prefix=f".{INDEX_FILE}.", dir=out.parent)
        os.close(fd)
        try:
            meta = {"uuids": json.dumps(self.uuids), "fingerprint": self.fingerprint}
            save_file(tensors, tmp, metadata=meta)
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return out


def build_index(fused: np.ndarray, latitude, longitude, uuids, fingerprint: str = "") -> RetrievalIndex:
    """An index of N training locations from their fused embeddings (N, F), degrees and uuids.

    Above PCA_ABOVE locations the embeddings are reduced to PCA_DIM dimensions (PCA fitted on them).
    """
    x = np.asarray(fused, np.float32)
    if len(x) != len(uuids) or len(x) != len(latitude) or len(x) != len(longitude):
        raise ValueError("embeddings, coordinates and uuids must have one row per location")
    if len(x) == 0:
        raise ValueError("cannot build a retrieval index of zero locations")
    mean = components = None
    if len(x) > PCA_ABOVE and x.shape[1] > PCA_DIM:
        mean = x.mean(0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        components = np.ascontiguousarray(vt[:PCA_DIM].T)  # (F, d)
        x = (x - mean) @ components
    return RetrievalIndex(
        embeddings=_normalise(x).astype(np.float16),
        latitude=np.asarray(latitude, np.float64),
        longitude=np.asarray(longitude, np.float64),
        uuids=[str(u) for u in uuids],
        fingerprint=fingerprint,
        pca_mean=mean,
        pca_components=components,
    )


def load_index(checkpoint_dir) -> RetrievalIndex | None:
    """The checkpoint's index, or None when it has none (or an unreadable one: retrieval is optional)."""
    from safetensors import safe_open

    path = Path(checkpoint_dir) / INDEX_FILE if checkpoint_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        uuids = json.loads(meta.get("uuids", "[]"))
        emb = tensors["embeddings"]
        sizes = {len(uuids), len(emb), len(tensors["latitude"]), len(tensors["longitude"])}
        if emb.ndim != 2 or len(sizes) != 1:
            return None
    except Exception:  # noqa: BLE001 - a broken optional index must not stop predictions
        return None
    return RetrievalIndex(
        embeddings=emb,
        latitude=tensors["latitude"],
        longitude=tensors["longitude"],
        uuids=uuids,
        fingerprint=meta.get("fingerprint", ""),
        pca_mean=tensors.get("pca_mean"),
        pca_components=tensors.get("pca_components"),
    )


def knn_vote(
    index: RetrievalIndex, idx: np.ndarray, sims: np.ndarray, cell_of, n_cells: int,
    temperature: float = KNN_TEMPERATURE,
) -> np.ndarray:
    """The neighbours' cells as a probability vote: softmax(similarity / temperature) over the k neighbours.

    Args:
        idx, sims: (B, k) from `search`; cell_of: callable(lat, lon) -> cell ids (e.g. CellSet.assign).

    Returns:
        (B, n_cells) float64 rows summing to 1.
    """
    cells = np.asarray(cell_of(index.latitude[idx.ravel()], index.longitude[idx.ravel()])).reshape(idx.shape)
    w = np.exp((sims - sims.max(1, keepdims=True)) / temperature)
    w /= w.sum(1, keepdims=True)
    vote = np.zeros((len(idx), n_cells))
    for b in range(len(idx)):
        np.add.at(vote[b], cells[b], w[b])
    return vote


def mix(cell_p: np.ndarray, vote: np.ndarray, weight: float) -> np.ndarray:
    """(1 - weight) * the cell head's probabilities + weight * the kNN vote, both (B, C)."""
    return (1.0 - weight) * cell_p + weight * vote
