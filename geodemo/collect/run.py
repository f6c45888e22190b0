"""One collect run: sample the points, ask the source about each, keep what passes, summarise every skip.

`collect` is what ``python -m training collect`` (and so the app's Collect panel, through a job) calls;
`plan` is its ``--dry-run``: the requests a run would send and what the images would cost, sending nothing.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from geodemo import geo
from geodemo.collect.candidate import Skip
from geodemo.collect.http import BudgetSpent, CollectError, Fetcher, FetchFailed
from geodemo.collect.mapillary import Mapillary
from geodemo.collect.sampling import PointIndex, exclusion_index, sample_points
from geodemo.collect.store import CollectStore
from geodemo.collect.streetview import StreetView
from geodemo.collect.vocab import PRICE_PER_1000_USD, SAMPLINGS, SOURCES

BORDER_TOLERANCE_KM = 0.5  # a found location may lie this far outside the outline (coast, border roads)
DEFAULT_BYTES_PER_POINT = 8 * 1024 * 1024  # --max-bytes 0: this many bytes per sample point
MAPILLARY_MAX_RADIUS_M = 2000  # the Graph API refuses a bbox of 0.01 square degrees or more


@dataclass
class CollectConfig:
    """Everything a run needs except the secret. Distances are km unless the name says metres."""

    source: str
    out: str
    points: int = 100
    sampling: str = "prior"
    seed: int = 0
    min_spacing_km: float = 1.0
    exclude: list[str] = field(default_factory=list)
    exclude_km: float = 1.0
    radius_m: float = 50.0
    group_m: float = 5.0
    min_views: int = 1
    allow_third_party: bool = False
    rate_per_s: float = 5.0
    retries: int = 5
    backoff_s: float = 1.0
    max_requests: int = 0  # 0: 2 x the most a run can need
    max_bytes: int = 0  # 0: DEFAULT_BYTES_PER_POINT per point
    price_per_1000: float = PRICE_PER_1000_USD

    def check(self) -> None:
        """Refuse values that cannot work, with one sentence each (CollectError)."""
        if self.source not in SOURCES:
            raise CollectError(f"--source {self.source!r} is not one of {', '.join(SOURCES)}.")
        if self.sampling not in SAMPLINGS:
            raise CollectError(f"--sampling {self.sampling!r} is not one of {', '.join(SAMPLINGS)}.")
        limits = {"points": (1, 1_000_000), "min_spacing_km": (0, 100), "exclude_km": (0, 100),
                  "radius_m": (1, 5000), "group_m": (0.1, 100), "min_views": (1, 4),
                  "rate_per_s": (0.01, 100), "retries": (0, 20), "backoff_s": (0, 600),
                  "max_requests": (0, 10**9), "max_bytes": (0, 10**13), "price_per_1000": (0, 1000)}
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if not low <= value <= high:
                flag = "--" + name.replace("_", "-")
                raise CollectError(f"{flag} {value} is out of range; use {low} to {high}.")
        if self.source == "mapillary" and self.radius_m > MAPILLARY_MAX_RADIUS_M:
            raise CollectError(f"--radius-m {self.radius_m:g} is too large for Mapillary, whose search box "
                               f"must stay under 0.01 square degrees; use {MAPILLARY_MAX_RADIUS_M} or less.")

    def settings(self) -> dict:
        """What fixes the plan of a run (the resumable part): no budgets, rates or secrets."""
        keep = ("source", "points", "sampling", "seed", "min_spacing_km", "exclude_km", "radius_m", "group_m",
                "min_views", "allow_third_party")
        found = {k: v for k, v in asdict(self).items() if k in keep}
        return {**found, "exclude": sorted(str(Path(p).resolve()) for p in self.exclude)}

    def budgets(self) -> tuple[int, int]:
        per_point = 5  # one metadata request or search, four images
        requests = self.max_requests or 2 * per_point * self.points
        return requests, self.max_bytes or DEFAULT_BYTES_PER_POINT * self.points


def plan(cfg: CollectConfig) -> dict:
    """The most requests a run of `cfg` sends for the points not yet done, and the images' cost.

    Street View: one free metadata request per point, four billed images per point with imagery;
    Mapillary: one free search and at most four free image downloads per point. Sends nothing.
    """
    cfg.check()
    done = 0
    if (Path(cfg.out) / ".collect" / "settings.json").is_file():
        done = len(CollectStore(cfg.out, cfg.settings(), readonly=True).done_points())
    left = max(0, cfg.points - done)
    images = 4 * left
    price = cfg.price_per_1000 if cfg.source == "streetview" else 0.0
    return {
        "source": cfg.source, "points": cfg.points, "points_done": done, "points_left": left,
        "lookup_requests": left, "image_requests_at_most": images,
        "price_per_1000_images_usd": price,
        "estimated_cost_usd_at_most": round(images * price / 1000, 2),
        "note": ("Street View: metadata is free; images are billed to your key under Google's terms at the "
                 "price above (list price, 2025; the first 10,000 a month may be free): check "
                 "https://developers.google.com/maps/billing-and-pricing/pricing before a large run."
                 if cfg.source == "streetview" else
                 "Mapillary: free with a client token; images are CC-BY-SA 4.0 (credit the creators)."),
    }


def _source(cfg: CollectConfig, fetcher: Fetcher, secret: str, base: str | None):
    if cfg.source == "streetview":
        return StreetView(fetcher, secret, cfg.radius_m, cfg.allow_third_party, base=base)
    return Mapillary(fetcher, secret, cfg.radius_m, cfg.group_m, cfg.min_views, base=base)


def _emit(log, text: str) -> None:
    if log is not None:
        log(text)


def collect(cfg: CollectConfig, secret: str, *, base_url: str | None = None, progress=None, log=None,
            session=None, sleep=None) -> dict:
    """Collect up to `cfg.points` locations into `cfg.out` (LUMEN layout); resumes a killed run.

    Args:
        cfg: the run's settings.
        secret: the Street View key or Mapillary token; sent to that API only, never written or logged.
        base_url: a loopback test server instead of the real APIs (tests only; not on the CLI).
        progress: callable(summary so far) after every point. log: callable(line) for people.
        session, sleep: a requests.Session and a sleep function (tests).

    Returns:
        The summary: points, kept, skipped {reason: count}, requests, bytes, retries, http statuses,
        locations (in the folder), stopped (why the run ended early, or None).

    Raises:
        CollectError: a bad setting, a refused key, or the budget spent (the message says what to do).
    """
    cfg.check()
    if not secret:
        raise CollectError(f"no {'key' if cfg.source == 'streetview' else 'token'} for {cfg.source}; see "
                           "`python -m training collect --help`.")
    exclude = exclusion_index(cfg.exclude, cfg.exclude_km)
    lat, lon = sample_points(cfg.points, cfg.sampling, cfg.seed, cfg.min_spacing_km, exclude)
    max_requests, max_bytes = cfg.budgets()
    fetcher = Fetcher(cfg.rate_per_s, cfg.retries, cfg.backoff_s, max_requests, max_bytes, (secret,),
                      session=session, **({"sleep": sleep} if sleep else {}))
    source = _source(cfg, fetcher, secret, base_url)
    store = CollectStore(cfg.out, cfg.settings())
    done, keys = store.done_points(), store.keys()
    spacing = PointIndex(cfg.min_spacing_km)
    for kept_lat, kept_lon in store.positions():
        spacing.add(*map(float, geo.to_3765(kept_lat, kept_lon)))
    summary = {"source": cfg.source, "out": str(cfg.out), "points": cfg.points, "already_done": len(done),
               "kept": 0, "skipped": Counter(), "stopped": None}

    def report(i: int) -> dict:
        out = {**summary, "skipped": dict(summary["skipped"]), "requests": fetcher.requests,
               "bytes": fetcher.bytes, "retries": fetcher.retried, "locations": len(store.rows),
               "http": {str(k): v for k, v in sorted(fetcher.statuses.items(), key=str)}, "step": i}
        return out

    try:
        for i in range(cfg.points):
            if i in done:
                continue
            outcome = _one(i, float(lat[i]), float(lon[i]), source, store, keys, spacing, exclude)
            if outcome == "kept":
                summary["kept"] += 1
            else:
                summary["skipped"][outcome] += 1
            _emit(log, f"point {i + 1}/{cfg.points}: {outcome.replace('_', ' ')} "
                       f"({len(store.rows)} locations, {fetcher.requests} requests)")
            if progress is not None:
                progress(report(i + 1))
    except BudgetSpent as exc:
        summary["stopped"] = str(exc)
    finally:
        result = report(cfg.points)
        result["settings"] = cfg.settings()
        store.write_docs(result)
        store.close()
    return result


def _one(i: int, lat: float, lon: float, source, store: CollectStore, keys: set, spacing: PointIndex,
         exclude: PointIndex) -> str:
    """Look at sample point i: "kept", or the reason it was skipped (final reasons are remembered)."""
    try:
        try:
            found = source.locate(lat, lon)
            x, y = map(float, geo.to_3765(found.latitude, found.longitude))
            if found.key in keys:
                raise Skip("duplicate")
            if not geo.in_croatia(found.latitude, found.longitude, BORDER_TOLERANCE_KM):
                raise Skip("outside_croatia")
            if exclude.near(x, y):
                raise Skip("excluded")
            if spacing.near(x, y):
                raise Skip("too_close")
            views = source.fetch(found)
        except FetchFailed as exc:
            raise Skip("fetch_failed", str(exc)) from None
    except Skip as skip:
        store.skip(i, skip.reason)
        return skip.reason
    store.add(i, found.key, found.latitude, found.longitude, views, source.sources_row(found, views))
    keys.add(found.key)
    spacing.add(x, y)
    return "kept"


def print_progress(line: str) -> None:
    """Progress for people on stderr, in the form the app's job log keeps."""
    print(f"[geodemo] {line}", file=sys.stderr, flush=True)
