"""addons/http_routes.py: each request on a decided connection is matched to its HTTPRoute rule.

Driven with mitmproxy's own test helpers (taddons.context, tflow), without sockets. What the hooks leave is what
a client and the later addons see: a denial (status, `x-egress-denied`, JSON reason and policy), the gateway's own
answer (DirectResponse, RequestRedirect), or the request rewritten for its first upstream candidate, with that
candidate - and nothing else - recorded as what the dial guard may open for it.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow, tutils

from addons.http_routes import HttpRoutes
from egressproxy.engine.answers import flow_record
from egressproxy.runtime.state import GatewayState
from egressproxy.upstreams import Upstream
from tests.support.addon_state import compile_snapshot, counter, state_for

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: https, protocol: HTTPS, tls: {mode: Terminate, caCertRef: {name: ca}}}
  - {name: http, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [api.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /static}}]
    backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: static}]
  - matches: [{path: {type: PathPrefix, value: /ai}}]
    backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: ai}]
  - matches: [{path: {type: Exact, value: /teapot}}]
    filters:
    - type: ExtensionRef
      extensionRef: {group: gateway.kgateway.dev, kind: DirectResponse, name: teapot}
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        hostname: new.example.com
        path: {type: ReplaceFullPath, replaceFullPath: /new}
        port: 8443
        statusCode: 301
  - matches: [{path: {type: PathPrefix, value: /moved}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}
  - matches: [{path: {type: PathPrefix, value: /gone}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: elsewhere.example.com}
  - matches: [{path: {type: PathPrefix, value: /headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-env, value: prod}]
        add: [{name: x-added, value: "1"}]
        remove: [x-internal]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add: [{name: x-seen-by, value: egressproxy}]
        remove: [server]
  - matches: [{path: {type: PathPrefix, value: /dynamic}}]
  - matches: [{path: {type: PathPrefix, value: /rewrite}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        hostname: upstream.example.com
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /api}
  - matches: [{path: {type: PathPrefix, value: /drained}}]
    backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: static, weight: 0}]
  - matches: [{path: {type: PathPrefix, value: /delegated}}]
    backendRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: child}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: blocked}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [blocked.example.com]
  rules: [{}]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressDenyPolicy
metadata: {name: no-blocked}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: blocked}
  denyResponse: {statusCode: 451, message: blocked is closed}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: plain}
spec:
  parentRefs: [{name: eg, sectionName: http}]
  hostnames: [plain.example.com]
  rules: [{}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: static}
spec: {type: Static, static: {hosts: [{host: static.internal, port: 8443}]}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: ai}
spec:
  type: AI
  ai:
    priorityGroups:
    - providers:
      - name: local
        openai:
          model: m
          hostOverride: {host: 127.0.0.1, port: 9000, scheme: http}
    - providers:
      - name: claude
        anthropic: {model: claude}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: DirectResponse
metadata: {name: teapot}
spec:
  status: 418
  body: short and stout
"""


@pytest.fixture(scope="module")
def snapshot():
    return compile_snapshot(CONFIG, ca="ca")


@pytest.fixture
def state(snapshot, tmp_path: Path) -> GatewayState:
    return state_for(snapshot, tmp_path)


def _tunnelled(state: GatewayState, authority: str, path: str = "/", *, host_header: str | None = None, **headers: str) -> http.HTTPFlow:
    """A request inside an intercepted CONNECT tunnel to `authority`:443 (what the CONNECT gate and the
    listener matcher recorded for the connection before any request)."""
    req = tutils.treq(
        host=authority, port=443, scheme=b"https", path=path.encode(), authority=b"",
        headers=http.Headers(host=host_header or authority, **headers), content=b"",
    )
    flow = tflow.tflow(req=req)
    record = state.connection(flow.client_conn.id)
    record.connect_host = record.host = record.sni = authority
    record.port, record.listener, record.carries, record.intercept = 443, "https", "TLS", True
    return flow


