"""The gateway's rate limiter: checks a request against its budget (the RateLimitPolicies that apply, merged by
egressproxy/rate_limit_precedence.py), spends tokens after the response, and decides by the budget's failureMode
when its Redis store is unreachable.

One instance per gateway process (on `GatewayState`). It holds the Local counters and one Redis client per
configured store, reused across reloads while the address and credentials stay the same; after a reload the
clients of stores no policy names any more are closed (`retain`), and all of them at shutdown (`close`).

A store that failed is not asked again for `RETRY_AFTER_FAILURE` seconds: requests in between are decided by
failureMode at once instead of each waiting for a timeout. An outage is logged once when it starts and once when
the store answers again, never per request; every request decided without the store is counted in
`egress_rate_limit_store_errors_total{policy, failure_mode}`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass

from egressproxy.flowrecord import Identity, Verdict
from egressproxy.metrics import GatewayMetrics
from egressproxy.rate_limit_precedence import RateLimitTable
from egressproxy.rate_limit_stores import LocalStore, RateLimitStore, RedisStore, StoreUnavailable
from egressproxy.rate_limits import RateLimit, RedisStoreConfig, bucket_key
from egressproxy.rate_windows import Admission, FixedWindows

__all__ = ["RATE_LIMITED", "LimitCheck", "RateLimiter", "local_store_warning", "retry_after_seconds"]

log = logging.getLogger("egressproxy")

RATE_LIMITED = "rate-limited"
RATE_LIMITED_STATUS = 429
RETRY_AFTER_FAILURE = 1.0  # seconds a failed store is left alone
STORE_DOWN_RETRY_AFTER = 1  # Retry-After of a failureMode Deny answer


def retry_after_seconds(seconds: float) -> int:
    """Whole seconds for `Retry-After`, rounded up (a client waiting that long finds the slot free), at least 1."""
    return max(1, math.ceil(seconds - 1e-9))


def local_store_warning(table: RateLimitTable, workers: int) -> str | None:
    """The start-up warning for `--workers N` (N > 1) when a budget is counted in the Local store: each worker
    process counts alone, so together they may let up to N times the limit through. None: nothing to say."""
    if workers <= 1:
        return None
    names = sorted({limit.name for limit in table.local_budgets()})
    if not names:
        return None
    return (
        f"rate limits with store Local are counted by each of the {workers} worker processes alone, so together "
        f"they may let up to {workers} times the limit through: {', '.join(names)} (store Redis counts once "
        "across workers and replicas)"
    )


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """What the limiter decided for one request.

    `denial`: the 429 verdict (None: pass); `retry_after`: its `Retry-After` seconds; `report`: the Report-mode
    budget that would have denied; `spend`: the token budget and its bucket, to charge the response's tokens to.
    """

    denial: Verdict | None = None
    retry_after: int = 0
    report: RateLimit | None = None
    spend: tuple[RateLimit, str] | None = None


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
        self, limit: RateLimit, identity: Identity, route: str | None, headers: Mapping[str, str]
    ) -> LimitCheck:
        """Count one request against its budget: pass, report (Report mode) or deny with 429."""
        key = bucket_key(limit, identity, route, headers)
        try:
            admission = await self._admit(limit, key)
        except StoreUnavailable:
            if limit.fail_open:
                return PASS
            if limit.report_only:  # Report never denies: what failureMode Deny would have done is reported
                return LimitCheck(report=limit)
            message = "the rate-limit store is unreachable (failureMode Deny)"
            denial = Verdict.deny(RATE_LIMITED, limit.name, message, RATE_LIMITED_STATUS)
            return LimitCheck(denial, STORE_DOWN_RETRY_AFTER)
        spend = (limit, key) if limit.tokens is not None else None
        if admission.allowed:
            return LimitCheck(spend=spend) if spend is not None else PASS
        if limit.report_only:
            return LimitCheck(report=limit, spend=spend)
        return LimitCheck(_denial(limit, admission), retry_after_seconds(admission.retry_after))

    async def spend(self, budget: tuple[RateLimit, str], tokens: int) -> None:
        """Charge `tokens` (as the provider reported them) to the token budget the request counted in."""
        if tokens <= 0:
            return
        limit, key = budget
        store = self._store(limit)
        if self._paused(limit, store):
            return
        try:
            await store.spend(key, tokens, limit.window)
        except StoreUnavailable:
            self._failed(limit, store)
            return
        self._answered(store)

    async def retain(self, stores: Set[RedisStoreConfig]) -> None:
        """After a reload: close the clients of the Redis stores no policy names any more (another address, or
        new credentials). A request decided on the previous snapshot that still counts on a closed store opens
        a client again; the next reload or the shutdown closes it."""
        for config in [c for c in self._redis if c not in stores]:
            store = self._redis.pop(config)
            if not any(c.address == store.address for c in self._redis):
                self._down_until.pop(store.address, None)
                self._outage.pop(store.address, None)
            log.info("rate-limit store Redis at %s: client closed (no policy names it so after the reload)", store.address)
            await store.close()

    async def close(self) -> None:
        """At shutdown: close every Redis client."""
        stores = list(self._redis.values())
        self._redis.clear()
        for store in stores:
            await store.close()

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
