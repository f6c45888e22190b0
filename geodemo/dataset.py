"""The multi-view torch Dataset of a LUMEN-layout folder, its transforms and the location splits."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import torch
from albumentations.pytorch import ToTensorV2

from geodemo import geo
from geodemo.data import VIEW_HEADINGS, DatasetError, view_headings, view_paths
from geodemo.images import center_square, load_rgb


def location_split(uuids, val_fraction: float = 0.2, test_fraction: float = 0.0,
                   seed: int = 0) -> dict[str, list[str]]:
    """Split location ids into train/val/test, deterministic by `seed` (a permutation of the sorted ids).

    Returns:
        {"train": [...], "val": [...], "test": [...]}, each list sorted.
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction {val_fraction} + test_fraction {test_fraction} must be in [0, 1).")
    ids = np.array(sorted(set(map(str, uuids))), dtype=object)
    order = ids[np.random.default_rng(seed).permutation(len(ids))]

    def size(fraction: float) -> int:
        return max(1, round(len(ids) * fraction)) if fraction > 0 and len(ids) > 2 else 0

    n_test, n_val = size(test_fraction), size(val_fraction)
    return {"train": sorted(order[n_test + n_val:]), "val": sorted(order[n_test:n_test + n_val]),
            "test": sorted(order[:n_test])}


