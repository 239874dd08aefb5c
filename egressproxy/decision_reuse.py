"""Reusing a request's routing decision for the next request on the same connection.

A keep-alive client sends request after request to one host through one connection, and each would be decided
anew (route lookup, rule match, upstream candidates, policy look-ups). The decision is a pure function of the
snapshot, the listener, the request's host, port, scheme and path, the connection's name, and - only when a
route the host selects matches on them - its method, headers and query parameters. So when the host's route
buckets have no such match (`RouteTable.decided_by_path`, a compile-time fact per hostname bucket), and the
decision drew no random number (no two weighted candidates in one priority group) and consulted no region
allow-list, the connection keeps that decision, and a request with the same key gets it back.

The key holds the snapshot itself: a reload swaps the snapshot, so a decision never outlives the configuration
it was taken on. One decision per connection: a client alternating paths just decides each time.
"""

from __future__ import annotations

from dataclasses import dataclass

from egressproxy.decisions import RequestDecision, RequestView, decide_request
from egressproxy.snapshot import Listener, Snapshot

__all__ = ["DecisionMemo", "MemoKey", "decide_reusing", "reusable"]

# (listener name, host, port, scheme, path with its query, the connection's name)
MemoKey = tuple[str, str, int, str, str, "str | None"]


@dataclass(frozen=True, slots=True)
class DecisionMemo:
    """The decision a connection's last request got, and what it was decided on."""

    snapshot: Snapshot
    key: MemoKey
    decision: RequestDecision


def decide_reusing(
    memo: DecisionMemo | None, snapshot: Snapshot, listener: Listener, view: RequestView, connection_host: str | None
) -> tuple[RequestDecision, DecisionMemo | None]:
    """`decide_request`, or the memo's decision when it was taken on the same snapshot and key; with the memo the
    connection keeps for its next request (None when this decision may not be reused)."""
    key: MemoKey = (listener.name, view.host, view.port, view.scheme, view.path, connection_host)
    if memo is not None and memo.snapshot is snapshot and memo.key == key:
        return memo.decision, memo
    decision = decide_request(snapshot, listener, view, connection_host=connection_host)
    return decision, (DecisionMemo(snapshot, key, decision) if reusable(listener, view.host, decision) else None)


def reusable(listener: Listener, host: str, decision: RequestDecision) -> bool:
    """Whether every request with the same key gets this very decision: its rule depends on the path alone, no
    weighted choice ordered its candidates, and no region allow-list was consulted."""
    if decision.region_checks or not listener.http_routes.decided_by_path(host):
        return False
    groups = {u.group for u in decision.upstreams}
    return len(groups) == len(decision.upstreams)
