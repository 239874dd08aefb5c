"""What the gateway does with a CONNECT, a connection and a request: pure functions over the snapshot.

The data plane's addons and `egressproxy explain` call these same functions, so a dry run tells exactly what
serving would do. Nothing here touches mitmproxy or the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

from egressproxy.config.problems import ObjectRef
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
from egressproxy.prompt_guard import AiPolicy
from egressproxy.provider_endpoints import provider_endpoint
from egressproxy.rate_limits import RateLimit
from egressproxy.regions import REGION_NOT_ALLOWED, RegionCheck, RegionFilter, RegionPolicy, filter_candidates
from egressproxy.request_policies import PolicyReport
from egressproxy.traffic_retries import TrafficSettings, merge_settings
from egressproxy.snapshot import (
    AIProvider,
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
from egressproxy.upstreams import RandomSource, Upstream, order_candidates

__all__ = [
    "Action",
    "ConnectionDecision",
    "RequestDecision",
    "RequestView",
    "decide_connect",
    "decide_connection",
    "decide_request",
    "ai_policy_for",
    "gateway_policy",
    "rate_limit_for",
    "traffic_for",
    "request_candidates",
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
    # Where an allowed request goes, in try order (seam 1): the first is dialled, failover walks the rest.
    # Empty for a denial, and for a rule whose backendRefs leave no candidate (every weight 0).
    upstreams: tuple[Upstream, ...] = ()
    match: HttpRouteMatch | None = None  # the match that selected the rule (URLRewrite prefix replacement needs it)
    # The rate-limit budget of an allowed request: every RateLimitPolicy that applies, merged field by field
    # (most specific wins each field); None when none applies.
    rate_limit: RateLimit | None = None
    # TrafficPolicy `ai` of an allowed request (guardrails, enrichment, defaults, model lists), merged per part.
    ai: AiPolicy | None = None
    # Every RegionAllowListPolicy check made on the candidates (the refused ones are not in `upstreams`).
    region_checks: tuple[RegionCheck, ...] = ()
    # Denials Report-mode policies would have made here (an EgressDenyPolicy, a region check).
    reports: tuple[PolicyReport, ...] = ()


def decide_request(
    snapshot: Snapshot,
    listener: Listener,
    request: RequestView,
    *,
    connection_host: str | None = None,
    rng: RandomSource | None = None,
) -> RequestDecision:
    """An HTTP request on an intercepting or plain-HTTP listener: HTTPRoute match, deny, direct answer, and the
    upstream candidates in try order (weighted choice within a priority group draws from `rng`)."""
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
        verdict = decide_unmatched(gateway)
        if not verdict.allowed:
            return RequestDecision(verdict)
        # allow-all serves it as a catch-all route would: to the requested destination, unmodified.
        regions = _by_region(snapshot, listener, None, None, request_candidates(snapshot, None, request, rng))
        if regions.denial is not None:
            return RequestDecision(_region_denial(regions.denial), region_checks=regions.checks)
        upstreams = regions.kept
        limit = rate_limit_for(snapshot, listener, None, None, upstreams)
        ai = ai_policy_for(snapshot, listener, None, None, upstreams)
        reports = _region_reports(regions.checks)
        return RequestDecision(
            verdict, upstreams=upstreams, rate_limit=limit, ai=ai, region_checks=regions.checks, reports=reports
        )
    route = match.route
    verdict = decide_route(route)
    if not verdict.allowed:
        return RequestDecision(verdict, route, match.rule, match.rule_index)
    rule = match.rule
    regions = _by_region(snapshot, listener, route, match.rule_index, request_candidates(snapshot, rule, request, rng))
    if regions.denial is not None and rule.filters.direct_response is None and rule.filters.redirect is None:
        return RequestDecision(_region_denial(regions.denial), route, rule, match.rule_index, region_checks=regions.checks)
    upstreams = regions.kept
    limit = rate_limit_for(snapshot, listener, route, match.rule_index, upstreams)
    ai = ai_policy_for(snapshot, listener, route, match.rule_index, upstreams)
    reports = _deny_reports(route) + _region_reports(regions.checks)
    return RequestDecision(
        verdict, route, rule, match.rule_index, rule.filters.direct_response, upstreams, match.match, limit, ai,
        regions.checks, reports,
    )


def ai_policy_for(
    snapshot: Snapshot, listener: Listener, route: Route | None, rule_index: int | None, upstreams: tuple[Upstream, ...]
) -> AiPolicy | None:
    """The TrafficPolicies' `ai` for this request's rule, route, first Backend, listener and gateway, each part
    from the most specific policy that sets it (egressproxy/prompt_guard.py), compiled ahead of the request."""
    table = snapshot.compiled.ai
    if not table:
        return None
    backend = upstreams[0].policy_backend if upstreams else None
    return table.for_request(
        snapshot.policies,
        route.ref if route is not None else None,
        backend.ref if backend is not None and backend.type != "Service" else None,
        listener.name,
        rule_index,
    )


def _by_region(
    snapshot: Snapshot, listener: Listener, route: Route | None, rule: int | None, candidates: tuple[Upstream, ...]
) -> RegionFilter:
    """The candidates a RegionAllowListPolicy lets be tried (the most specific one for each candidate's Backend,
    the route and the listener decides), before any is tried: a refused provider is never dialled."""
    compiled = snapshot.compiled
    if not compiled.regions:
        return RegionFilter(candidates, ())
    route_ref = route.ref if route is not None else None

    def policy_for(upstream: Upstream) -> RegionPolicy | None:
        attached = upstream.policy_backend
        backend = attached.ref if attached is not None and attached.type != "Service" else None
        return compiled.region_policy(snapshot.policies, route_ref, backend, listener.name, rule)

    return filter_candidates(candidates, policy_for)


def _region_denial(check: RegionCheck) -> Verdict:
    return Verdict.deny(REGION_NOT_ALLOWED, check.policy.name, check.detail)


def _region_reports(checks: tuple[RegionCheck, ...]) -> tuple[PolicyReport, ...]:
    return tuple(PolicyReport(REGION_NOT_ALLOWED, c.policy.name, c.detail) for c in checks if c.would_deny and c.allowed)


def _deny_reports(route: Route) -> tuple[PolicyReport, ...]:
    deny = route.deny
    if deny is None or not deny.report:
        return ()
    return (PolicyReport("route-denied", str(deny.policy), deny.message or "route-denied"),)


def rate_limit_for(
    snapshot: Snapshot, listener: Listener, route: Route | None, rule_index: int | None, upstreams: tuple[Upstream, ...]
) -> RateLimit | None:
    """The one budget of the RateLimitPolicies attached to this request's rule, route, first Backend, listener
    and gateway, merged field by field (egressproxy/rate_limit_precedence.py), compiled ahead of the request."""
    table = snapshot.compiled.rate_limits
    if not table:
        return None
    backend = upstreams[0].policy_backend if upstreams else None
    return table.for_request(
        snapshot.policies,
        route.ref if route is not None else None,
        backend.ref if backend is not None and backend.type != "Service" else None,
        listener.name,
        rule_index,
    )


def traffic_for(
    snapshot: Snapshot, listener: str | None, route: ObjectRef | None, rule_index: int | None, upstreams: tuple[Upstream, ...]
) -> TrafficSettings:
    """TrafficPolicy retries and timeout for this request: the most specific attached policy that sets each
    (rule > route > first Backend > listener > gateway), from their compiled forms."""
    compiled = snapshot.compiled.traffic
    if not compiled:
        return NO_TRAFFIC_SETTINGS
    backend = upstreams[0].policy_backend if upstreams else None
    attached = snapshot.policies.policies(
        "TrafficPolicy",
        route=route,
        backend=backend.ref if backend is not None and backend.type != "Service" else None,
        listener=listener,
        rule=rule_index,
    )
    found = [settings for policy in attached if (settings := compiled.get(policy.ref)) is not None]
    return merge_settings(found) if found else NO_TRAFFIC_SETTINGS


NO_TRAFFIC_SETTINGS = TrafficSettings()


def request_candidates(
    snapshot: Snapshot, rule: Rule | None, request: RequestView, rng: RandomSource | None = None
) -> tuple[Upstream, ...]:
    """The upstream candidates of an allowed request, in try order.

    A rule without backendRefs (or no rule: allow-all) forwards to the requested destination, untrusted. Each
    backendRef adds: a Static Backend's first host (trusted); a Service's cluster DNS name (trusted); a parent
    Backend's original destination, reached through that parent; an AI Backend's providers, one candidate per
    provider and priority group (group index = priority). A backendRef's weight applies within group 0; a
    weight-0 backendRef is never tried, its fallback groups included. A backendRef of a kind the gateway does
    not model adds none, so a rule of only those has no candidate (never the requested destination). The
    gateway's `parentRef` carries every candidate that has no parent Backend of its own.
    """
    gateway_parent = parent_for(snapshot, None)
    if rule is None or not (rule.backends or rule.unresolved_backends):
        return (_dynamic(request, None, gateway_parent),)
    candidates: list[Upstream] = []
    for ref in rule.backends:
        if ref.weight > 0:
            candidates.extend(_backend_candidates(ref, request, gateway_parent))
    return order_candidates(candidates, rng)


def _dynamic(request: RequestView, backend: Backend | None, parent: StaticHost | None, weight: int = 1) -> Upstream:
    return _upstream(request.host, request.port, request.scheme, backend, False, parent, weight=weight)


def _upstream(
    host: str,
    port: int,
    scheme: str,
    backend: Backend | None,
    trusted: bool,
    parent: StaticHost | None,
    *,
    weight: int = 1,
    group: int = 0,
    provider: AIProvider | None = None,
) -> Upstream:
    sni = host if scheme == "https" and not is_ip_literal(host) else None
    return Upstream(host, port, scheme, sni, backend, trusted, parent, group, weight, provider)


def _backend_candidates(ref: WeightedBackend, request: RequestView, gateway_parent: StaticHost | None) -> list[Upstream]:
    backend = ref.backend
    if backend is None:
        if ref.service_host is None:
            return []
        # A Service (Gateway API's default backendRef kind), named by its ref so metrics and explain show it.
        service = Backend(ref.ref, "Service")
        port = ref.port or request.port
        return [_upstream(ref.service_host, port, request.scheme, service, True, gateway_parent, weight=ref.weight)]
    return _candidates_of(backend, ref.weight, ref.port, request, gateway_parent)


def _member_candidates(backend: Backend, request: RequestView, gateway_parent: StaticHost | None) -> list[Upstream]:
    """An AIBackend's `groups`: each group's Backends expanded (their own priority groups kept in order after
    one another), numbered after every group before it, each member's weight on its first group; weight 0 is
    never tried. Each candidate keeps its own Backend (credentials, region label, metrics) and names the
    AIBackend in `via` (policies)."""
    out: list[Upstream] = []
    base = 0
    for group in backend.members:
        depth = 1
        for member in group:
            if member.weight <= 0:
                continue
            expanded = _candidates_of(member.backend, member.weight, None, request, gateway_parent)
            out.extend(replace(u, group=base + u.group, via=backend) for u in expanded)
            depth = max(depth, *(u.group + 1 for u in expanded)) if expanded else depth
        base += depth
    return out


def _candidates_of(
    backend: Backend, weight: int, port: int | None, request: RequestView, gateway_parent: StaticHost | None
) -> list[Upstream]:
    if backend.members:
        return _member_candidates(backend, request, gateway_parent)
    if backend.parent is not None:
        # Parent mode: the original destination, through the parent (which resolves it and applies its policy).
        return [_dynamic(request, backend, backend.parent.address, weight)]
    if backend.static_hosts:
        static = backend.static_hosts[0]
        return [_upstream(static.host, port or static.port, request.scheme, backend, True, gateway_parent, weight=weight)]
    if backend.ai_groups:
        out: list[Upstream] = []
        for group, providers in enumerate(backend.ai_groups):
            for provider in providers:
                endpoint = provider_endpoint(provider)
                if endpoint is None:
                    continue
                out.append(
                    _upstream(
                        endpoint.host,
                        endpoint.port,
                        endpoint.scheme,
                        backend,
                        endpoint.trusted,
                        gateway_parent,
                        weight=weight if group == 0 else 1,
                        group=group,
                        provider=provider,
                    )
                )
        return out
    # Other Backend types (DynamicForwardProxy, AWS, MCP without hosts): the requested destination.
    return [_dynamic(request, backend, gateway_parent, weight)]


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
