"""TrafficPolicy `retry`/`retries` and `timeouts`/`timeout`, compiled once and looked up per request.

Both spellings are accepted (kgateway's `retry` and `timeouts`, the seeds' `retries` and `timeout`); the most
specific attached TrafficPolicy that sets a field decides it (rule > route > backend > listener > gateway).

Retries (docs/failover.md):
- `attempts` retries after the first attempt (default 1); with several candidates they take turns;
- only before the first response byte reached the client (the failover hop never retries after that);
- only for idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) unless `retryOn` is set: naming the
  conditions is the route owner saying a retry is safe for every method;
- `retryOn` (Envoy's conditions), mapped onto `retryable()`'s reasons: `5xx` (any 5xx, connect failure,
  reset, timeout), `gateway-error` (502/503/504, connect failure, timeout), `reset` and `reset-before-request`
  and `refused-stream` (the origin closed or refused before a response), `connect-failure` and
  `http3-post-connect-failure` (no connection, TLS failure included), `retriable-4xx` (409),
  `retriable-status-codes` (`statusCodes`), `envoy-ratelimited` (429), and the gRPC ones by the response's
  `grpc-status` (`cancelled` 1, `deadline-exceeded` 4, `resource-exhausted` 8, `internal` 13, `unavailable` 14).
  Unset: `5xx`, `connect-failure`, `reset`. `statusCodes` alone (without `retryOn`) also retry those codes.
- `perTryTimeout`: each attempt's time to the response head;
- `backoffBaseInterval` / `backOff.baseInterval`: the wait between attempts, doubling each time up to
  `backOff.maxInterval` (default 10 x base), without jitter.

Timeouts: `timeouts.request` / `timeout.request` bound the whole request like an HTTPRoute rule's
`timeouts.request` (which wins when both are set).

Gateway API's own HTTPRoute `rules[].retry` (`attempts`, `codes`, `backoff`; GEP-1731) compiles to the same
`RetryPolicy`: the listed `codes`, plus connection failures and resets (implementation-specific in the GEP; as
Envoy-based gateways do), idempotent methods only; a rule's own retry wins over a TrafficPolicy's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from egressproxy.retryability import Retryability

__all__ = [
    "IDEMPOTENT",
    "RetryPolicy",
    "TrafficSettings",
    "compile_route_retry",
    "compile_traffic_settings",
    "merge_settings",
]

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
DEFAULT_RETRY_ON = frozenset({"5xx", "connect-failure", "reset"})
_GRPC = {"cancelled": "1", "deadline-exceeded": "4", "resource-exhausted": "8", "internal": "13", "unavailable": "14"}
_BEFORE_RESPONSE = {"connect-failure", "tls-failure", "timeout"}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    source: str  # TrafficPolicy/ns/name
    attempts: int = 1
    retry_on: frozenset[str] = DEFAULT_RETRY_ON
    explicit: bool = False  # retryOn was set: every method may be retried
    status_codes: frozenset[int] = frozenset()
    per_try_timeout: float | None = None
    backoff: float = 0.0
    max_backoff: float = 0.0

    def applies_to(self, method: str) -> bool:
        return self.attempts > 0 and (self.explicit or method.upper() in IDEMPOTENT)

    def allows(self, result: Retryability, status: int | None, headers: Mapping[str, str]) -> bool:
        """Whether this attempt's outcome is one `retryOn` names."""
        on = self.retry_on
        if result.reason == "refused":
            return False  # the gateway's own refusal: the same candidate would be refused again
        if status is None:
            if result.reason == "connect-failure" or result.reason == "tls-failure":
                return bool(on & {"5xx", "gateway-error", "connect-failure", "reset-before-request", "refused-stream",
                                  "http3-post-connect-failure"})
            return bool(on & {"5xx", "gateway-error", "reset"})  # timeout or closed before a response head
        if status in self.status_codes:
            return True
        if 500 <= status <= 599 and "5xx" in on:
            return True
        if status in (502, 503, 504) and "gateway-error" in on:
            return True
        if status == 409 and "retriable-4xx" in on:
            return True
        if status == 429 and "envoy-ratelimited" in on:
            return True
        grpc = headers.get("grpc-status")
        return grpc is not None and any(_GRPC[name] == grpc for name in on if name in _GRPC)

    def to_dump(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "attempts": self.attempts,
            "retryOn": sorted(self.retry_on),
            "statusCodes": sorted(self.status_codes),
            "perTryTimeout": self.per_try_timeout,
            "backoff": self.backoff,
        }


@dataclass(frozen=True, slots=True)
class TrafficSettings:
    """What one TrafficPolicy sets of retries and timeouts (None: not set by it)."""

    retry: RetryPolicy | None = None
    request_timeout: float | None = None

    def to_dump(self) -> dict[str, Any]:
        return {"retry": self.retry.to_dump() if self.retry else None, "requestTimeout": self.request_timeout}


def compile_traffic_settings(source: str, spec: Mapping[str, Any]) -> TrafficSettings | None:
    """A TrafficPolicy's retry and timeout, typed; None when it sets neither."""
    timeouts = spec.get("timeouts") or spec.get("timeout") or {}
    request_timeout = timeouts.get("request")
    retry = _retry(source, spec)
    if retry is None and request_timeout is None:
        return None
    return TrafficSettings(retry, float(request_timeout) if request_timeout is not None else None)


def _retry(source: str, spec: Mapping[str, Any]) -> RetryPolicy | None:
    upstream, seeds = spec.get("retry"), spec.get("retries")
    block = upstream if upstream is not None else seeds
    if block is None:
        return None
    if upstream is not None:
        conditions = list(block.get("retryOn") or [])
        base = block.get("backoffBaseInterval")
        maximum = None
    else:
        text = block.get("retryOn") or ""
        conditions = [c.strip() for c in text.split(",") if c.strip()]
        backoff = block.get("backOff") or {}
        base, maximum = backoff.get("baseInterval"), backoff.get("maxInterval")
    codes = frozenset(int(c) for c in block.get("statusCodes") or ())
    retry_on = frozenset(conditions) if conditions else DEFAULT_RETRY_ON
    if codes:
        retry_on |= {"retriable-status-codes"}
    base_s = float(base) if base else 0.0
    return RetryPolicy(
        source=source,
        attempts=int(block.get("attempts", 1)),
        retry_on=retry_on,
        explicit=bool(conditions),
        status_codes=codes,
        per_try_timeout=float(block["perTryTimeout"]) if block.get("perTryTimeout") else None,
        backoff=base_s,
        max_backoff=float(maximum) if maximum else base_s * 10,
    )


ROUTE_RETRY_ON = frozenset({"connect-failure", "reset", "retriable-status-codes"})


def compile_route_retry(source: str, block: Mapping[str, Any] | None) -> RetryPolicy | None:
    """An HTTPRoute rule's `retry` (Gateway API), typed; None when the rule has none."""
    if block is None:
        return None
    backoff = float(block["backoff"]) if block.get("backoff") else 0.0
    return RetryPolicy(
        source=source,
        attempts=int(block.get("attempts", 1)),
        retry_on=ROUTE_RETRY_ON,
        status_codes=frozenset(int(c) for c in block.get("codes") or ()),
        backoff=backoff,
        max_backoff=backoff * 10,
    )


def merge_settings(settings: list[TrafficSettings]) -> TrafficSettings:
    """Most specific first: the first that sets a field decides it."""
    retry = next((s.retry for s in settings if s.retry is not None), None)
    timeout = next((s.request_timeout for s in settings if s.request_timeout is not None), None)
    return TrafficSettings(retry, timeout)