def _absolute_form(host: str, path: str = "/", **headers: str) -> http.HTTPFlow:
    """Plain HTTP to the explicit proxy: no tunnel, the URL names the destination."""
    req = tutils.treq(host=host, port=80, scheme=b"http", path=path.encode(), headers=http.Headers(host=host, **headers), content=b"")
    return tflow.tflow(req=req)


def _requestheaders(addon: HttpRoutes, flow: http.HTTPFlow) -> None:
    with taddons.context(addon):
        asyncio.run(addon.requestheaders(flow))


def _body(flow: http.HTTPFlow) -> dict[str, str]:
    assert flow.response is not None
    return json.loads(flow.response.content or b"")


# --- denials ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authority", "host_header", "path", "status", "reason", "policy", "error"),
    [
        # deny-all: a host no route names
        ("unrouted.example.com", None, "/", 403, "no-route", "EgressGateway/default/eg", "no route allows this destination"),
        # a routed host, but no rule of its route matches: unmatched, defaultPolicy applies
        ("api.example.com", None, "/elsewhere", 403, "no-route", "EgressGateway/default/eg", "no route allows this destination"),
        # the Host header must agree with the name the tunnel was decided on
        ("api.example.com", "evil.example.com", "/dynamic", 421, "host-mismatch", "",
         "Host evil.example.com does not match the connection's destination api.example.com"),
        # an EgressDenyPolicy on the route: its status and message
        ("blocked.example.com", None, "/", 451, "route-denied", "EgressDenyPolicy/default/no-blocked", "blocked is closed"),
        ("api.example.com", "bad_host!", "/dynamic", 400, "invalid-host", "EgressGateway/default/eg", "the destination host is not a valid name or address"),
    ],
)
def test_a_denied_request_gets_the_json_denial_and_is_counted(state, authority, host_header, path, status, reason, policy, error) -> None:
    flow = _tunnelled(state, authority, path, host_header=host_header)
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is not None and flow.response.status_code == status
    assert flow.response.headers["x-egress-denied"] == reason
    assert flow.response.headers["content-type"] == "application/json"
    body = _body(flow)
    assert (body["reason"], body["error"]) == (reason, error)
    if policy:
        assert body["policy"] == policy
    assert counter(state, "egress_denials_total", reason=reason) == 1
    assert state.connection(flow.client_conn.id).upstreams == {}  # nothing may be dialled for it
    assert flow_record(flow).decision == "deny"


def test_without_a_configuration_every_request_is_denied(tmp_path: Path) -> None:
    state = state_for(None, tmp_path)
    flow = _tunnelled(state, "api.example.com", "/dynamic")
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert flow.response.headers["x-egress-denied"] == "no-route"
    assert state.connection(flow.client_conn.id).upstreams == {}


def test_an_already_answered_request_is_left_alone(state) -> None:
    flow = _tunnelled(state, "api.example.com", "/dynamic")
    flow.response = tutils.tresp(status_code=407)
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response.status_code == 407
    assert state.connection(flow.client_conn.id).upstreams == {}


# --- allowed requests: what may be dialled ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected", "backend", "host_header"),
    [
        # no backendRefs: the requested destination, untrusted (the SSRF guard checks its addresses)
        ("/dynamic/x", Upstream("api.example.com", 443, "https"), None, "api.example.com"),
        # a Static Backend: its host, trusted as configured
        ("/static/x", Upstream("static.internal", 8443, "https", trusted=True), "default/static", "static.internal:8443"),
        # an AI Backend: the first priority group's provider at its hostOverride, plain HTTP
        ("/ai/v1/chat", Upstream("127.0.0.1", 9000, "http", trusted=True), "default/ai", "127.0.0.1:9000"),
    ],
)
def test_an_allowed_request_may_dial_exactly_its_first_candidate(state, path, expected, backend, host_header) -> None:
    flow = _tunnelled(state, "api.example.com", path)
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is None
    req = flow.request
    assert (req.host, req.port, req.scheme) == (expected.host, expected.port, expected.scheme)
    assert req.headers["host"] == host_header
    upstreams = state.connection(flow.client_conn.id).upstreams
    assert list(upstreams) == [expected.key]
    (chosen,) = upstreams.values()
    assert (chosen.host, chosen.port, chosen.scheme, chosen.trusted) == (expected.host, expected.port, expected.scheme, expected.trusted)
    assert chosen.backend_name == backend
    record = flow_record(flow)
    assert (record.listener, record.route, record.backend, record.decision) == ("https", "default/api", backend, "allow")


