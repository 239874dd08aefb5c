"""Pure decision functions over a compiled snapshot: which listener, which route, which rule.

The data plane's addons and `egressproxy explain` call these same functions, so a dry run tells exactly what
serving does. They only walk the snapshot's prebuilt indexes (candidate listeners by (carries, port), route
tables by hostname, rule candidates pre-sorted by Gateway API precedence); nothing here parses, compiles or
touches mitmproxy.

Inputs are expected canonical: host names through `hostnames.canonical_host`, header names lower-case (several
values of one header joined with ", "), the path without the query string (a query is cut off if present).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from egressproxy.flowrecord import Verdict
from egressproxy.snapshot import (
    ALLOW_ALL,
    Carries,
    Gateway,
    HttpRouteMatch,
    L4Match,
    Listener,
    Route,
    RuleEntry,
    Rule,
)

__all__ = [
    "Carries",
    "Decision",
    "Verdict",
    "ListenerChoice",
    "HttpMatch",
    "select_listener",
    "route_for_listener",
    "match_http",
    "match_tls",
    "match_l4",
    "match_l4_entry",
    "decide_unmatched",
    "decide_route",
    "gateway_policy",
]

# A decision is the flow record's verdict: allow or deny, the DESIGN.md 4.1 reason, the deciding object as
# `Kind/namespace/name`, the status code and message of a denial.
Decision = Verdict


@dataclass(frozen=True, slots=True)
class ListenerChoice:
    listener: Listener | None  # None: no listener can take this connection at all
    route_hint: Route | None = None  # the route that made the listener win (None: defaultPolicy decides)
    candidates: tuple[Listener, ...] = ()  # every candidate, in the order considered (for explain)


@dataclass(frozen=True, slots=True)
class HttpMatch:
    route: Route
    rule_index: int
    rule: Rule
    match: HttpRouteMatch


def select_listener(
    gateway: Gateway, carries: Carries, port: int | None, host: str | None, ip: str | None
) -> ListenerChoice:
    """The listener that takes a connection (DESIGN.md section 4, listener matching).

    Candidates are the listeners whose protocol can take what the connection carries, those with a matching
    `port` before port-less ones, each group by precedence (TLS Terminate > HTTPS > HTTP > TLS Passthrough >
    TCP). The first candidate with an attached route matching the destination wins, so a Passthrough listener
    keeps the hosts its TLSRoutes name while a Terminate listener takes the rest; when none has a route, the
    first candidate takes the connection and defaultPolicy decides.
    """
    candidates = gateway.candidates(carries, port)
    if not candidates:
        return ListenerChoice(None)
    for listener in candidates:
        route = route_for_listener(listener, carries, host, ip, port)
        if route is not None:
            return ListenerChoice(listener, route, candidates)
    return ListenerChoice(candidates[0], None, candidates)


def route_for_listener(
    listener: Listener, carries: Carries, host: str | None, ip: str | None, port: int | None
) -> Route | None:
    """The attached route that makes this listener want the destination, decided at connection level.

    HTTP listeners (plain or intercepting) want any host an HTTPRoute names: the rules are checked per request.
    """
    if listener.carries_http:
        return listener.http_routes.first(host)
    if listener.passthrough:
        return match_tls(listener, host)
    protocol = "UDP" if carries is Carries.UDP else "TCP"
    return match_l4(listener, host, ip, port, protocol)


def match_http(
    listener: Listener,
    host: str | None,
    method: str,
    path: str,
    headers: Mapping[str, str],
    query: Mapping[str, list[str]],
) -> HttpMatch | None:
    """The HTTPRoute/GRPCRoute rule a request matches, by Gateway API precedence, or None (unmatched).

    Hostname specificity first (exact > longest wildcard suffix > routes without hostnames), then within that
    bucket: Exact path > longest PathPrefix > RegularExpression, a method, more header matches, more query
    matches, then route order (`namespace/name`) and rule order. A host that a route names but none of whose
    rules match is unmatched (defaultPolicy applies), unless a less specific route matches.
    """
    path = _path_only(path)
    for bucket in listener.http_routes.buckets(host):
        for entry in bucket.entries:
            match = entry.match
            if isinstance(match, HttpRouteMatch) and match.matches(method, path, headers, query):
                return HttpMatch(entry.route, entry.rule.index, entry.rule, match)
    return None


def match_tls(listener: Listener, sni: str | None) -> Route | None:
    """The TLSRoute for an SNI on a Passthrough listener (most specific hostname first), or None."""
    return listener.tls_routes.first(sni)


def match_l4_entry(
    listener: Listener, host: str | None, ip: str | None, port: int | None, protocol: str
) -> RuleEntry | None:
    """The TCPRoute/UDPRoute/EgressL4Route rule for a destination (name if bound, address, port), or None."""
    for bucket in listener.l4_routes.buckets(host):
        for entry in bucket.entries:
            match = entry.match
            if match is None or (isinstance(match, L4Match) and match.matches_address(ip, port, protocol)):
                return entry
    return None


def match_l4(listener: Listener, host: str | None, ip: str | None, port: int | None, protocol: str) -> Route | None:
    entry = match_l4_entry(listener, host, ip, port, protocol)
    return entry.route if entry is not None else None


def gateway_policy(gateway: Gateway) -> str:
    return f"EgressGateway/{gateway.ref.namespace}/{gateway.ref.name}"


def decide_unmatched(gateway: Gateway) -> Decision:
    """defaultPolicy for traffic no route matches: allow-all serves it as a catch-all, deny-all denies `no-route`."""
    if gateway.default_policy == ALLOW_ALL:
        return Verdict.allow("default-allow", gateway_policy(gateway))
    return Verdict.deny("no-route", gateway_policy(gateway))


def decide_route(route: Route) -> Decision:
    """A matched route allows, unless an EgressDenyPolicy turned it into a denial (`route-denied`); a Report-mode
    one lets it pass (the request decision and the listener-matching addon report what it would have denied)."""
    if route.deny is not None and not route.deny.report:
        deny = route.deny
        return Verdict.deny("route-denied", str(deny.policy), deny.message or "", deny.status_code)
    return Verdict.allow("route", f"{route.kind}/{route.ref.namespace}/{route.ref.name}")


def _path_only(path: str) -> str:
    cut = path.find("?")
    if cut != -1:
        path = path[:cut]
    return path or "/"
