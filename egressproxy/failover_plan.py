"""Which requests go through the failover hop, and the walk each one gets: a pure decision over the candidates.

A request is walked (sent through egressproxy/upstream_hop.py) when:

- it has more than one AI provider candidate (an AI Backend's priority groups, AIBackend groups): a failover
  walk, each candidate once, in order, with cooldowns; a TrafficPolicy `perTryTimeout` and the HTTPRoute rule's
  `timeouts.backendRequest` (the shorter) bound each attempt's wait for a response head, and `backendRequest`
  also the whole attempt (egressproxy/upstream_hop.py);
- or a TrafficPolicy or HTTPRoute rule retry applies (egressproxy/traffic_retries.py: `attempts` > 0, an
  idempotent method or an explicit `retryOn`): a retry walk of 1 + attempts tries, the candidates taking turns,
  no cooldowns.

It is sent straight to its first candidate, as before, when none of that applies, or when:

- a candidate is reached through a parent proxy (the gateway's client speaks no CONNECT yet);
- its body is larger than the replay buffer (HTTPListenerPolicy `buffer.maxRequestBytes`, default 1 MiB):
  without a copy to replay, only the first candidate may be sent the request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from egressproxy.cross_format import CandidateFormats, skip_reason
from egressproxy.failover_walk import WalkPlan
from egressproxy.outlier_detection import OutlierDetection
from egressproxy.retryability import Retryability
from egressproxy.traffic_retries import RetryPolicy
from egressproxy.upstreams import Upstream

__all__ = ["OutlierLookup", "choose_plan", "direct_reason", "failover_plan", "retry_plan"]

OutlierLookup = Callable[[Upstream], OutlierDetection | None]


def direct_reason(
    candidates: tuple[Upstream, ...], body_size: int, replay_limit: int, retry: RetryPolicy | None = None, method: str = "GET"
) -> str | None:
    """Why the request goes to its first candidate only; None when it is walked."""
    ai = sum(1 for c in candidates if c.provider is not None) >= 2
    retried = retry is not None and retry.applies_to(method)
    if not candidates or not (ai or retried):
        return "one candidate" if retry is None else f"no retry for {method} ({retry.source} sets no retryOn)"
    if any(c.parent is not None for c in candidates):
        return "a candidate is reached through a parent proxy"
    if body_size > replay_limit:
        return f"the body ({body_size} bytes) is larger than the replay buffer ({replay_limit} bytes)"
    return None


def choose_plan(
    candidates: tuple[Upstream, ...],
    method: str,
    body_size: int,
    replay_limit: int,
    retry: RetryPolicy | None,
    attempt_timeout: float | None,
    outlier: OutlierLookup | None = None,
    formats: CandidateFormats | None = None,
) -> WalkPlan | str:
    """The walk for this request, or why it goes straight to its first candidate. `formats`: the candidates of
    another chat API than the client's, each with its translation or why it is skipped
    (egressproxy/cross_format.py)."""
    why = direct_reason(candidates, body_size, replay_limit, retry, method)
    if why is not None:
        return why
    limits = [t for t in (retry.per_try_timeout if retry is not None else None, attempt_timeout) if t]
    per_try = min(limits) if limits else None  # to the response head; backendRequest also bounds the whole attempt
    if sum(1 for c in candidates if c.provider is not None) >= 2:
        return failover_plan(candidates, per_try, outlier, formats)
    assert retry is not None
    return retry_plan(candidates, retry, per_try, outlier)


def failover_plan(
    candidates: tuple[Upstream, ...],
    per_try_timeout: float | None = None,
    outlier: OutlierLookup | None = None,
    formats: CandidateFormats | None = None,
) -> WalkPlan:
    """Walk every candidate in order; one that `formats` cannot serve (a request the translator refuses, an API
    it does not know) is skipped with its reason."""
    known = formats or {}

    def skip(candidate: Upstream) -> str | None:
        return skip_reason(known, candidate)

    return WalkPlan(candidates, failover=True, per_try_timeout=per_try_timeout, skip=skip, outlier=outlier or _no_outlier)


def retry_plan(
    candidates: tuple[Upstream, ...], retry: RetryPolicy, per_try_timeout: float | None, outlier: OutlierLookup | None = None
) -> WalkPlan:
    attempts = tuple(candidates[i % len(candidates)] for i in range(1 + retry.attempts))

    def allows(result: Retryability, status: int | None, headers: Mapping[str, str]) -> bool:
        return retry.allows(result, status, headers)

    return WalkPlan(
        attempts, failover=False, per_try_timeout=per_try_timeout, allows=allows, backoff=retry.backoff,
        max_backoff=retry.max_backoff, outlier=outlier or _no_outlier,
    )


def _no_outlier(upstream: Upstream) -> OutlierDetection | None:
    return None
