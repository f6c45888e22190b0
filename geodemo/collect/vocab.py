"""The collector's vocabulary (sources, samplings, skip reasons, the assumed price): light to import, so
`python -m training --help` and argument errors stay fast."""

SOURCES = ("streetview", "mapillary")
SAMPLINGS = ("prior", "uniform", "county")
PRICE_PER_1000_USD = 7.00  # Static Street View image requests, Google's list price (0-100k a month), 2025
SKIP_REASONS = {
    "no_imagery": "no imagery within --radius-m",
    "outside_croatia": "the imagery found lies outside Croatia",
    "excluded": "the imagery found lies within --exclude-km of an --exclude dataset",
    "too_close": "the imagery found lies within --min-spacing-km of a kept location",
    "duplicate": "the imagery found is already a kept location",
    "third_party": "a user-contributed panorama, not Google's own (see --allow-third-party)",
    "too_few_views": "fewer views than --min-views",
    "bad_image": "an image failed validation (geodemo.images.load_rgb)",
    "fetch_failed": "a request failed after every retry (tried again on a re-run)",
}
TRANSIENT = frozenset({"fetch_failed"})


def describe_skips() -> str:
    """One line per skip reason, for --help and the README."""
    return "; ".join(f"{k}: {v}" + (" (not remembered)" if k in TRANSIENT else "")
                     for k, v in SKIP_REASONS.items())