def test_the_ai_backends_first_candidate_is_its_first_groups_provider(state) -> None:
    flow = _tunnelled(state, "api.example.com", "/ai/v1/chat")
    _requestheaders(HttpRoutes(state), flow)
    (chosen,) = state.connection(flow.client_conn.id).upstreams.values()
    assert chosen.provider is not None and chosen.provider.name == "local"


def test_a_dynamic_request_replaces_the_trust_an_earlier_one_left(state) -> None:
    """The client named this destination: an earlier trusted entry for the same (host, port) must not survive."""
    flow = _tunnelled(state, "api.example.com", "/dynamic")
    record = state.connection(flow.client_conn.id)
    record.upstreams[("api.example.com", 443)] = Upstream("api.example.com", 443, trusted=True)
    _requestheaders(HttpRoutes(state), flow)
    assert record.upstreams[("api.example.com", 443)].trusted is False


@pytest.mark.parametrize("spelling", ["API.Example.COM.", "api.example.com:443"])
def test_the_host_header_is_compared_canonically(state, spelling: str) -> None:
    flow = _tunnelled(state, "api.example.com", "/dynamic", host_header=spelling)
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is None
    assert list(state.connection(flow.client_conn.id).upstreams) == [("api.example.com", 443)]


def test_proxy_credentials_are_never_forwarded(state) -> None:
    flow = _tunnelled(state, "api.example.com", "/dynamic", **{"proxy-authorization": "Basic Zm9vOmJhcg=="})
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is None
    assert "proxy-authorization" not in flow.request.headers


def test_absolute_form_plain_http_picks_its_listener_and_takes_the_basic_user_as_identity(state) -> None:
    """No tunnel: the request itself picks the listener; the Proxy-Authorization user attributes (unverified)
    and is removed before the request goes on."""
    credentials = "Basic " + base64.b64encode(b"team-a/agent:x").decode()
    flow = _absolute_form("plain.example.com", "/x", **{"proxy-authorization": credentials})
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is None
    assert "proxy-authorization" not in flow.request.headers
    record = flow_record(flow)
    assert (record.listener, record.route) == ("http", "default/plain")
    assert list(state.connection(flow.client_conn.id).upstreams) == [("plain.example.com", 80)]
    assert str(record.identity) == "team-a/agent"


def test_absolute_form_to_an_unrouted_host_is_denied(state) -> None:
    flow = _absolute_form("unrouted.example.com", "/x")
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert flow.response.headers["x-egress-denied"] == "no-route"


def test_absolute_form_with_a_disagreeing_host_header_is_421(state) -> None:
    flow = _absolute_form("plain.example.com", "/x")
    flow.request.headers["host"] = "evil.example.com"
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is not None and flow.response.status_code == 421
    assert flow.response.headers["x-egress-denied"] == "host-mismatch"


# --- the gateway's own answers and filters ----------------------------------------------------------------------


def test_a_direct_response_is_answered_by_the_gateway_and_nothing_is_dialled(state) -> None:
    flow = _tunnelled(state, "api.example.com", "/teapot")
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is not None
    assert (flow.response.status_code, flow.response.content) == (418, b"short and stout")
    assert flow.response.headers["content-type"] == "text/plain"
    assert state.connection(flow.client_conn.id).upstreams == {}


