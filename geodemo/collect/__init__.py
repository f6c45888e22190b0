"""Collect new Croatian locations in the LUMEN layout from Street View or Mapillary (``python -m training
collect``). Torch-free: sampling (`sampling`), HTTP with retries and budgets (`http`), the two sources
(`streetview`, `mapillary`), the crash-safe folder (`store`) and the run itself (`run`); `vocab` holds the
names the command line offers. Names resolve lazily, so importing `geodemo.collect.vocab` stays cheap.
"""

from importlib import import_module

_EXPORTS = {"REAL_URLS": "http", "TEST_URL_ENV": "http", "CollectError": "http", "SOURCES": "vocab",
            "CollectConfig": "run", "collect": "run", "plan": "run"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'geodemo.collect' has no attribute {name!r}")
    return getattr(import_module(f"geodemo.collect.{_EXPORTS[name]}"), name)
