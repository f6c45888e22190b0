"""Batch prediction decodes the next chunk while the current one runs its forward pass."""

import threading
import time

import numpy as np

from geodemo.data import read_locations
from geodemo.predict import Predictor


def test_predict_dataset_overlaps_decoding_with_the_forward_pass_and_matches_one_by_one(sample_dir):
    predictor = Predictor.load()
    frame = read_locations(sample_dir).head(7)
    events = []
    decode, forward = predictor._decode, predictor._run

    def slow_forward(*args):
        events.append(("forward start", time.perf_counter()))
        time.sleep(0.3)
        out = forward(*args)
        events.append(("forward end", time.perf_counter()))
        return out

    def traced_decode(chunk):
        start, out = time.perf_counter(), decode(chunk)
        events.append(
            ("decode", start, time.perf_counter(), threading.current_thread() is threading.main_thread())
        )
        return out

    predictor._run, predictor._decode = slow_forward, traced_decode
    try:
        table = predictor.predict_dataset(sample_dir, frame=frame, batch_size=3)
    finally:
        del predictor._run, predictor._decode
    starts = [e[1] for e in events if e[0] == "forward start"]
    ends = [e[1] for e in events if e[0] == "forward end"]
    background = [e[1:3] for e in events if e[0] == "decode" and not e[3]]
    assert len(starts) == 3 and len(background) == 3
    # half of the first chunk decoded in the thread (the main thread does the rest), before any forward pass;
    # chunks 2 and 3 decoded off the main thread at the same time as the previous chunk's forward pass
    assert background[0][1] <= starts[0]
    assert all(d0 < e and d1 > s for (d0, d1), s, e in zip(background[1:], starts, ends))
    assert list(table["uuid"]) == list(frame["uuid"])
    for i in (0, 4, 6):
        alone = predictor.predict(
            {h: sample_dir / "images" / frame["uuid"][i] / f"{h}.jpg" for h in (0, 90, 180, 270)}
        )
        np.testing.assert_allclose(
            table.loc[i, ["latitude", "longitude"]].to_numpy(float),
            [alone.latitude, alone.longitude],
            atol=1e-4,
        )



def test_batch_session_and_channels_first_input_change_no_number(sample_dir):
    """The batch path's second ONNX session (idle threads sleep) and the channels-first normalisation give
    exactly what the interactive path and the plain stack-then-normalise formula give."""
    predictor = Predictor.load()
    frame = read_locations(sample_dir).head(6)
    items = [{h: sample_dir / "images" / u / f"{h}.jpg" for h in (0, 90, 180, 270)} for u in frame["uuid"]]
    items[4] = {90: items[4][90], 180: items[4][180]}  # a location with two views
    crops, _, _ = predictor._decode(items[3:5])
    mean, std = np.asarray(predictor.config.mean, np.float32), np.asarray(predictor.config.std, np.float32)
    mirror_of = [0, 3, 2, 1]  # a mirrored panorama's view v is the original's view mirror_of[v], flipped
    for mirror in (False, True):
        images, mask = predictor._tensors(crops, mirror=mirror)
        if mirror:
            views = [c[mirror_of[v]][:, ::-1] for c in crops for v in sorted(mirror_of[w] for w in c)]
        else:
            views = [c[v] for c in crops for v in sorted(c)]
        reference = np.stack(views).astype(np.float32)
        reference *= 1.0 / (255.0 * std)
        reference += -mean / std
        assert images.is_contiguous() and int(mask.sum()) == len(views) == 6
        np.testing.assert_array_equal(images.numpy(), reference.transpose(0, 3, 1, 2))
    batched = predictor.predict_batch(items, batch_size=3)  # 2 chunks: batch session, decode in a thread
    if predictor.engine == "onnx":
        assert predictor._batch_onnx is not predictor._onnx
    alone = predictor.predict_batch(items[:3], 3) + predictor.predict_batch(items[3:], 3)  # interactive
    for a, b in zip(batched, alone, strict=True):
        assert (a.latitude, a.longitude) == (b.latitude, b.longitude)
        assert a.expected_error_km == b.expected_error_km
        np.testing.assert_array_equal(a.cell_probabilities, b.cell_probabilities)
        assert a.headings == b.headings and a.county_probabilities == b.county_probabilities


def test_blas_keeps_to_one_thread_while_a_batch_runs_and_is_restored(sample_dir):
    from threadpoolctl import threadpool_info

    from geodemo.predict import _one_blas_thread

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    predictor = Predictor.load()
    before = blas_threads()
    uuids = read_locations(sample_dir)["uuid"].head(4)
    items = [{0: sample_dir / "images" / u / "0.jpg"} for u in uuids]
    during = [blas_threads() for _ in predictor._stream([items[:2], items[2:]])]
    assert len(during) == 2 and all(t == [1] * len(before) for t in during) and blas_threads() == before
    with _one_blas_thread():  # overlapping batches: the first to end must not restore under the second
        inner = _one_blas_thread()
        inner.__enter__()
    assert blas_threads() == [1] * len(before)
    inner.__exit__(None, None, None)
    assert blas_threads() == before