@pytest.mark.parametrize(
    ("path", "status", "location"),
    [
        # scheme, hostname, port and ReplaceFullPath all set
        ("/old/page?q=1", 301, "https://new.example.com:8443/new"),
        # ReplacePrefixMatch replaces the matched PathPrefix only (default status 302, the request's own host)
        ("/moved/page?q=1", 302, "https://api.example.com/v2/page?q=1"),
        ("/moved", 302, "https://api.example.com/v2"),
        # only the hostname: the path is kept as it was
        ("/gone/x?y=1", 302, "https://elsewhere.example.com/gone/x?y=1"),
    ],
)
def test_a_request_redirect_answers_with_the_location(state, path: str, status: int, location: str) -> None:
    flow = _tunnelled(state, "api.example.com", path)
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is not None and flow.response.status_code == status
    assert flow.response.headers["location"] == location
    assert state.connection(flow.client_conn.id).upstreams == {}


def test_the_request_header_modifier_sets_adds_and_removes(state) -> None:
    flow = _tunnelled(state, "api.example.com", "/headers", **{"x-env": "dev", "x-internal": "secret", "x-added": "0"})
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is None
    headers = flow.request.headers
    assert headers.get_all("x-env") == ["prod"]
    assert headers.get_all("x-added") == ["0", "1"]
    assert "x-internal" not in headers


def _respond(addon: HttpRoutes, flow: http.HTTPFlow, **headers: str) -> http.Response:
    flow.response = tutils.tresp(headers=http.Headers(**headers))
    with taddons.context(addon):
        addon.responseheaders(flow)
    return flow.response


def test_the_response_header_modifier_applies_and_the_response_streams(state) -> None:
    addon = HttpRoutes(state)
    flow = _tunnelled(state, "api.example.com", "/headers")
    _requestheaders(addon, flow)
    response = _respond(addon, flow, server="origin/1.0", **{"content-type": "text/event-stream"})
    assert response.headers["x-seen-by"] == "egressproxy"
    assert "server" not in response.headers
    assert response.stream is True  # SSE and large bodies reach the client as they arrive
    assert addon.rules == {}  # the rule is forgotten with the response


def test_a_response_without_a_modifier_is_untouched_and_streams(state) -> None:
    addon = HttpRoutes(state)
    flow = _tunnelled(state, "api.example.com", "/dynamic")
    _requestheaders(addon, flow)
    response = _respond(addon, flow, server="origin/1.0")
    assert response.headers["server"] == "origin/1.0" and "x-seen-by" not in response.headers
    assert response.stream is True


def test_a_failed_request_forgets_its_rule(state) -> None:
    addon = HttpRoutes(state)
    flow = _tunnelled(state, "api.example.com", "/headers")
    _requestheaders(addon, flow)
    assert flow.id in addon.rules
    addon.error(flow)
    assert addon.rules == {}


def test_an_error_while_deciding_denies_and_is_counted(state, monkeypatch) -> None:
    """Fail closed: a hook that raises answers 403 internal-error instead of letting the request through."""
    addon = HttpRoutes(state)
    monkeypatch.setattr(addon, "_view", lambda *a: 1 / 0)
    flow = _tunnelled(state, "api.example.com", "/dynamic")
    _requestheaders(addon, flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert flow.response.headers["x-egress-denied"] == "internal-error"
    assert counter(state, "egress_hook_errors_total", addon="HttpRoutes", hook="requestheaders") == 1
    assert state.connection(flow.client_conn.id).upstreams == {}


# --- parent mode and HTTP/2 -------------------------------------------------------------------------------------

PARENT_CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: https, protocol: HTTPS, tls: {mode: Terminate, caCertRef: {name: ca}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [api.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /via-parent}}]
    backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: parent}]
  - matches: [{path: {type: PathPrefix, value: /static}}]
    backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: static}]
  - matches: [{path: {type: PathPrefix, value: /direct}}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: parent}
spec:
  type: Static
  static: {hosts: [{host: parent.internal, port: 3128}]}
  parent: {}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: static}
