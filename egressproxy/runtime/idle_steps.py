"""Which request steps have nothing to do under a snapshot: decided once per snapshot, not on every request.

An addon that only acts when some policy kind is configured (rate limits, ext_authz, CEL/RBAC, guardrails,
credential injection, tracing) names its `step` and answers `idle_on(snapshot)`: True when no request decided
under that snapshot can give it work. With routing only, every such addon is idle, and the HookTable
(hook_table.py) does not call their request hooks at all. The routing addon copies the set into the flow's
record (`FlowRecord.idle_steps`) from the snapshot it decided the request with, so a reload in the middle of a
request never skips a step the request's own decision needs.

Per route, for the steps whose whole input the routing decision carries (a rate-limit budget, a TrafficPolicy
`ai`): the routing addon adds them for a request whose decision has none (`request_idle_steps`), so a route with
no policy attached skips them even when other routes have one. The other steps look their policies up
themselves, and stay idle per snapshot only.

    class RateLimits:
        step = "rate-limit"

        def idle_on(self, snapshot: Snapshot) -> bool:
            return not snapshot.compiled.rate_limits
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from egressproxy.flowrecord import RECORD_KEY

if TYPE_CHECKING:
    from egressproxy.snapshot import Snapshot

__all__ = ["AI_GUARDRAILS_STEP", "IdleSteps", "NOTHING_IDLE", "RATE_LIMIT_STEP", "flow_idle_steps", "request_idle_steps"]

NOTHING_IDLE: frozenset[str] = frozenset()

# The steps whose whole input the routing decision carries (`RequestDecision.rate_limit`, `.ai`): idle for one
# request when its decision gives them none, whatever other routes of the snapshot have.
RATE_LIMIT_STEP = "rate-limit"
AI_GUARDRAILS_STEP = "ai-guardrails"


class IdleSteps:
    """`idle_steps(snapshot)`: the steps of `members` idle under `snapshot`, computed at its first request."""

    def __init__(self, members: Iterable[object]) -> None:
        self.members = tuple(m for m in members if isinstance(getattr(m, "step", None), str) and hasattr(m, "idle_on"))
        self._last: tuple[object, frozenset[str]] | None = None  # (snapshot, its idle steps)

    def __call__(self, snapshot: Snapshot) -> frozenset[str]:
        last = self._last
        if last is not None and last[0] is snapshot:
            return last[1]
        idle = frozenset(m.step for m in self.members if m.idle_on(snapshot))  # type: ignore[attr-defined]
        self._last = (snapshot, idle)
        return idle


def flow_idle_steps(flow: Any) -> frozenset[str]:
    """The idle steps written into `flow`'s record by the routing addon (none before it routed the flow)."""
    record = flow.metadata.get(RECORD_KEY)
    return record.idle_steps if record is not None else NOTHING_IDLE


def request_idle_steps(snapshot_idle: frozenset[str], rate_limited: bool, guarded: bool) -> frozenset[str]:
    """A request's idle steps: its snapshot's, plus the rate-limit step when its decision has no budget and the
    ai-guardrails step when it has no `ai` policy (a route with no policy attached skips them even when other
    routes have one). The union is computed once per distinct input, not per request."""
    if (rate_limited or RATE_LIMIT_STEP in snapshot_idle) and (guarded or AI_GUARDRAILS_STEP in snapshot_idle):
        return snapshot_idle
    return _with_request_steps(snapshot_idle, rate_limited, guarded)


@functools.lru_cache(maxsize=64)
def _with_request_steps(snapshot_idle: frozenset[str], rate_limited: bool, guarded: bool) -> frozenset[str]:
    extra = () if rate_limited else (RATE_LIMIT_STEP,)
    return snapshot_idle.union(extra, () if guarded else (AI_GUARDRAILS_STEP,))
