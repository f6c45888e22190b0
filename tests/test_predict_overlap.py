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
    decode, forward = predictor._decode, predictor._forward

    def slow_forward(crops):
        events.append(("forward start", time.perf_counter()))
        time.sleep(0.3)
        out = forward(crops)
        events.append(("forward end", time.perf_counter()))
        return out

    def traced_decode(chunk):
        start, out = time.perf_counter(), decode(chunk)
        events.append(
            ("decode", start, time.perf_counter(), threading.current_thread() is threading.main_thread())
        )
        return out

    predictor._forward, predictor._decode = slow_forward, traced_decode
    try:
        table = predictor.predict_dataset(sample_dir, frame=frame, batch_size=3)
    finally:
        del predictor._forward, predictor._decode
    starts = [e[1] for e in events if e[0] == "forward start"]
    ends = [e[1] for e in events if e[0] == "forward end"]
    background = [e[1:3] for e in events if e[0] == "decode" and not e[3]]
    assert len(starts) == 3 and len(background) == 2  # chunks 2 and 3 decoded off the main thread ...
    # ... at the same time as the previous chunk's forward pass
    assert all(d0 < e and d1 > s for (d0, d1), s, e in zip(background, starts, ends))
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