spec: {type: Static, static: {hosts: [{host: static.internal, port: 8443}]}}
"""


@pytest.fixture(scope="module")
def parent_snapshot():
    return compile_snapshot(PARENT_CONFIG, ca="ca")


def test_a_rule_naming_a_parent_backend_sends_the_request_to_its_destination_through_the_parent(parent_snapshot, tmp_path) -> None:
    state = state_for(parent_snapshot, tmp_path)
    flow = _tunnelled(state, "api.example.com", "/via-parent/x")
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is None
    assert (flow.request.host, flow.request.port) == ("api.example.com", 443)  # the original destination
    assert flow.server_conn.via == ("http", ("parent.internal", 3128))
    upstreams = state.connection(flow.client_conn.id).upstreams
    assert upstreams[("parent.internal", 3128)].trusted  # the parent may be dialled, as configured


@pytest.mark.parametrize("path", ["/static/x", "/direct/x"])
def test_other_rules_dial_directly(parent_snapshot, tmp_path, path: str) -> None:
    state = state_for(parent_snapshot, tmp_path)
    flow = _tunnelled(state, "api.example.com", path)
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is None and flow.server_conn.via is None
    assert ("parent.internal", 3128) not in state.connection(flow.client_conn.id).upstreams


def test_on_http2_a_backends_authority_replaces_the_pseudo_header(state) -> None:
    flow = _tunnelled(state, "api.example.com", "/static/x")
    flow.client_conn.alpn = b"h2"  # an HTTP/2 request only arrives on an h2 connection (request_head.py checks)
    flow.request.http_version = "HTTP/2.0"
    flow.request.authority = "api.example.com"
    flow.request.headers.pop("host")
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is None
    assert flow.request.authority == "static.internal:8443"
    assert "host" not in flow.request.headers


def test_a_url_rewrite_changes_the_path_and_the_host_sent_but_not_what_is_dialled(state) -> None:
    flow = _tunnelled(state, "api.example.com", "/rewrite/v1/x?q=1")
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is None
    assert flow.request.path == "/api/v1/x?q=1"
    assert flow.request.headers["host"] == "upstream.example.com"
    assert list(state.connection(flow.client_conn.id).upstreams) == [("api.example.com", 443)]


def test_a_rule_whose_backends_leave_no_candidate_is_503_no_healthy_backend(state) -> None:
    flow = _tunnelled(state, "api.example.com", "/drained")
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is not None and flow.response.status_code == 503
    assert flow.response.headers["x-egress-error"] == "no-healthy-backend"
    assert _body(flow)["reason"] == "no-healthy-backend"
    assert state.connection(flow.client_conn.id).upstreams == {}


# --- basicAuth on absolute-form requests ------------------------------------------------------------------------

AUTH_CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: deny-all
  listeners: [{{name: http, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: plain}}
spec:
  parentRefs: [{{name: eg, sectionName: http}}]
  hostnames: [plain.example.com]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: HTTPListenerPolicy
metadata: {{name: auth}}
spec:
  targetRefs: [{{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}}]
  basicAuth: {{credentialsSecretRef: {{name: users}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: users}}
stringData:
  .htpasswd: "{entry}"
"""


@pytest.fixture(scope="module")
def auth_snapshot():
    from passlib.hash import bcrypt

    return compile_snapshot(AUTH_CONFIG.format(entry="team-a/billing:" + bcrypt.using(rounds=4).hash("pw")))


def _basic(user_password: str) -> str:
    return "Basic " + base64.b64encode(user_password.encode()).decode()


@pytest.mark.parametrize("credentials", [None, _basic("team-a/billing:wrong"), _basic("nobody:pw")])
def test_a_missing_or_wrong_proxy_credential_is_407_with_a_challenge(auth_snapshot, tmp_path, credentials) -> None:
    state = state_for(auth_snapshot, tmp_path)
    headers = {"proxy-authorization": credentials} if credentials else {}
    flow = _absolute_form("plain.example.com", "/x", **headers)
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is not None and flow.response.status_code == 407
    assert flow.response.headers["proxy-authenticate"].startswith("Basic ")
    assert flow.response.headers["x-egress-denied"] == "proxy-auth-required"
    assert _body(flow)["policy"] == "HTTPListenerPolicy/default/auth"
    assert state.connection(flow.client_conn.id).upstreams == {}


