"""HTTPRoutes on plain and intercepted HTTP: match, deny, direct answers, filters, backends, streaming.

Each request is decided on the name the connection was decided on (CONNECT authority or SNI); the Host header
must agree with it. An allowed request is dialled at the name that was checked (or the chosen backend), and
that destination is recorded as the only one the dial guard lets this connection open for it.
"""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.coretypes import multidict
from mitmproxy.proxy.mode_specs import RegularMode

from egressproxy.decision_reuse import decide_reusing
from egressproxy.decisions import RequestDecision, RequestView, gateway_policy, parent_for, route_name, traffic_for
from egressproxy.engine.answers import answer_denied, error_response, flow_record, make_response
from egressproxy.engine.guard import fail_closed
from egressproxy.engine.policy_reports import note_region_checks, note_reports
from egressproxy.flowrecord import Check, ConnectionRecord, FlowRecord, Verdict
from egressproxy.hostnames import InvalidHostname, authority_host, canonical_host
from egressproxy.matching import Carries, select_listener
from egressproxy.request_head import head_problem
from egressproxy.request_filters import apply_header_modifier, rewrite_path
from egressproxy.responses import GatewayAnswer
from egressproxy.runtime.idle_steps import request_idle_steps
from egressproxy.runtime.state import GatewayState
from egressproxy.snapshot import Backend, HttpRouteMatch, Listener, RequestRedirect, Rule, Snapshot, URLRewrite
from egressproxy.upstreams import Upstream


