"""The gateway's rate limiter: checks a request against every RateLimitPolicy that applies, spends tokens after
the response, and decides by each policy's failureMode when its Redis store is unreachable.

One instance per gateway process (on `GatewayState`). It holds the Local counters and one Redis client per
configured store (reused across reloads while the address and credentials stay the same).

A store that failed is not asked again for `RETRY_AFTER_FAILURE` seconds: requests in between are decided by
failureMode at once instead of each waiting for a timeout. An outage is logged once when it starts and once when
the store answers again, never per request; every request decided without the store is counted in
`egress_rate_limit_store_errors_total{policy, failure_mode}`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from egressproxy.flowrecord import Identity, Verdict
from egressproxy.metrics import GatewayMetrics
from egressproxy.rate_limit_stores import LocalStore, RateLimitStore, RedisStore, StoreUnavailable
from egressproxy.rate_limits import RateLimit, RedisStoreConfig, bucket_key
from egressproxy.rate_windows import Admission, FixedWindows

__all__ = ["RATE_LIMITED", "LimitCheck", "RateLimiter", "retry_after_seconds"]

log = logging.getLogger("egressproxy")

RATE_LIMITED = "rate-limited"
RATE_LIMITED_STATUS = 429
RETRY_AFTER_FAILURE = 1.0  # seconds a failed store is left alone
STORE_DOWN_RETRY_AFTER = 1  # Retry-After of a failureMode Deny answer


def retry_after_seconds(seconds: float) -> int:
    """Whole seconds for `Retry-After`, rounded up (a client waiting that long finds the slot free), at least 1."""
    return max(1, math.ceil(seconds - 1e-9))


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """What the limiter decided for one request.

    `denial`: the 429 verdict (None: pass); `retry_after`: its `Retry-After` seconds; `reports`: Report-mode
    policies that would have denied; `spend`: (policy, tokens bucket) pairs to charge the response's tokens to.
    """

    denial: Verdict | None = None
    retry_after: int = 0
    reports: tuple[RateLimit, ...] = ()
    spend: tuple[tuple[RateLimit, str], ...] = ()


PASS = LimitCheck()


class RateLimiter:
    def __init__(self, metrics: GatewayMetrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.clock = clock
        self.local = LocalStore(FixedWindows(clock))
        self._redis: dict[RedisStoreConfig, RedisStore] = {}
        self._down_until: dict[str, float] = {}  # store address -> when to try it again
        self._outage: dict[str, int] = {}  # store address -> requests decided without it during this outage

    async def check(
        self, limits: Iterable[RateLimit], identity: Identity, route: str | None, headers: Mapping[str, str]
    ) -> LimitCheck:
        reports: list[RateLimit] = []
        spend: list[tuple[RateLimit, str]] = []
        for limit in limits:
            key = bucket_key(limit, identity, route, headers)
            try:
                admission = await self._admit(limit, key)
            except StoreUnavailable:
                if limit.fail_open:
                    continue
                if limit.report_only:  # Report never denies: what failureMode Deny would have done is reported
                    reports.append(limit)
                    continue
                message = "the rate-limit store is unreachable (failureMode Deny)"
                denial = Verdict.deny(RATE_LIMITED, limit.name, message, RATE_LIMITED_STATUS)
                return LimitCheck(denial, STORE_DOWN_RETRY_AFTER, tuple(reports))
            if limit.tokens is not None:
                spend.append((limit, key))
            if admission.allowed:
                continue
            if limit.report_only:
                reports.append(limit)
                continue
            return LimitCheck(_denial(limit, admission), retry_after_seconds(admission.retry_after), tuple(reports))
        if not reports and not spend:
            return PASS
        return LimitCheck(None, 0, tuple(reports), tuple(spend))

    async def spend(self, pairs: Iterable[tuple[RateLimit, str]], tokens: int) -> None:
        """Charge `tokens` (as the provider reported them) to every token budget the request counted in."""
        if tokens <= 0:
            return
        for limit, key in pairs:
            store = self._store(limit)
            if self._paused(limit, store):
                continue
            try:
                await store.spend(key, tokens, limit.window)
            except StoreUnavailable:
                self._failed(limit, store)
                continue
            self._answered(store)

    async def close(self) -> None:
        for store in self._redis.values():
            await store.close()
        self._redis.clear()

    async def _admit(self, limit: RateLimit, key: str) -> Admission:
        store = self._store(limit)
        if self._paused(limit, store):
            raise StoreUnavailable("paused after a failure")
        try:
            admission = await store.admit(key, limit.requests, key, limit.tokens, limit.window)
        except StoreUnavailable:
            self._failed(limit, store)
            raise
        self._answered(store)
        return admission

    def _store(self, limit: RateLimit) -> RateLimitStore:
        if limit.redis is None:
            return self.local
        store = self._redis.get(limit.redis)
        if store is None:
            store = self._redis[limit.redis] = RedisStore(limit.redis)
        return store

    def _paused(self, limit: RateLimit, store: RateLimitStore) -> bool:
        """True (and counted) while a store that failed is left alone; the pause is not extended by asking."""
        if not isinstance(store, RedisStore):
            return False
        until = self._down_until.get(store.address)
        if until is None or self.clock() >= until:
            return False
        self._count(limit, store)
        return True

    def _count(self, limit: RateLimit, store: RedisStore) -> None:
        mode = "Allow" if limit.fail_open else "Deny"
        self.metrics.rate_limit_store_errors.labels(limit.name, mode).inc()
        self._outage[store.address] = self._outage.get(store.address, 0) + 1

    def _failed(self, limit: RateLimit, store: RateLimitStore) -> None:
        if not isinstance(store, RedisStore):
            return
        self._down_until[store.address] = self.clock() + RETRY_AFTER_FAILURE
        if store.address not in self._outage:
            log.warning(
                "rate-limit store Redis at %s is unreachable: each RateLimitPolicy on it decides by its failureMode "
                "(Allow passes, Deny answers 429) until it answers again",
                store.address,
            )
        self._count(limit, store)

    def _answered(self, store: RateLimitStore) -> None:
        if not isinstance(store, RedisStore):
            return
        count = self._outage.pop(store.address, None)
        if count is not None:
            self._down_until.pop(store.address, None)
            log.warning("rate-limit store Redis at %s answers again (%d decisions taken without it)", store.address, count)


def _denial(limit: RateLimit, admission: Admission) -> Verdict:
    what = "tokens" if admission.exhausted == "tokens" else "requests"
    amount = limit.tokens if what == "tokens" else limit.requests
    message = f"rate limit exceeded: {amount} {what} per {_window_text(limit.window)} ({limit.scope})"
    return Verdict.deny(RATE_LIMITED, limit.name, message, RATE_LIMITED_STATUS)


def _window_text(seconds: float) -> str:
    return f"{seconds:g}s"
