"""Retrieval: exact and faiss search agree, PCA above the size limit, the safetensors round trip, the kNN
vote, and neighbours from a real checkpoint's index of real sample locations."""

import shutil

import numpy as np
import pytest

from geodemo import retrieval
from geodemo.data import VIEW_HEADINGS, read_locations, view_paths
from geodemo.retrieval import INDEX_FILE, build_index, knn_vote, load_index, mix


def _synthetic(n: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    lat, lon = rng.uniform(42.5, 46.4, n), rng.uniform(13.6, 19.3, n)
    return x, lat, lon, [f"loc{i}" for i in range(n)]


def test_exact_search_finds_each_stored_location_first():
    x, lat, lon, uuids = _synthetic(300, 64)
    index = build_index(x, lat, lon, uuids, "fp")
    idx, sims = index.search(x[:20], k=5)
    assert idx.shape == sims.shape == (20, 5)
    assert (idx[:, 0] == np.arange(20)).all() and np.allclose(sims[:, 0], 1.0, atol=2e-3)
    assert (np.diff(sims, axis=1) <= 1e-6).all()  # most similar first
    expected = (x[:20] / np.linalg.norm(x[:20], axis=1, keepdims=True)) @ (
        x / np.linalg.norm(x, axis=1, keepdims=True)
    ).T
    assert np.allclose(sims, np.sort(expected, axis=1)[:, ::-1][:, :5], atol=3e-3)  # cosine, float16 store
    assert index.search(x[:1], k=1000)[0].shape == (1, 300)  # k capped at the index size


def test_faiss_search_agrees_with_exact(monkeypatch):
    x, lat, lon, uuids = _synthetic(2000, 32, seed=1)
    index = build_index(x, lat, lon, uuids)
    exact_idx, exact_sims = index.search(x[:50] + 0.3, k=5)
    monkeypatch.setattr(retrieval, "EXACT_BELOW", 100)  # force the library path
    faiss_idx, faiss_sims = index.search(x[:50] + 0.3, k=5)
    assert index._faiss is not None
    assert (faiss_idx == exact_idx).mean() > 0.98 and np.allclose(faiss_sims, exact_sims, atol=1e-4)


def test_pca_above_the_size_limit(monkeypatch, tmp_path):
    monkeypatch.setattr(retrieval, "PCA_ABOVE", 100)
    monkeypatch.setattr(retrieval, "PCA_DIM", 8)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 48))  # rank 8 in 48 dimensions
    _, lat, lon, uuids = _synthetic(400, 1)
    index = build_index(x, lat, lon, uuids)
    assert index.embeddings.shape == (400, 8) and index.pca_components.shape == (48, 8)
    index.save(tmp_path)
    loaded = load_index(tmp_path)
    assert loaded.pca_components.shape == (48, 8)
    idx, sims = loaded.search(x[:10], k=1)
    assert (idx[:, 0] == np.arange(10)).all() and (sims[:, 0] > 0.99).all()


def test_round_trip_and_broken_files(tmp_path):
    x, lat, lon, uuids = _synthetic(50, 16)
    build_index(x, lat, lon, uuids, "abc123").save(tmp_path)
    loaded = load_index(tmp_path)
    assert loaded.uuids == uuids and loaded.fingerprint == "abc123"
    assert loaded.embeddings.dtype == np.float16 and np.array_equal(loaded.latitude, lat)
    assert [n["uuid"] for n in loaded.neighbours(x[3:4])[0]][0] == "loc3"
    assert set(loaded.neighbours(x[:1])[0][0]) == {"latitude", "longitude", "similarity", "uuid"}
    (tmp_path / INDEX_FILE).write_bytes(b"not a safetensors file")
    assert load_index(tmp_path) is None
    assert load_index(tmp_path / "missing") is None
    with pytest.raises(ValueError, match="one row per location"):
        build_index(x, lat[:3], lon, uuids)


def test_knn_vote_weights_cells_by_similarity():
    x, lat, lon, uuids = _synthetic(4, 4)
    index = build_index(x, lat, lon, uuids)
    idx = np.array([[0, 1, 2]])
    sims = np.array([[0.9, 0.5, 0.5]])
    vote = knn_vote(index, idx, sims, lambda la, lo: np.array([3, 1, 1]), n_cells=5, temperature=0.1)
    assert vote.shape == (1, 5) and vote.sum() == pytest.approx(1.0)
    assert vote[0, 3] > vote[0, 1] > 0 and vote[0, [0, 2, 4]].sum() == 0
    p = np.full((1, 5), 0.2)
    assert mix(p, vote, 0.0) == pytest.approx(p) and mix(p, vote, 1.0) == pytest.approx(vote)