class HttpRoutes:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.rules: dict[str, Rule] = {}  # flow id -> matched rule, for response filters

    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        snapshot = self.state.snapshot
        record = self.state.connection(flow.client_conn.id)
        frec = flow_record(flow)
        # Credentials for this proxy are never forwarded to an origin (absolute-form requests carry them).
        credentials = flow.request.headers.pop("proxy-authorization", None)
        if snapshot is not None and not await self._authenticated(flow, snapshot, record, credentials):
            return
        frec.identity = record.identity
        if snapshot is None:
            answer_denied(flow, Verdict.deny("no-route", message="no configuration loaded"))
            return
        frec.gateway = snapshot.gateway.name
        frec.generation = snapshot.generation
        frec.idle_steps = self.state.idle_steps(snapshot)  # the steps this request's snapshot gives nothing to do
        req = flow.request
        problem = head_problem(req.http_version, req.headers.fields, flow.client_conn.alpn)
        if problem is not None:
            self._deny(flow, Verdict.deny("malformed-request", gateway_policy(snapshot.gateway), problem, 400))
            return
        try:
            view, connection_host = self._view(flow, record)
            target = _target_host(req)
        except InvalidHostname:
            self._deny(flow, Verdict.deny("invalid-host", gateway_policy(snapshot.gateway), status_code=400))
            return
        if target is not None and target != view.host:
            detail = f"the request target names {target}, the Host header {view.host}"
            self._deny(flow, Verdict.deny("host-mismatch", gateway_policy(snapshot.gateway), detail, 421))
            return
        listener = self._listener(snapshot, record, view)
        if listener is None:
            self._deny(flow, Verdict.deny("no-route", gateway_policy(snapshot.gateway)))
            return
        frec.listener, frec.host, frec.port = listener.name, view.host, view.port
        decision, record.decision_memo = decide_reusing(record.decision_memo, snapshot, listener, view, connection_host)
        frec.route = route_name(decision.route)
        frec.route_ref = decision.route.ref if decision.route is not None else None
        frec.rule = decision.rule_index
        frec.verdict = decision.verdict
        frec.checks.append(_route_check("route", decision.verdict, frec.route))
        if not decision.verdict.allowed:
            self._deny(flow, decision.verdict)
            note_region_checks(flow, decision.region_checks)
            return
        note_region_checks(flow, decision.region_checks)  # mitmweb shows the checks explain prints
        note_reports(self.state.metrics, flow, decision.reports)  # Report-mode EgressDenyPolicy, regions
        frec.rate_limit = decision.rate_limit  # checked by addons/rate_limits.py, next
        frec.ai = decision.ai  # applied by addons/ai_guardrails.py
        # Per route: a request its decision gives no budget or `ai` policy skips those steps' hooks.
        frec.idle_steps = request_idle_steps(frec.idle_steps, decision.rate_limit is not None, decision.ai is not None)
        self._forward(flow, record, frec, decision, view)

    async def _authenticated(
        self, flow: http.HTTPFlow, snapshot: Snapshot, record: ConnectionRecord, credentials: str | None
    ) -> bool:
        """Absolute-form requests to the explicit proxy carry their own proxy credentials (a tunnel's were
        checked at CONNECT; transparent clients have none): verified when a basicAuth policy applies."""
        if record.connect_host is not None or not isinstance(flow.client_conn.proxy_mode, RegularMode):
            return True
        identity, challenge = await self.state.proxy_auth.verify(snapshot, record.listener, credentials)
        if challenge is not None:
            self._deny(flow, challenge)
            return False
        if identity is not None:
            record.identity = identity
        return True

    def _view(self, flow: http.HTTPFlow, record: ConnectionRecord) -> tuple[RequestView, str | None]:
        req = flow.request
        authority = req.host_header or req.authority or req.host
        host = canonical_host(authority_host(authority))
        # The name the connection was decided on: SNI / CONNECT authority / absolute-form URL host.
        connection_host = record.sni or record.connect_host
        # mitmproxy rewrites an HTTP/1 absolute-form target to origin-form before any hook runs (so
        # `first_line_format` already says "relative"), but keeps the URL's host in `request.host`; without a
        # tunnel, an explicit-proxy request's destination is that host (from the Host header only when the
        # request had no URL), and the Host header must agree with it.
        if connection_host is None and (req.first_line_format == "absolute" or isinstance(flow.client_conn.proxy_mode, RegularMode)):
            connection_host = canonical_host(req.host)
        headers = _header_map(req.headers)
        query = _query_map(req.query) if "?" in req.path else {}  # mitmproxy parses the URL for `query`
        view = RequestView(host, req.port, req.method.upper(), req.path, headers, query, req.scheme)
        return view, connection_host

    def _listener(self, snapshot: Snapshot, record: ConnectionRecord, view: RequestView) -> Listener | None:
        name = record.listener
        if name is not None:
            return snapshot.gateway.listener(name)
        # Absolute-form HTTP to the explicit proxy: no tunnel, so the request itself picks the listener.
        return select_listener(snapshot.gateway, Carries.HTTP, view.port, view.host, None).listener

    def _deny(self, flow: http.HTTPFlow, verdict: Verdict) -> None:
        self.state.metrics.denials.labels(verdict.reason).inc()
        answer_denied(flow, verdict)

    def _forward(self, flow: http.HTTPFlow, record: ConnectionRecord, frec: FlowRecord, decision: RequestDecision, view: RequestView) -> None:
        """Send an allowed request to its first upstream candidate and record that candidate as the one
        destination the dial guard lets this request open (addons/failover.py may then send it through the
        failover hop, which walks the rest)."""
        rule = decision.rule
        req = flow.request
        if rule is not None:
            frec.request_timeout = rule.request_timeout
            frec.attempt_timeout = rule.backend_request_timeout
            filters = rule.filters
            if filters.direct_response is not None:
                direct = filters.direct_response
                flow.response = make_response(GatewayAnswer(direct.status, (("content-type", "text/plain"),), direct.body.encode()))
                frec.checks.append(Check("direct-response", str(direct.ref), "allow"))
                return
            if filters.redirect is not None:
                self._redirect(flow, filters.redirect, view, decision.match)
                return
        if not decision.upstreams:
            unresolved = rule.unresolved_backends if rule is not None else ()
            why = f"{', '.join(unresolved)}: not a kind this gateway sends traffic to" if unresolved else "no backendRef of the rule leaves a candidate to try"
            flow.response = error_response(flow, "no-healthy-backend", why)
            return
        upstream = decision.upstreams[0]
        frec.upstream = upstream
        frec.candidates = decision.upstreams  # addons/failover.py walks them when there is more than one
        snapshot = self.state.snapshot
        assert snapshot is not None
        traffic = traffic_for(snapshot, frec.listener, frec.route_ref, frec.rule, decision.upstreams)
        frec.retry = rule.retry if rule is not None and rule.retry is not None else traffic.retry
        if frec.request_timeout is None:  # an HTTPRoute rule's own timeouts.request wins over a TrafficPolicy's
            frec.request_timeout = traffic.request_timeout
        if upstream.backend is not None:
            backend = upstream.backend
            # A Service keeps its kind (BackendTLSPolicy may target a Service by `Kind/ns/name`).
            frec.backend = str(backend.ref) if backend.type == "Service" else upstream.backend_name
        if rule is not None:
            apply_header_modifier(req.headers, rule.filters.request_headers)
            if rule.filters.url_rewrite is not None:
                req.path = rewrite_path(req.path, rule.filters.url_rewrite, decision.match)
        self._via_parent(flow, record, decision, target_backend=upstream.backend)
        req.host = upstream.host  # dial the checked name (inside a tunnel this replaces an address with the name)
        req.port = upstream.port
        req.scheme = upstream.scheme
        # After `req.host` (whose setter rewrites the Host header): URLRewrite's hostname, else a backend's.
        rewritten_host = rule.filters.url_rewrite.hostname if rule is not None and rule.filters.url_rewrite is not None else None
        if rewritten_host:
            _set_authority(req, rewritten_host)
        elif (upstream.host, upstream.port) != (view.host, view.port):
            _set_authority(req, _authority(upstream.host, upstream.port, upstream.scheme))
        # A destination the client named replaces any trust or Backend DNSPolicy an earlier request left for it.
        record.upstreams[upstream.key] = upstream
        if rule is not None and rule.filters.response_headers is not None:
            self.rules[flow.id] = rule

    def _via_parent(self, flow: http.HTTPFlow, record: ConnectionRecord, decision: RequestDecision, target_backend: Backend | None) -> None:
        """Parent mode: a parent Backend chosen by the rule, else the gateway's parentRef, carries the request."""
        snapshot = self.state.snapshot
        assert snapshot is not None
        parent = parent_for(snapshot, None, target_backend)
        if parent is None:
            return
        flow.server_conn.via = ("http", (parent.host, parent.port))
        _allow_upstream(record, parent.host, parent.port, trusted=True)

    @staticmethod
    def _redirect(flow: http.HTTPFlow, redirect: RequestRedirect, view: RequestView, match: HttpRouteMatch | None) -> None:
        scheme = redirect.scheme or flow.request.scheme
        host = redirect.hostname or view.host
        port = redirect.port
        path_rw = redirect.path
        if path_rw is not None and path_rw.type == "ReplaceFullPath":
            path = path_rw.value
        else:  # ReplacePrefixMatch replaces the PathPrefix that matched, as URLRewrite does (query kept)
            path = rewrite_path(flow.request.path, URLRewrite(path=path_rw) if path_rw is not None else None, match)
        location = f"{scheme}://{host}{':' + str(port) if port else ''}{path}"
        status = redirect.status_code
        flow.response = make_response(GatewayAnswer(status, (("location", location),), b""))

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        rule = self.rules.pop(flow.id, None)
        if rule is not None:
            apply_header_modifier(flow.response.headers, rule.filters.response_headers)
        flow.response.stream = True  # never buffer a whole response: SSE and large bodies flow as they arrive

    def response(self, flow: http.HTTPFlow) -> None:
        self.rules.pop(flow.id, None)  # answered without responseheaders (a later addon denied it, e.g. 429)

    def error(self, flow: http.HTTPFlow) -> None:
        self.rules.pop(flow.id, None)