def test_a_verified_proxy_credential_is_the_identity_and_is_not_forwarded(auth_snapshot, tmp_path) -> None:
    state = state_for(auth_snapshot, tmp_path)
    flow = _absolute_form("plain.example.com", "/x", **{"proxy-authorization": _basic("team-a/billing:pw")})
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is None
    assert "proxy-authorization" not in flow.request.headers
    assert str(flow_record(flow).identity) == "team-a/billing"


def test_inside_a_tunnel_the_credential_was_checked_at_connect(auth_snapshot, tmp_path) -> None:
    """A request in a CONNECT tunnel carries no proxy credentials of its own: it is not challenged again."""
    state = state_for(auth_snapshot, tmp_path)
    req = tutils.treq(host="plain.example.com", port=80, scheme=b"http", path=b"/x", headers=http.Headers(host="plain.example.com"), content=b"")
    flow = tflow.tflow(req=req)
    record = state.connection(flow.client_conn.id)
    record.connect_host, record.listener = "plain.example.com", "http"
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is None


def test_a_rule_whose_only_backend_is_an_unmodelled_kind_is_never_forwarded(state) -> None:
    """kgateway's route delegation (a backendRef to an HTTPRoute) validates, but this gateway does not send the
    request anywhere: not to the delegate, and not to the requested destination either."""
    flow = _tunnelled(state, "api.example.com", "/delegated/x")
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is not None and flow.response.status_code == 503
    assert flow.response.headers["x-egress-error"] == "no-healthy-backend"
    assert "gateway.networking.k8s.io/HTTPRoute default/child" in _body(flow)["error"] + _body(flow).get("detail", "")
    assert state.connection(flow.client_conn.id).upstreams == {}


# --- hostile input (docs/reliability.md): heads refused before any decision -----------------------------------


@pytest.mark.parametrize(
    ("mutate", "status", "reason"),
    [
        (lambda f: setattr(f.request, "http_version", "HTTP/0.9"), 400, "malformed-request"),
        (lambda f: f.request.headers.__setitem__("x-folded", "a\r\n b"), 400, "malformed-request"),
        (lambda f: f.request.headers.pop("host"), 400, "malformed-request"),
        (lambda f: setattr(f.request, "authority", "evil.example.com:443"), 421, "host-mismatch"),
    ],
    ids=["http-0.9", "obs-fold", "no-host", "absolute-target-names-another-host"],
)
def test_hostile_heads_inside_a_tunnel_are_refused_before_any_decision(state, mutate, status, reason) -> None:
    flow = _tunnelled(state, "api.example.com", "/static/x")
    mutate(flow)
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is not None
    assert (flow.response.status_code, flow.response.headers["x-egress-denied"]) == (status, reason)
    assert state.connection(flow.client_conn.id).upstreams == {}


def test_an_absolute_target_naming_the_tunnel_host_is_served(state) -> None:
    flow = _tunnelled(state, "api.example.com", "/static/x")
    flow.request.authority = "API.example.com.:443"
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is None


def test_a_routed_request_carries_the_idle_steps_of_the_snapshot_it_was_decided_with(state, snapshot) -> None:
    """The HookTable skips those steps for this flow (egressproxy/runtime/idle_steps.py); asked per snapshot."""
    asked = []

    def idle_steps(s):
        asked.append(s)
        return frozenset({"rate-limit"})

    state.idle_steps = idle_steps
    flow = _tunnelled(state, "api.example.com", "/static/x")
    assert flow_record(flow).idle_steps == frozenset()
    _requestheaders(HttpRoutes(state), flow)
    # the snapshot's, plus ai-guardrails: this request's decision has no TrafficPolicy `ai` (per route)
    assert flow_record(flow).idle_steps == {"rate-limit", "ai-guardrails"} and asked == [snapshot]


