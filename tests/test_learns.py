"""Training learns where the signal is known: image colour encodes the region of a synthetic dataset."""

import numpy as np
import pandas as pd
from PIL import Image

from geodemo import geo
from training.config import TrainConfig
from training.evaluate import evaluate
from training.fit import train

REGIONS = [(45.81, 15.98), (43.51, 16.44), (45.55, 18.69), (44.87, 13.85)]  # Zagreb, Split, Osijek, Pula
COLOURS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40)]


def synthetic_dataset(root, per_region=10, size=32, seed=0):
    """40 locations in 4 regions; every view of a region is its solid colour plus noise (JPEG, 32 px)."""
    rng = np.random.default_rng(seed)
    rows = []
    for r, ((lat, lon), colour) in enumerate(zip(REGIONS, COLOURS)):
        for i in range(per_region):
            uuid = f"r{r}-{i:02d}"
            rows.append((uuid, lat + rng.normal(0, 0.04), lon + rng.normal(0, 0.04)))
            (root / "images" / uuid).mkdir(parents=True)
            for h in (0, 90, 180, 270):
                rgb = np.clip(np.array(colour) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(rgb).save(root / "images" / uuid / f"{h}.jpg", quality=90)
    pd.DataFrame(rows, columns=["uuid", "latitude", "longitude"]).to_csv(root / "data.csv", index=False)
    return root


def test_training_on_cache_beats_mean_coordinate_baseline(tmp_path):
    data = synthetic_dataset(tmp_path / "synthetic")
    cfg = TrainConfig(
        tasks=["geocell"],
        backbone="test_efficientnet",
        weights="none",
        image_size=64,
        max_epochs=30,
        batch_size=8,
        lr=0.1,
        val_fraction=0.25,
        patience=30,
        dropout=0.0,
    )
    ckpt = train(data, tmp_path / "ckpt", cfg, cache_dir=tmp_path / "cache", enable_progress_bar=False)
    from geodemo.data import read_locations
    from geodemo.dataset import location_split

    frame = read_locations(data)
    split = location_split(frame["uuid"], val_fraction=0.25, seed=0)
    train_rows = frame[frame["uuid"].isin(split["train"])]
    val_rows = frame[frame["uuid"].isin(split["val"])]
    mean_lat, mean_lon = train_rows["latitude"].mean(), train_rows["longitude"].mean()
    baseline = geo.haversine_km(val_rows["latitude"], val_rows["longitude"], mean_lat, mean_lon).mean()
    metrics, _ = evaluate(ckpt, data, uuids=split["val"])
    assert metrics["mean_km"] < 0.5 * baseline, (metrics["mean_km"], baseline)
