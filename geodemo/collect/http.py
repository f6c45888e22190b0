"""HTTP for the collectors: one session with a rate limit, retries with backoff, budgets, no leaked secrets.

Every request goes through `Fetcher.get`: at most `rate_per_s` requests a second; 429 and 5xx answers and
dropped connections are retried with exponential backoff (a server's ``Retry-After`` wins); the run's
request and byte budgets are checked before each request and while a body streams in. Messages never
contain a URL's query string, and `redact` removes the key or token from any text that might.
"""

from __future__ import annotations

import email.utils
import os
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

# The real endpoints (README, "Getting more data"); only a loopback test server may replace them.
REAL_URLS = {
    "streetview": "https://maps.googleapis.com/maps/api/streetview",  # + /metadata (free) and the image
    "mapillary": "https://graph.mapillary.com",  # + /images (Graph API v4)
}
TEST_URL_ENV = "GEODEMO_COLLECT_TEST_BASE_URL"  # tests only: honoured for 127.0.0.1 / localhost / ::1
LOOPBACK = ("127.0.0.1", "localhost", "::1")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RESPONSE_BYTES = 32 * 1024 * 1024  # one answer; a 2048 px Mapillary thumbnail is ~1 MB
MAX_WAIT_S = 300.0  # the longest single wait, whatever Retry-After asks
TIMEOUT_S = (10.0, 60.0)  # connect, read


class CollectError(ValueError):
    """A problem that stops the whole run (refused key, spent budget); one sentence for the user."""


class BudgetSpent(CollectError):
    """The run reached --max-requests or --max-bytes; finished locations are kept."""


class FetchFailed(Exception):
    """A request that still failed after every retry; the point is left for a re-run (not recorded)."""


@dataclass
class Reply:
    """A finished HTTP answer: status code, body bytes and headers."""

    status: int
    body: bytes
    headers: dict


def base_url(service: str, override: str | None = None) -> str:
    """The endpoint root of `service`: the real one, or a loopback test server.

    The override comes from a function argument (never the CLI) or ``$GEODEMO_COLLECT_TEST_BASE_URL``;
    either must name 127.0.0.1, localhost or ::1, so a real key can never be sent anywhere else.
    """
    url = override or os.environ.get(TEST_URL_ENV, "")
    if not url:
        return REAL_URLS[service]
    if urlsplit(url).hostname not in LOOPBACK:
        raise CollectError(f"{TEST_URL_ENV} is for tests and may only name this machine (127.0.0.1); "
                           f"unset it to use the real {service} API.")
    return f"{url.rstrip('/')}/{service}"


def test_mode(override: str | None = None) -> bool:
    """True when the endpoints are a loopback test server (plain http is then allowed)."""
    return bool(override or os.environ.get(TEST_URL_ENV))


def redact(text: str, secrets) -> str:
    """`text` with every secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Fetcher:
    """Rate-limited, retrying, budgeted GETs over one `requests.Session`.

    Args:
        rate_per_s: most requests per second (retries included).
        retries: extra tries after a 429, a 5xx or a dropped connection.
        backoff_s: the first wait; it doubles per retry (capped at MAX_WAIT_S).
        max_requests / max_bytes: the run's budgets (requests sent, body bytes received); 0 = no limit.
        secrets: strings that must never appear in a message.
    """

    def __init__(self, rate_per_s: float = 5.0, retries: int = 5, backoff_s: float = 1.0,
                 max_requests: int = 0, max_bytes: int = 0, secrets=(), session=None, sleep=time.sleep):
        self.interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        self.retries, self.backoff_s = retries, backoff_s
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self.secrets = tuple(s for s in secrets if s)
        self.session = session or requests.Session()
        self.sleep = sleep
        self.requests = self.bytes = self.retried = 0
        self.statuses: Counter = Counter()
        self._next = 0.0

    def _wait_turn(self) -> None:
        now = time.monotonic()
        if now < self._next:
            self.sleep(self._next - now)
        self._next = max(now, self._next) + self.interval

    def _check_budget(self) -> None:
        if self.max_requests and self.requests >= self.max_requests:
            raise BudgetSpent(f"the run reached --max-requests {self.max_requests}")
        if self.max_bytes and self.bytes >= self.max_bytes:
            raise BudgetSpent(f"the run reached --max-bytes {self.max_bytes}")

    def _read(self, response, what: str) -> bytes:
        """The body, refusing one larger than MAX_RESPONSE_BYTES or the bytes left in the budget."""
        left = self.max_bytes - self.bytes if self.max_bytes else MAX_RESPONSE_BYTES
        cap = min(MAX_RESPONSE_BYTES, left)
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > cap:
            response.close()
            if cap < MAX_RESPONSE_BYTES:
                raise BudgetSpent(f"the next answer ({what}, {int(length)} bytes) would pass --max-bytes "
                                  f"{self.max_bytes}")
            raise FetchFailed(f"{what}: the answer is {int(length)} bytes, over {MAX_RESPONSE_BYTES}")
        chunks, size = [], 0
        for chunk in response.iter_content(64 * 1024):
            size += len(chunk)
            self.bytes += len(chunk)
            if size > cap:
                response.close()
                if cap < MAX_RESPONSE_BYTES:
                    raise BudgetSpent(f"the run reached --max-bytes {self.max_bytes} during {what}")
                raise FetchFailed(f"{what}: the answer is over {MAX_RESPONSE_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def get(self, url: str, params: dict | None = None, headers: dict | None = None,
            what: str = "request") -> Reply:
        """GET `url`; a Reply for any final status (the caller reads 4xx), FetchFailed when retries run out.

        Raises:
            BudgetSpent: the request or byte budget is used up (checked before every try).
            FetchFailed: connection errors or 429/5xx after every retry; the message names `what`.
        """
        for attempt in range(self.retries + 1):
            self._check_budget()
            self._wait_turn()
            self.requests += 1
            try:
                with self.session.get(url, params=params, headers=headers, timeout=TIMEOUT_S,
                                      stream=True) as response:
                    status = response.status_code
                    self.statuses[status] += 1
                    if status in RETRY_STATUSES:
                        response.close()  # the body of an error page is not needed
                        if attempt == self.retries:
                            break
                        self._back_off(attempt, retry_after_s(response.headers.get("Retry-After")))
                        continue
                    body = self._read(response, what)
                    return Reply(status, body, dict(response.headers))
            except requests.RequestException as exc:  # the message could hold the URL with its key
                self.statuses[type(exc).__name__] += 1
                if attempt < self.retries:
                    self._back_off(attempt, None)
                    continue
                raise FetchFailed(redact(f"{what}: {type(exc).__name__} after {self.retries + 1} tries",
                                         self.secrets)) from None
        raise FetchFailed(redact(f"{what}: HTTP {status} after {self.retries + 1} tries", self.secrets))

    def _back_off(self, attempt: int, retry_after: float | None) -> None:
        self.retried += 1
        delay = retry_after if retry_after is not None else self.backoff_s * 2 ** attempt
        self.sleep(min(MAX_WAIT_S, delay))