@pytest.fixture(scope="module")
def indexed_checkpoint(tmp_path_factory, sample_dir):
    """The bundled checkpoint with an index of the first 12 sample locations."""
    from geodemo.checkpoint import DEFAULT_CHECKPOINT
    from training.index import index_checkpoint

    ckpt = tmp_path_factory.mktemp("ckpt") / "indexed"
    shutil.copytree(DEFAULT_CHECKPOINT, ckpt)
    (ckpt / INDEX_FILE).unlink(missing_ok=True)
    uuids = read_locations(sample_dir).uuid.iloc[:12].tolist()
    index_checkpoint(ckpt, sample_dir, uuids, fingerprint="test")
    return ckpt, uuids


def _views(sample_dir, uid):
    return {VIEW_HEADINGS[v]: p for v, p in view_paths(sample_dir, uid).items()}


def test_predictor_returns_the_nearest_training_locations(indexed_checkpoint, sample_dir):
    from geodemo.predict import Predictor

    ckpt, uuids = indexed_checkpoint
    index = load_index(ckpt)
    assert index.uuids == uuids and index.fingerprint == "test" and len(index) == 12
    predictor = Predictor.load(ckpt)
    seen = predictor.predict(_views(sample_dir, uuids[4])).to_json()["neighbours"]
    assert len(seen) == retrieval.K and seen[0]["uuid"] == uuids[4] and seen[0]["similarity"] > 0.99
    truth = read_locations(sample_dir).set_index("uuid")
    assert (seen[0]["latitude"], seen[0]["longitude"]) == pytest.approx(
        (truth.latitude[uuids[4]], truth.longitude[uuids[4]])
    )
    unseen = read_locations(sample_dir).uuid.iloc[50]
    others = predictor.predict(_views(sample_dir, unseen)).neighbours
    assert unseen not in {n["uuid"] for n in others} and all(n["similarity"] < 0.999 for n in others)


def test_a_checkpoint_without_an_index_has_no_neighbours(indexed_checkpoint, sample_dir, tmp_path):
    from geodemo.predict import Predictor

    ckpt, uuids = indexed_checkpoint
    bare = tmp_path / "bare"
    shutil.copytree(ckpt, bare)
    (bare / INDEX_FILE).unlink()
    assert Predictor.load(bare).predict(_views(sample_dir, uuids[0])).to_json()["neighbours"] == []


def test_bundled_checkpoint_has_an_index_of_its_training_data_and_fits_25_mb(sample_dir):
    from geodemo.checkpoint import DEFAULT_CHECKPOINT

    index = load_index(DEFAULT_CHECKPOINT)
    assert index is not None and set(index.uuids) == set(read_locations(sample_dir).uuid.astype(str))
    assert sum(f.stat().st_size for f in DEFAULT_CHECKPOINT.iterdir()) < 25 * 2**20


def test_a_frozen_cached_run_indexes_from_its_features_not_the_images(sample_dir, tmp_path, monkeypatch):
    """The index of a run that trained on cached features only is fused from those features (no second pass
    over the images) and matches what embedding the images with the finished checkpoint gives."""
    from test_training_cli import tiny_copy

    from training import index as indexing
    from training.config import TrainConfig
    from training.fit import train

    data = tiny_copy(sample_dir, tmp_path / "data", n=6)
    cfg = TrainConfig(tasks=["geocell"], backbone="test_efficientnet", weights="none", image_size=64,
                      max_epochs=1, batch_size=2, num_workers=0, val_fraction=0.0)

    def no_second_pass(*args, **kwargs):
        raise AssertionError("the images were embedded again")

    monkeypatch.setattr(indexing, "index_checkpoint", no_second_pass)
    out = train(data, tmp_path / "ckpt", cfg, enable_progress_bar=False, cache_dir=tmp_path / "cache")
    fused = load_index(out)
    monkeypatch.undo()
    again = tmp_path / "again"
    shutil.copytree(out, again)
    indexing.index_checkpoint(again, data, fused.uuids)
    embedded = load_index(again)
    assert fused.uuids == embedded.uuids == read_locations(data)["uuid"].tolist()
    cosine = (fused.embeddings.astype(np.float32) * embedded.embeddings.astype(np.float32)).sum(1)
    assert cosine.min() > 0.99
