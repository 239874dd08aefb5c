"""A listener's routes indexed by hostname (exact, `*.` wildcard, any), each bucket's entries in match order.

Ties between routes follow the Gateway API tie-break by `namespace/name` (there are no creation timestamps).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import MappingProxyType
from typing import Any

from egressproxy.snapshot import MATCH_ALL_PATH, HttpRouteMatch, Route, RouteBucket, RouteTable, RuleEntry


def build_http_table(routes: Iterable[Route]) -> RouteTable:
    """HTTPRoute/GRPCRoute table; each bucket's entries sorted by Gateway API rule precedence.

    The sort is stable over (route order, rule order, match order), so ties keep the first route and rule.
    """
    builder = _TableBuilder()
    for route in _route_order(routes):
        keys = _host_keys(route.hostnames)
        for rule in route.rules:
            for match in rule.matches:
                builder.add(keys, RuleEntry(route, rule, match))
    return builder.build(sort_key=lambda e: tuple(-x for x in e.match.precedence()))


def build_host_table(routes: Iterable[Route]) -> RouteTable:
    """TLSRoute table: one entry per rule, keyed by the route's hostnames."""
    builder = _TableBuilder()
    for route in _route_order(routes):
        for rule in route.rules:
            builder.add(_host_keys(route.hostnames), RuleEntry(route, rule, None))
    return builder.build()


def build_l4_table(routes: Iterable[Route]) -> RouteTable:
    """TCPRoute/UDPRoute/EgressL4Route table, keyed by each match's destinationHostnames."""
    builder = _TableBuilder()
    for route in _route_order(routes):
        for rule in route.rules:
            if not rule.l4_matches:
                builder.add(_host_keys(route.hostnames), RuleEntry(route, rule, None))
            for match in rule.l4_matches:
                builder.add(_host_keys(match.hostnames), RuleEntry(route, rule, match))
    return builder.build()


def _reads_request(entry: RuleEntry) -> bool:
    """Whether an HTTP entry looks at more of a request than its path (method, headers, query parameters)."""
    match = entry.match
    return isinstance(match, HttpRouteMatch) and bool(match.method or match.headers or match.query_params)


def _reads_path(entry: RuleEntry) -> bool:
    """Whether an HTTP entry's path match can fail (anything but the match-all PathPrefix `/`)."""
    match = entry.match
    return isinstance(match, HttpRouteMatch) and match.path != MATCH_ALL_PATH


def _host_keys(hostnames: Sequence[str]) -> list[tuple[str, str | None]]:
    if not hostnames:
        return [("any", None)]
    return [("wildcard", h[2:]) if h.startswith("*.") else ("exact", h) for h in hostnames]


def _route_order(routes: Iterable[Route]) -> list[Route]:
    """Gateway API tie-break across routes: by `namespace/name` (we have no creation timestamps)."""
    return sorted(routes, key=lambda r: (r.ref.namespace, r.ref.name, r.kind))


class _TableBuilder:
    """Collects (hostname key, entry) pairs in priority order, then freezes them into a RouteTable."""

    def __init__(self) -> None:
        self.buckets: dict[tuple[str, str | None], list[RuleEntry]] = {}

    def add(self, keys: Iterable[tuple[str, str | None]], entry: RuleEntry) -> None:
        for key in keys:
            self.buckets.setdefault(key, []).append(entry)

    def build(self, sort_key: Any = None) -> RouteTable:
        exact: dict[str, RouteBucket] = {}
        wildcard: dict[str, RouteBucket] = {}
        anyb = RouteBucket((), ())
        for (kind, host), entries in self.buckets.items():
            routes = tuple({id(e.route): e.route for e in entries}.values())
            ordered = tuple(sorted(entries, key=sort_key) if sort_key else entries)
            bucket = RouteBucket(
                routes, ordered, any(_reads_request(e) for e in ordered), any(_reads_path(e) for e in ordered)
            )
            if kind == "exact":
                exact[host or ""] = bucket
            elif kind == "wildcard":
                wildcard[host or ""] = bucket
            else:
                anyb = bucket
        return RouteTable(MappingProxyType(exact), MappingProxyType(wildcard), anyb)