def kfold_splits(uuids, k: int = 5, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """K location folds: [(train_ids, val_ids), ...]; every id is in exactly one val fold."""
    ids = np.array(sorted(set(map(str, uuids))), dtype=object)
    if not 2 <= k <= len(ids):
        raise ValueError(f"k={k} folds need 2 <= k <= {len(ids)} (the number of locations).")
    folds = np.array_split(ids[np.random.default_rng(seed).permutation(len(ids))], k)
    return [(sorted(np.concatenate(folds[:i] + folds[i + 1:])), sorted(fold)) for i, fold in enumerate(folds)]


# ----------------------------------------------------------------------------------------- transforms
def _center_square(image: np.ndarray, size: int, **_) -> np.ndarray:
    return center_square(image, size)  # module level: the transform pickles into DataLoader workers


def build_transform(image_size: int, mean, std, train: bool) -> A.Compose:
    """Albumentations pipeline: (H, W, 3) uint8 RGB -> (3, image_size, image_size) float tensor.

    No horizontal flip here: `LocationDataset` mirrors whole panoramas (views swapped too).
    """
    if train:
        geometry = [A.RandomResizedCrop(size=(image_size, image_size), scale=(0.6, 1.0), ratio=(0.9, 1.1),
                                        area_for_downscale="image"),
                    A.ColorJitter(0.2, 0.2, 0.2, 0.02, p=0.5)]
    else:
        geometry = [A.Lambda(image=partial(_center_square, size=image_size), name="center_square")]
    return A.Compose([*geometry, A.Normalize(mean=mean, std=std, max_pixel_value=255.0), ToTensorV2()])


# ----------------------------------------------------------------------------------------- dataset
def _county_ids(frame: pd.DataFrame, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """County id per row from the `county` column (ISO code or name_hr), else from the coordinates."""
    ids = geo.county_index(lat, lon).astype(np.int64)
    if "county" in frame:
        lookup = {c.lower(): i for i, c in enumerate(geo.COUNTY_CODES)}
        lookup.update({n.lower(): i for i, n in enumerate(geo.county_names())})
        given = np.array([lookup.get(str(c).strip().lower(), -1) for c in frame["county"]], dtype=np.int64)
        ids = np.where(given >= 0, given, ids)
    return ids


class LocationDataset(torch.utils.data.Dataset):
    """One item per location: its (up to) four views plus every target.

    Args:
        root: dataset folder; frame: rows of `read_locations(root)` to use.
        image_size: output side in pixels; mean/std: normalisation per channel (0..1 scale).
        train: random crops and colour jitter; hflip: with train, mirror the panorama with p=0.5
            (every view flipped and views 90 <-> 270 swapped; not for the heading task).
        cells: gives `cell` targets; xy_stats: gives standardised EPSG:3765 `xy` targets.
        tabular: numeric columns of `frame` returned as `tabular` (NaN -> 0).
    """

    def __init__(self, root, frame: pd.DataFrame, image_size: int, mean, std, train: bool = False,
                 hflip: bool = False, cells=None, xy_stats=None, tabular: list[str] = ()):
        self.root = Path(root)
        self.frame = frame.reset_index(drop=True)
        self.image_size, self.train, self.hflip = image_size, train, hflip and train
        self.transform = build_transform(image_size, mean, std, train)
        self.uuids = self.frame["uuid"].astype(str).tolist()
        self.lat = self.frame["latitude"].to_numpy(np.float64)
        self.lon = self.frame["longitude"].to_numpy(np.float64)
        n = len(self.frame)
        self.heading = view_headings(self.frame)  # (N, V) degrees
        self.county = _county_ids(self.frame, self.lat, self.lon)
        self.cell = cells.assign(self.lat, self.lon).astype(np.int64) if cells is not None else np.full(n, -1)
        self.xy = (xy_stats.standardise(self.lat, self.lon).astype(np.float32) if xy_stats is not None
                   else np.zeros((n, 2), np.float32))
        missing = [c for c in tabular if c not in self.frame]
        if missing:
            raise DatasetError(f"tabular column(s) {', '.join(missing)} are not in data.csv; "
                               "add them or drop them.")
        columns = [pd.to_numeric(self.frame[c], errors="coerce").to_numpy(np.float64) for c in tabular]
        self.tabular = np.nan_to_num(np.stack(columns, 1) if columns else np.zeros((n, 0))).astype(np.float32)

    def __len__(self) -> int:
        return len(self.uuids)

    def __getitem__(self, i: int) -> dict:
        """views (V, 3, H, W) float32, view_mask (V,) bool, cell/county int64 (), xy (2,), heading (V,)
        degrees (NaN where missing), tabular (T,), lat/lon float64 () degrees, uuid str."""
        paths = view_paths(self.root, self.uuids[i])
        return self.assemble(i, {v: load_rgb(path, min_side=self.image_size) for v, path in paths.items()})

    def assemble(self, i: int, rgbs: dict) -> dict:
        """The item of location i from its decoded views {view index: (H, W, 3) uint8 RGB}: transforms,
        panorama mirror and targets (shared by the image folders and litdata chunks, training.streaming)."""
        size, n_views = self.image_size, len(VIEW_HEADINGS)
        views = torch.zeros(n_views, 3, size, size)
        mask = torch.zeros(n_views, dtype=torch.bool)
        mirror = self.hflip and bool(torch.rand(()) < 0.5)
        for v, rgb in rgbs.items():
            if mirror:
                rgb = np.ascontiguousarray(rgb[:, ::-1])
                v = (n_views - v) % n_views  # east <-> west: 90 <-> 270, 0 and 180 stay
            views[v] = self.transform(image=rgb)["image"]
            mask[v] = True
        return {"views": views, **self.targets(i, mask)}

    def targets(self, i: int, view_mask: torch.Tensor) -> dict:
        """Every target of location i for the views present in ``view_mask`` (V,) bool; also the
        embedding cache's dataset serves these beside cached features. Each registered head makes its own
        (``Head.targets``: cell, xy, county, heading) from this dataset's arrays."""
        from geodemo.heads import all_targets  # the head registry owns the per-task targets

        return {
            "view_mask": view_mask,
            **all_targets(self, i, view_mask),
            "tabular": torch.from_numpy(self.tabular[i]),
            "lat": torch.tensor(self.lat[i], dtype=torch.float64),
            "lon": torch.tensor(self.lon[i], dtype=torch.float64),
            "uuid": self.uuids[i],
        }
