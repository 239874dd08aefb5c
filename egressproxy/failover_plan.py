"""Which requests go through the failover hop, and the walk each one gets: a pure decision over the candidates.

A request is walked (sent through egressproxy/upstream_hop.py) when it has more than one AI provider candidate
(an AI Backend's priority groups, AIBackend groups). It is sent straight to its first candidate, as before,
when:

- it has one candidate, or its candidates are not AI providers (no TrafficPolicy retries yet);
- a candidate is reached through a parent proxy (the gateway's client speaks no CONNECT yet);
- its body is larger than the replay buffer (HTTPListenerPolicy `buffer.maxRequestBytes`, default 1 MiB):
  without a copy to replay, only the first candidate may be sent the prompt.

`direct_reason` says which of these applied (None: walk it).
"""

from __future__ import annotations

from egressproxy.candidate_request import format_mismatch
from egressproxy.failover_walk import WalkPlan
from egressproxy.provider_health import OutlierDetection
from egressproxy.upstreams import Upstream

__all__ = ["direct_reason", "failover_plan"]


def direct_reason(candidates: tuple[Upstream, ...], body_size: int, replay_limit: int) -> str | None:
    """Why the request goes to its first candidate only; None when it is walked."""
    if sum(1 for c in candidates if c.provider is not None) < 2:
        return "one candidate"
    if any(c.parent is not None for c in candidates):
        return "a candidate is reached through a parent proxy"
    if body_size > replay_limit:
        return f"the body ({body_size} bytes) is larger than the replay buffer ({replay_limit} bytes)"
    return None


def failover_plan(candidates: tuple[Upstream, ...], per_try_timeout: float | None = None) -> WalkPlan:
    """Walk every candidate in order; a candidate of another API format than the first is skipped (the seam
    where translation will plug in)."""
    first = candidates[0]

    def skip(candidate: Upstream) -> str | None:
        return format_mismatch(first, candidate)

    return WalkPlan(candidates, failover=True, per_try_timeout=per_try_timeout, skip=skip, outlier=outlier_of)


def outlier_of(upstream: Upstream) -> OutlierDetection | None:
    """The outlier detection configured on a candidate's Backend (none: not ejected)."""
    return None