LIMITED = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: https, protocol: HTTPS, tls: {mode: Terminate, caCertRef: {name: ca}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: limited}
spec:
  parentRefs: [{name: eg}]
  hostnames: [limited.example.com]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: free}
spec:
  parentRefs: [{name: eg}]
  hostnames: [free.example.com]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: ten}
spec:
  requests: 10
  window: 1m
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: limited}]
"""


@pytest.mark.parametrize(("authority", "rate_limit_idle"), [("limited.example.com", False), ("free.example.com", True)])
def test_a_route_without_a_rate_limit_skips_the_step_though_another_route_has_one(tmp_path: Path, authority: str,
                                                                                   rate_limit_idle: bool) -> None:
    """Idle steps per route: the snapshot has a RateLimitPolicy (so the step is awake per snapshot), but only the
    limited route's requests get a budget; the other route's requests skip the rate-limit hooks."""
    from egressproxy.runtime.idle_steps import IdleSteps
    from addons.rate_limits import RateLimits

    state = state_for(compile_snapshot(LIMITED, ca="ca"), tmp_path)
    state.idle_steps = IdleSteps([RateLimits(state)])
    assert state.snapshot is not None and "rate-limit" not in state.idle_steps(state.snapshot)
    flow = _tunnelled(state, authority)
    _requestheaders(HttpRoutes(state), flow)
    assert flow.response is None
    frec = flow_record(flow)
    assert (frec.rate_limit is None) is rate_limit_idle
    assert ("rate-limit" in frec.idle_steps) is rate_limit_idle


@pytest.mark.parametrize(("path", "query"), [("/v1/x?a=1&b=2&a=3", {"a": ["1", "3"], "b": ["2"]}), ("/v1/x", {})])
def test_the_request_view_reads_the_query_only_from_a_target_that_has_one(state, path: str, query: dict[str, list[str]]) -> None:
    flow = _tunnelled(state, "api.example.com", path)
    view, _ = HttpRoutes(state)._view(flow, state.connection(flow.client_conn.id))
    assert view.query == query and view.path == path


# --- the decision kept per connection (egressproxy/decision_reuse.py) ---------------------------------------------


def test_keep_alive_requests_reuse_the_decision_and_a_reload_replaces_it(state, snapshot) -> None:
    """The second request of a connection gets the first one's decision (same upstream, recorded as before);
    after a reload that moves the route elsewhere the next request on that connection is decided anew."""
    addon = HttpRoutes(state)
    first = _tunnelled(state, "api.example.com", "/static/a")
    _requestheaders(addon, first)
    record = state.connection(first.client_conn.id)
    memo = record.decision_memo
    assert memo is not None and memo.snapshot is snapshot
    second = _next_on(first, "api.example.com", "/static/a")
    _requestheaders(addon, second)
    assert record.decision_memo is memo
    assert (second.request.host, second.request.port) == ("static.internal", 8443)
    assert flow_record(second).route == "default/api" and flow_record(second).upstream == flow_record(first).upstream

    state.swap(compile_snapshot(CONFIG.replace("hostnames: [api.example.com]", "hostnames: [api2.example.com]"), ca="ca"))
    third = _next_on(first, "api.example.com", "/static/a")
    _requestheaders(addon, third)
    assert third.response is not None and third.response.headers["x-egress-denied"] == "no-route"
    assert record.decision_memo is not None and record.decision_memo.snapshot is state.snapshot


def _next_on(first: http.HTTPFlow, authority: str, path: str) -> http.HTTPFlow:
    """Another request on `first`'s connection (keep-alive inside the same tunnel)."""
    req = tutils.treq(host=authority, port=443, scheme=b"https", path=path.encode(), authority=b"",
                      headers=http.Headers(host=authority), content=b"")
    flow = tflow.tflow(req=req)
    flow.client_conn = first.client_conn
    return flow
