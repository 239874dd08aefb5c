"""What the gateway does with a CONNECT, a connection and a request: pure functions over the snapshot.

The data plane's addons and `egressproxy explain` call these same functions, so a dry run tells exactly what
serving would do. Nothing here touches mitmproxy or the network.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from egressproxy.flowrecord import Verdict
from egressproxy.hostnames import InvalidHostname, canonical_host, is_ip_literal
from egressproxy.matching import (
    Carries,
    decide_route,
    decide_unmatched,
    gateway_policy,
    match_http,
    select_listener,
)
from egressproxy.snapshot import (
    Backend,
    StaticHost,
    DirectResponse,
    Gateway,
    HttpRouteMatch,
    Listener,
    Route,
    Rule,
    Snapshot,
    WeightedBackend,
)

__all__ = [
    "Action",
    "ConnectionDecision",
    "RequestDecision",
    "RequestView",
    "decide_connect",
    "decide_connection",
    "decide_request",
    "gateway_policy",
    "route_name",
]


class Action(Enum):
    PASSTHROUGH = "passthrough"  # relay TLS untouched (TLS Passthrough listener)
    INTERCEPT = "intercept"  # terminate TLS with a minted certificate, then route requests
    HTTP = "http"  # plain HTTP: route each request
    TCP = "tcp"  # relay raw bytes
    UDP = "udp"
    CLOSE = "close"  # denied: close without dialling


def route_name(route: Route | None) -> str | None:
    return f"{route.ref.namespace}/{route.ref.name}" if route is not None else None


def _no_route(gateway: Gateway) -> Verdict:
    return Verdict.deny("no-route", gateway_policy(gateway))


@dataclass(frozen=True, slots=True)
class ConnectionDecision:
    action: Action
    verdict: Verdict
    listener: Listener | None = None
    route: Route | None = None
    host: str | None = None


def _canonical(host: str | None) -> str | None:
    if host is None or host == "":
        return None
    return canonical_host(host)


def decide_connect(snapshot: Snapshot, host: str, port: int) -> ConnectionDecision:
    """A CONNECT (or absolute-form request) authority, before any byte of the tunnel is seen.

    The tunnel is opened when some listener that could take a connection to this port has a route for the
    host, or when defaultPolicy is allow-all; otherwise it is refused with 403 before anything is dialled.
    """
    gateway = snapshot.gateway
    try:
        name = canonical_host(host)
    except InvalidHostname:
        return ConnectionDecision(Action.CLOSE, Verdict.deny("invalid-host", gateway_policy(gateway)))
    ip = name if is_ip_literal(name) else None
    best: ConnectionDecision | None = None
    for carries in (Carries.TLS, Carries.HTTP, Carries.TCP):
        choice = select_listener(gateway, carries, port, name, ip)
        if choice.listener is None:
            continue
        route = choice.route_hint
        if route is not None:
            # HTTP listeners decide per request; a route's deny applies to the CONNECT only for L4/passthrough.
            verdict = Verdict.allow("route", _ref(route)) if choice.listener.carries_http else decide_route(route)
            return ConnectionDecision(_action(choice.listener, carries), verdict, choice.listener, route, name)
        if best is None:
            best = ConnectionDecision(_action(choice.listener, carries), decide_unmatched(gateway), choice.listener, None, name)
    if best is None:
        return ConnectionDecision(Action.CLOSE, _no_route(gateway), None, None, name)
    return best


def decide_connection(
    snapshot: Snapshot,
    carries: Carries,
    port: int,
    *,
    connect_host: str | None = None,
    sni: str | None = None,
    bound_host: str | None = None,
    ip: str | None = None,
) -> ConnectionDecision:
    """Once the first bytes show what the connection carries: which listener takes it, and what it does.

    The name decided on is the SNI, which must agree with the CONNECT authority (no domain fronting), else
    the CONNECT authority, else a name bound by our DNS answers, else the bare destination address.
    """
    gateway = snapshot.gateway
    try:
        sni_c = _canonical(sni)
        connect_c = _canonical(connect_host)
        bound_c = _canonical(bound_host)
    except InvalidHostname:
        return ConnectionDecision(Action.CLOSE, Verdict.deny("invalid-host", gateway_policy(gateway)))
    if sni_c and connect_c and sni_c != connect_c:
        return ConnectionDecision(
            Action.CLOSE,
            Verdict.deny("sni-mismatch", gateway_policy(gateway), f"SNI {sni_c} does not match CONNECT {connect_c}"),
        )
    name = sni_c or connect_c or bound_c or ip
    if ip is None and name is not None and is_ip_literal(name):
        ip = name  # a CONNECT to an address: destinationCIDRs match it, as they do in decide_connect
    choice = select_listener(gateway, carries, port, name, ip)
    listener = choice.listener
    if listener is None:
        return ConnectionDecision(Action.CLOSE, _no_route(gateway), None, None, name)
    route = choice.route_hint
    if route is None and carries is Carries.HTTP and listener.carries_http and not (sni_c or connect_c or bound_c):
        # Plain HTTP that arrived with no name (transparent mode: only the original address is known). Each
        # request's Host names its destination, so each request picks its listener and route (403 if denied),
        # as absolute-form HTTP to the explicit proxy does.
        return ConnectionDecision(Action.HTTP, Verdict.allow("per-request", gateway_policy(gateway)), None, None, None)
    if route is None:
        verdict = decide_unmatched(gateway)
    elif listener.carries_http:
        verdict = Verdict.allow("route", _ref(route))  # the route's rules and deny apply per request
    else:
        verdict = decide_route(route)
    action = _action(listener, carries) if verdict.allowed else Action.CLOSE
    return ConnectionDecision(action, verdict, listener, route, name)


def _action(listener: Listener, carries: Carries) -> Action:
    if listener.intercepts:
        return Action.INTERCEPT
    if listener.protocol == "HTTP":
        return Action.HTTP
    if listener.passthrough:
        return Action.PASSTHROUGH
    return Action.UDP if carries is Carries.UDP else Action.TCP


def _ref(route: Route | None) -> str:
    return f"{route.kind}/{route.ref.namespace}/{route.ref.name}" if route is not None else ""


@dataclass(frozen=True, slots=True)
class RequestView:
    """What a request decision reads: canonical host from Host/:authority, and the rest as sent."""

    host: str
    port: int
    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    query: Mapping[str, list[str]] = field(default_factory=dict)
    scheme: str = "https"


@dataclass(frozen=True, slots=True)
class RequestDecision:
    verdict: Verdict
    route: Route | None = None
    rule: Rule | None = None
    rule_index: int | None = None
    direct_response: DirectResponse | None = None
    backend: WeightedBackend | None = None
    match: HttpRouteMatch | None = None  # the match that selected the rule (URLRewrite prefix replacement needs it)


def decide_request(
    snapshot: Snapshot, listener: Listener, request: RequestView, *, connection_host: str | None = None
) -> RequestDecision:
    """An HTTP request on an intercepting or plain-HTTP listener: HTTPRoute match, deny, direct answer, backend."""
    gateway = snapshot.gateway
    if connection_host is not None and connection_host != request.host:
        return RequestDecision(
            Verdict.deny(
                "host-mismatch",
                gateway_policy(gateway),
                f"Host {request.host} does not match the connection's destination {connection_host}",
                421,
            )
        )
    match = match_http(listener, request.host, request.method, request.path, request.headers, request.query)
    if match is None:
        return RequestDecision(decide_unmatched(gateway))
    route = match.route
    verdict = decide_route(route)
    if not verdict.allowed:
        return RequestDecision(verdict, route, match.rule, match.rule_index)
    rule = match.rule
    backend = _pick_backend(rule.backends)
    return RequestDecision(verdict, route, rule, match.rule_index, rule.filters.direct_response, backend, match.match)


def dns_name_allowed(snapshot: Snapshot, name: str) -> Verdict:
    """Whether the DNS listener resolves `name`: some listener has a route naming it (or taking any host).

    HTTPRoutes and TLSRoutes without hostnames take any host; L4 routes count only through their
    destinationHostnames (a CIDR-only route says nothing about names). Under allow-all every name resolves.
    """
    for listener in snapshot.gateway.listeners:
        for table in (listener.http_routes, listener.tls_routes):
            route = table.first(name)
            if route is not None:
                return decide_route(route) if not listener.carries_http else Verdict.allow("route", _ref(route))
        l4 = listener.l4_routes
        for bucket in (l4.exact.get(name), *(l4.wildcard.get(name[i + 1 :]) for i, c in enumerate(name) if c == ".")):
            if bucket is not None and bucket.routes:
                return decide_route(bucket.routes[0])
    return decide_unmatched(snapshot.gateway)


def parent_for(snapshot: Snapshot, route: Route | None, backend: Backend | None = None) -> StaticHost | None:
    """The parent proxy traffic goes through (DESIGN.md 4.1 parent mode), or None to dial directly.

    A parent Backend chosen by the request (or named by the route's backendRefs) wins; else the
    EgressGateway's `parentRef` sends everything through its parent.
    """
    if backend is not None and backend.parent is not None:
        return backend.parent.address
    if route is not None:
        for rule in route.rules:
            for ref in rule.backends:
                if ref.backend is not None and ref.backend.parent is not None:
                    return ref.backend.parent.address
    gateway_parent = snapshot.gateway.parent
    if gateway_parent is not None and gateway_parent.parent is not None:
        return gateway_parent.parent.address
    return None


def _pick_backend(backends: tuple[WeightedBackend, ...]) -> WeightedBackend | None:
    """Weighted choice among a rule's backendRefs (weight 0 never chosen)."""
    if not backends:
        return None
    weights = [max(0, b.weight) for b in backends]
    if sum(weights) == 0:
        return None
    return random.choices(backends, weights=weights, k=1)[0]
