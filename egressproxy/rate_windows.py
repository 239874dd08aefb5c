"""Fixed-window counters: the rate-limit algorithm, in process, with an injectable clock.

The rules (the Redis store's Lua script implements exactly these, so both stores behave alike):

- A bucket's window opens at the first hit after the previous window closed and lasts `window` seconds; when it
  closes, the bucket is empty again. Redis expires the key then; here `_live` drops it.
- `admit` asks for one request: the token bucket (if limited) is only read: it must not be spent out yet
  (`spent < tokens`); then the request bucket (if limited) must have room (`count < requests`) and counts the
  request. A denied request counts nowhere, so a client that keeps retrying does not push its own recovery out.
- `spend` adds the tokens a response reported, after the fact: one request may overdraw the budget once, and
  the next `admit` is denied until the window closes.
- `retry_after` is the time until the denying bucket's window closes: the moment a slot frees.

Why fixed windows: one counter and one expiry per bucket (O(1) memory, one atomic script in Redis), and an exact
`Retry-After`. The price is the known edge effect: up to twice the limit across a window boundary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Admission", "FixedWindows", "MAX_BUCKETS"]

# Buckets kept in process before closed windows are swept (PerExecution keys come from clients).
MAX_BUCKETS = 100_000


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a request may pass; when not, which budget ran out and seconds until its window frees a slot."""

    allowed: bool
    retry_after: float = 0.0
    exhausted: str = ""  # "requests" | "tokens"

    @classmethod
    def allow(cls) -> "Admission":
        return ALLOWED


ALLOWED = Admission(True)


@dataclass(slots=True)
class _Bucket:
    count: int
    closes_at: float


class FixedWindows:
    """Buckets by key; `clock` returns seconds (monotonic by default; tests pass their own)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_buckets: int = MAX_BUCKETS) -> None:
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: dict[str, _Bucket] = {}

    def admit(
        self, requests_key: str, requests: int | None, tokens_key: str, tokens: int | None, window: float
    ) -> Admission:
        now = self.clock()
        if tokens is not None:
            spent = self._live(tokens_key, now)
            if spent is not None and spent.count >= tokens:
                return Admission(False, spent.closes_at - now, "tokens")
        if requests is not None:
            bucket = self._live(requests_key, now)
            if bucket is not None and bucket.count >= requests:
                return Admission(False, bucket.closes_at - now, "requests")
            self._add(requests_key, 1, window, now, bucket)
        return ALLOWED

    def spend(self, tokens_key: str, amount: int, window: float) -> None:
        if amount <= 0:
            return
        now = self.clock()
        self._add(tokens_key, amount, window, now, self._live(tokens_key, now))

    def count(self, key: str) -> int:
        """What a bucket holds now (0 when its window closed)."""
        bucket = self._live(key, self.clock())
        return bucket.count if bucket is not None else 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _live(self, key: str, now: float) -> _Bucket | None:
        bucket = self._buckets.get(key)
        if bucket is not None and bucket.closes_at <= now:
            del self._buckets[key]
            return None
        return bucket

    def _add(self, key: str, amount: int, window: float, now: float, bucket: _Bucket | None) -> None:
        if bucket is not None:
            bucket.count += amount
            return
        if len(self._buckets) >= self.max_buckets:
            self._sweep(now)
        self._buckets[key] = _Bucket(amount, now + window)

    def _sweep(self, now: float) -> None:
        """Drop closed windows; if every bucket is live, drop the oldest half (bounded memory beats exactness
        for a flood of distinct execution ids)."""
        for key in [k for k, b in self._buckets.items() if b.closes_at <= now]:
            del self._buckets[key]
        if len(self._buckets) >= self.max_buckets:
            for key in list(self._buckets)[: self.max_buckets // 2]:
                del self._buckets[key]