def _allow_upstream(record: ConnectionRecord, host: str, port: int, *, trusted: bool = False, backend: Backend | None = None) -> None:
    """Let the dial guard open (host, port) for this connection; `trusted` when a configured backend named it
    (Static hosts, a Service): the SSRF guard then trusts its addresses. A destination the client named is
    dynamic forwarding: any trust or backend DNSPolicy left from an earlier request is replaced."""
    record.upstreams[(host, port)] = Upstream(host, port, trusted=trusted, backend=backend)


def _target_host(req: http.Request) -> str | None:
    """The canonical host an absolute-form target (inside a tunnel) or an HTTP/2 `:authority` names, if any.

    An origin takes the target's host over the Host header (RFC 9112 3.2.2), so it must name the same host as
    the Host header the decision keys on; outside tunnels mitmproxy has already moved it into `request.host`.
    """
    return canonical_host(authority_host(req.authority)) if req.authority else None


def _header_map(headers: http.Headers) -> dict[str, str]:
    """Lower-case name -> values joined with ",", in one pass (mitmproxy's `keys()`/`get_all()` are each linear
    per call, so a request with thousands of headers would stall the event loop for seconds)."""
    out: dict[str, str] = {}
    for raw_name, raw_value in headers.fields:
        name = raw_name.decode("utf-8", "surrogateescape").lower()
        value = raw_value.decode("utf-8", "surrogateescape")
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


def _query_map(query: multidict.MultiDictView[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in query.fields:
        out.setdefault(name, []).append(value)
    return out


def _authority(host: str, port: int, scheme: str) -> str:
    default = 443 if scheme == "https" else 80
    return host if port == default else f"{host}:{port}"


def _set_authority(req: http.Request, authority: str) -> None:
    """The Host header on HTTP/1, `:authority` on HTTP/2."""
    if req.is_http2 or req.is_http3:
        req.authority = authority
        req.headers.pop("host", None)
    else:
        req.headers["host"] = authority


def _route_check(stage: str, verdict: Verdict, route: str | None) -> Check:
    """The routing decision as a trace step: the deciding object (EgressPolicy, route, gateway default)."""
    return Check(stage, verdict.policy or (f"route {route}" if route else ""), "allow" if verdict.allowed else "deny", verdict.reason)
