"""Which request steps have nothing to do under a snapshot: decided once per snapshot, not on every request.

An addon that only acts when some policy kind is configured (rate limits, ext_authz, CEL/RBAC, guardrails,
credential injection, tracing) names its `step` and answers `idle_on(snapshot)`: True when no request decided
under that snapshot can give it work. With routing only, every such addon is idle, and the HookTable
(hook_table.py) does not call their request hooks at all. The routing addon copies the set into the flow's
record (`FlowRecord.idle_steps`) from the snapshot it decided the request with, so a reload in the middle of a
request never skips a step the request's own decision needs.

    class RateLimits:
        step = "rate-limit"

        def idle_on(self, snapshot: Snapshot) -> bool:
            return not snapshot.compiled.rate_limits
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from egressproxy.flowrecord import RECORD_KEY

if TYPE_CHECKING:
    from egressproxy.snapshot import Snapshot

__all__ = ["IdleSteps", "NOTHING_IDLE", "flow_idle_steps"]

NOTHING_IDLE: frozenset[str] = frozenset()


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
