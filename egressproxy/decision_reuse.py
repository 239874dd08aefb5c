"""Reusing a request's routing decision for the next request on the same connection.

A keep-alive client sends request after request to one host through one connection, and each would be decided
anew (route lookup, rule match, upstream candidates, policy look-ups). The decision is a pure function of the
snapshot, the listener, the request's host, port, scheme and path, the connection's name, and - only when a
route the host selects matches on them - its method, headers and query parameters. So when the host's route
buckets have no such match (`RouteTable.decided_by_path`, from compile-time flags per hostname bucket), and the
decision drew no random number (no two weighted candidates in one priority group) and consulted no region
allow-list, the connection keeps that decision, and a request with the same key and path gets it back. When the
buckets do not match on the path either (`RouteTable.decided_by_host`: hostname-only routes, the common egress
case), a request with any path gets it.

The key holds the snapshot itself: a reload swaps the snapshot, so a decision never outlives the configuration
it was taken on. One decision per connection: where the path decides, a client alternating paths decides each
time.
"""

from __future__ import annotations

from dataclasses import dataclass

from egressproxy.decisions import RequestDecision, RequestView, decide_request
from egressproxy.snapshot import Listener, Snapshot

__all__ = ["DecisionMemo", "MemoKey", "decide_reusing", "reusable"]

# (listener name, host, port, scheme, the connection's name)
MemoKey = tuple[str, str, int, str, "str | None"]


@dataclass(frozen=True, slots=True)
class DecisionMemo:
    """The decision a connection's last request got, and what it was decided on. `path` is None when the host's
    routes do not look at the path at all (hostname-only routes): then any path gets the decision."""

    snapshot: Snapshot
    key: MemoKey
    path: str | None
    decision: RequestDecision


def decide_reusing(
    memo: DecisionMemo | None, snapshot: Snapshot, listener: Listener, view: RequestView, connection_host: str | None
) -> tuple[RequestDecision, DecisionMemo | None]:
    """`decide_request`, or the memo's decision when it was taken on the same snapshot and key; with the memo the
    connection keeps for its next request (None when this decision may not be reused)."""
    key: MemoKey = (listener.name, view.host, view.port, view.scheme, connection_host)
    if memo is not None and memo.snapshot is snapshot and memo.key == key and memo.path in (None, view.path):
        return memo.decision, memo
    decision = decide_request(snapshot, listener, view, connection_host=connection_host)
    if not reusable(listener, view.host, decision):
        return decision, None
    path = None if listener.http_routes.decided_by_host(view.host) else view.path
    return decision, DecisionMemo(snapshot, key, path, decision)


def reusable(listener: Listener, host: str, decision: RequestDecision) -> bool:
    """Whether every request with the same key gets this very decision: its rule depends on the path alone, no
    weighted choice ordered its candidates, and no region allow-list was consulted."""
    if decision.region_checks or not listener.http_routes.decided_by_path(host):
        return False
    groups = {u.group for u in decision.upstreams}
    return len(groups) == len(decision.upstreams)
