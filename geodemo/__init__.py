"""geodemo: where in Croatia was this street-level photo taken?

The public API is re-exported here. Names resolve lazily (PEP 562) so that light modules such as
``geodemo.geo`` or ``geodemo.data`` do not pay for importing torch and timm.

    >>> from geodemo import Predictor
    >>> Predictor.load().predict({0: "north.jpg", 90: "east.jpg"}).to_json()
"""

from importlib import import_module

_EXPORTS = {
    # geography and cells
    "haversine_km": "geo", "to_3765": "geo", "from_3765": "geo", "in_croatia": "geo",
    "county_index": "geo", "COUNTY_CODES": "geo", "XYStats": "geo",
    "CellSet": "cells", "build_cells": "cells",
    # data in and out
    "load_rgb": "images", "ImageError": "images",
    "read_locations": "data", "DatasetError": "data", "validate_dataset": "validate",
    "LocationDataset": "dataset",
    "LabelStore": "labels", "LabelError": "labels",
    # models and checkpoints
    "BACKBONES": "backbones", "create_backbone": "backbones",
    "ModelConfig": "model", "GeoModel": "model", "build_model": "model",
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "CheckpointError": "checkpoint",
    "DEFAULT_CHECKPOINT": "checkpoint",
    "Predictor": "predict", "Prediction": "prediction", "Readout": "readout",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'geodemo' has no attribute {name!r}")
    return getattr(import_module(f"geodemo.{_EXPORTS[name]}"), name)
