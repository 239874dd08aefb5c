"""addons/upstream_tls.py: which parameters each upstream TLS connection is verified under, and what a failed
handshake leaves for the gateway-errors addon.

Driven with mitmproxy's own test helpers (taddons.context, tflow) and in-memory handshakes against a pyOpenSSL
server: a request routed to a Backend with a BackendTLSPolicy is verified under that policy (its CA, its
hostname as SNI), any other request under the gateway trust; a handshake that fails leaves the typed
`FlowRecord.failure` (reason `upstream-tls-invalid`, the policy named) on the request that waited for it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from mitmproxy import connection, http, tls
from mitmproxy.addons.tlsconfig import TlsConfig
from mitmproxy.proxy.context import Context
from mitmproxy.test import taddons, tflow, tutils

from addons.upstream_tls import UpstreamTls
from egressproxy.engine.answers import flow_record
from egressproxy.outcomes import GatewayFailure
from egressproxy.runtime.state import GatewayState
from egressproxy.snapshot import Snapshot
from tests.support.addon_state import compile_snapshot, counter, state_for
from tests.support.pki import TestCA
from tests.unit.test_upstream_tls import handshake, server_for

POLICY = "BackendTLSPolicy/default/pinned-ca"

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  listeners: [{{name: https, protocol: HTTPS, tls: {{mode: Terminate, caCertRef: {{name: ca}}}}}}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: pinned}}
spec: {{type: Static, static: {{hosts: [{{host: pinned.internal, port: 443}}]}}}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: plain}}
spec: {{type: Static, static: {{hosts: [{{host: plain.internal, port: 443}}]}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: origin-ca}}
stringData:
  ca.crt: |
{ca_pem}
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: pinned-ca}}
spec:
  targetRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: pinned}}]
  validation:
    caCertificateRefs: [{{name: origin-ca}}]
    hostname: origin.test
"""


@pytest.fixture(scope="module")
def origin_ca() -> TestCA:
    return TestCA("origin root")


@pytest.fixture(scope="module")
def snapshot(origin_ca: TestCA) -> Snapshot:
    ca_pem = textwrap.indent(origin_ca.cert_pem.decode(), "    ")
    return compile_snapshot(CONFIG.format(ca_pem=ca_pem), ca="ca")


@pytest.fixture
def state(snapshot: Snapshot, tmp_path: Path) -> GatewayState:
    return state_for(snapshot, tmp_path)


def _request(client: connection.Client, host: str, *, backend: str | None, scheme: str = "https") -> http.HTTPFlow:
    """A request as HttpRoutes left it: host and port set to the chosen upstream, its backend recorded."""
    port = 443 if scheme == "https" else 80
    req = tutils.treq(host=host, port=port, scheme=scheme.encode(), path=b"/", headers=http.Headers(host=host), content=b"")
    flow = tflow.tflow(client_conn=client, req=req)
    flow_record(flow).backend = backend
    return flow


def _tls_start(client: connection.Client, host: str, port: int = 443) -> tls.TlsData:
    server = connection.Server(address=(host, port), sni=host)  # as mitmproxy's HTTP layer opens it
    context = Context(client, None)  # type: ignore[arg-type]  # options are read from ctx
    context.server = server
    return tls.TlsData(server, context)


@pytest.fixture
def addon(state: GatewayState):
    addon = UpstreamTls(state)
    with taddons.context(TlsConfig(), addon) as tctx:
        context_options = tctx.options
        assert context_options.tls_version_server_min  # TlsConfig's options are there, as when running
        yield addon


@pytest.mark.parametrize(
    ("host", "backend", "source", "verified_name"),
    [
        # a Backend with a BackendTLSPolicy: its CA and hostname (also the SNI sent)
        ("pinned.internal", "default/pinned", POLICY, "origin.test"),
        # a Backend without a policy, and the requested destination: the gateway trust, the dialled name
        ("plain.internal", "default/plain", "the system store", "plain.internal"),
        ("api.example.com", None, "the system store", "api.example.com"),
    ],
)
def test_a_connection_is_verified_under_its_requests_backend_policy_else_the_gateway_trust(
    addon: UpstreamTls, host: str, backend: str | None, source: str, verified_name: str
) -> None:
    client = tflow.tclient_conn()
    flow = _request(client, host, backend=backend)
    addon.requestheaders(flow)
    assert flow.response is None
    start = _tls_start(client, host)
    addon.tls_start_server(start)
    assert start.ssl_conn is not None
    verification = start.ssl_conn.egress  # type: ignore[attr-defined]
    assert verification.params.source.startswith(source)
    assert verification.name == verified_name
    assert start.conn.sni == verified_name


def test_a_plain_http_request_to_a_backend_with_a_policy_is_sent_over_tls(addon: UpstreamTls) -> None:
    flow = _request(tflow.tclient_conn(), "pinned.internal", backend="default/pinned", scheme="http")
    addon.requestheaders(flow)
    assert flow.request.scheme == "https"


def test_a_plain_http_request_without_a_policy_stays_plain(addon: UpstreamTls) -> None:
    flow = _request(tflow.tclient_conn(), "plain.internal", backend="default/plain", scheme="http")
    addon.requestheaders(flow)
    assert flow.request.scheme == "http"


def test_tls_without_an_http_request_uses_the_connection_records_backend(addon: UpstreamTls, state: GatewayState) -> None:
    client = tflow.tclient_conn()
    state.connection(client.id).backend = "default/pinned"
    start = _tls_start(client, "pinned.internal")
    addon.tls_start_server(start)
    assert start.ssl_conn.egress.params.source == POLICY  # type: ignore[union-attr]


def test_a_connection_someone_else_built_is_left_alone(addon: UpstreamTls) -> None:
    client = tflow.tclient_conn()
    start = _tls_start(client, "pinned.internal")
    theirs = object()
    start.ssl_conn = theirs  # type: ignore[assignment]
    addon.tls_start_server(start)
    assert start.ssl_conn is theirs


@pytest.mark.parametrize(
    ("issued_for", "signed_by_origin_ca", "cause"),
    [
        ("origin.test", False, "unknown CA"),  # a certificate the policy's CA did not sign
        ("elsewhere.test", True, "hostname mismatch"),  # signed, but for another name than the policy's hostname
    ],
)
def test_a_failed_handshake_leaves_the_typed_failure_on_the_waiting_request(
    addon: UpstreamTls, origin_ca: TestCA, issued_for: str, signed_by_origin_ca: bool, cause: str
) -> None:
    client = tflow.tclient_conn()
    flow = _request(client, "pinned.internal", backend="default/pinned")
    addon.requestheaders(flow)
    start = _tls_start(client, "pinned.internal")
    addon.tls_start_server(start)
    issuer = origin_ca if signed_by_origin_ca else TestCA("someone else")
    assert handshake(start.ssl_conn, server_for(issuer.issue(issued_for))) is not None  # type: ignore[arg-type]
    start.conn.error = "TLS handshake failed"
    addon.tls_failed_server(start)
    failure = flow_record(flow).failure
    assert isinstance(failure, GatewayFailure)
    assert (failure.reason, failure.policy) == ("upstream-tls-invalid", POLICY)
    assert cause in failure.detail and "origin.test" in failure.detail
    # the failed connection is never reused for a later request on this client connection
    assert start.conn.address is not None and start.conn.address[0].endswith(".upstream-tls.invalid")


def test_a_good_handshake_leaves_no_failure(addon: UpstreamTls, origin_ca: TestCA) -> None:
    client = tflow.tclient_conn()
    flow = _request(client, "pinned.internal", backend="default/pinned")
    addon.requestheaders(flow)
    start = _tls_start(client, "pinned.internal")
    addon.tls_start_server(start)
    assert handshake(start.ssl_conn, server_for(origin_ca.issue("origin.test"))) is None  # type: ignore[arg-type]
    assert flow_record(flow).failure is None


def test_a_failure_under_the_gateway_trust_names_no_policy(addon: UpstreamTls) -> None:
    client = tflow.tclient_conn()
    flow = _request(client, "api.example.com", backend=None)
    addon.requestheaders(flow)
    start = _tls_start(client, "api.example.com")
    addon.tls_start_server(start)
    assert handshake(start.ssl_conn, server_for(TestCA("untrusted").issue("api.example.com"))) is not None  # type: ignore[arg-type]
    addon.tls_failed_server(start)
    failure = flow_record(flow).failure
    assert failure is not None and failure.reason == "upstream-tls-invalid" and failure.policy == ""


def test_requests_wanting_different_policies_for_one_new_connection_are_refused(addon: UpstreamTls, origin_ca: TestCA) -> None:
    """Two requests waiting for one connection to pinned.internal want different parameters: neither is chosen."""
    client = tflow.tclient_conn()
    under_policy = _request(client, "pinned.internal", backend="default/pinned")
    under_gateway = _request(client, "pinned.internal", backend=None)
    addon.requestheaders(under_policy)
    addon.requestheaders(under_gateway)
    start = _tls_start(client, "pinned.internal")
    addon.tls_start_server(start)
    # even a certificate the policy would accept is refused
    assert handshake(start.ssl_conn, server_for(origin_ca.issue("origin.test"))) is not None  # type: ignore[arg-type]
    addon.tls_failed_server(start)
    for flow in (under_policy, under_gateway):
        failure = flow_record(flow).failure
        assert failure is not None and "different policies" in failure.detail


def test_a_live_connection_verified_under_other_parameters_is_retired_from_reuse(addon: UpstreamTls) -> None:
    client = tflow.tclient_conn()
    first = _request(client, "pinned.internal", backend=None)
    addon.requestheaders(first)
    start = _tls_start(client, "pinned.internal")
    addon.tls_start_server(start)
    addon.responseheaders(first)
    second = _request(client, "pinned.internal", backend="default/pinned")  # now under the policy
    addon.requestheaders(second)
    assert start.conn.address is not None and start.conn.address[0].endswith(".upstream-tls.invalid")


def test_a_live_connection_under_the_same_parameters_stays_reusable(addon: UpstreamTls) -> None:
    client = tflow.tclient_conn()
    first = _request(client, "pinned.internal", backend="default/pinned")
    addon.requestheaders(first)
    start = _tls_start(client, "pinned.internal")
    addon.tls_start_server(start)
    addon.responseheaders(first)
    addon.requestheaders(_request(client, "pinned.internal", backend="default/pinned"))
    assert start.conn.address == ("pinned.internal", 443)


def test_a_policy_that_cannot_be_applied_answers_502_before_dialling(addon: UpstreamTls, state: GatewayState, monkeypatch) -> None:
    params = state.dialer.tls_params(state.snapshot, "default/pinned")
    broken = type(params)(params.source, problems=("Secret default/origin-ca has no ca.crt",))
    monkeypatch.setattr(addon, "params_for", lambda backend: broken)
    flow = _request(tflow.tclient_conn(), "pinned.internal", backend="default/pinned")
    addon.requestheaders(flow)
    assert flow.response is not None and flow.response.status_code == 502
    assert flow.response.headers["x-egress-error"] == "upstream-tls-invalid"
    assert b"has no ca.crt" in (flow.response.content or b"")
    assert counter(state, "egress_upstream_errors_total", reason="upstream-tls-invalid") == 1


def test_an_origin_asking_for_a_client_certificate_we_lack_is_the_tentative_cause_until_it_answers(
    addon: UpstreamTls, origin_ca: TestCA
) -> None:
    """TLS 1.3: the handshake completes on our side, then the origin closes without a word - the request is
    told a client certificate was required; if the origin does send data after all, that cause is withdrawn."""
    client = tflow.tclient_conn()
    flow = _request(client, "pinned.internal", backend="default/pinned")
    addon.requestheaders(flow)
    start = _tls_start(client, "pinned.internal")
    addon.tls_start_server(start)
    origin = server_for(origin_ca.issue("origin.test"), require_client_from=TestCA("client issuer"))
    handshake(start.ssl_conn, origin)  # type: ignore[arg-type]
    addon.tls_established_server(start)
    failure = flow_record(flow).failure
    assert failure is not None and failure.reason == "upstream-tls-invalid"
    assert failure.detail.startswith("client certificate required: origin.test") and failure.policy == POLICY
    start.ssl_conn.egress.on_data()  # type: ignore[union-attr]  # the origin's first byte
    assert flow_record(flow).failure is None


def test_an_origin_that_asks_for_nothing_leaves_no_tentative_cause(addon: UpstreamTls, origin_ca: TestCA) -> None:
    client = tflow.tclient_conn()
    flow = _request(client, "pinned.internal", backend="default/pinned")
    addon.requestheaders(flow)
    start = _tls_start(client, "pinned.internal")
    addon.tls_start_server(start)
    assert handshake(start.ssl_conn, server_for(origin_ca.issue("origin.test"))) is None  # type: ignore[arg-type]
    addon.tls_established_server(start)
    assert flow_record(flow).failure is None


def test_a_destination_changed_after_routing_is_bound_again_in_the_request_hook(addon: UpstreamTls) -> None:
    client = tflow.tclient_conn()
    flow = _request(client, "pinned.internal", backend="default/pinned")
    addon.requestheaders(flow)
    flow.request.host = "plain.internal"  # a later addon chose another destination and backend
    flow_record(flow).backend = "default/plain"
    addon.request(flow)
    start = _tls_start(client, "plain.internal")
    addon.tls_start_server(start)
    assert not start.ssl_conn.egress.params.from_policy  # type: ignore[union-attr]
    assert addon.flow_keys[flow.id] == (client.id, ("plain.internal", 443))


def test_an_error_while_setting_up_tls_refuses_the_connection_and_is_counted(
    addon: UpstreamTls, state: GatewayState, origin_ca: TestCA, monkeypatch
) -> None:
    """Hooks fail open, and TlsConfig would then connect without the policy: the addon refuses instead."""
    client = tflow.tclient_conn()
    addon.requestheaders(_request(client, "pinned.internal", backend="default/pinned"))

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("context cache corrupted")

    monkeypatch.setattr(state.dialer, "tls_connection", broken)
    start = _tls_start(client, "pinned.internal")
    addon.tls_start_server(start)
    assert start.ssl_conn is not None
    assert handshake(start.ssl_conn, server_for(origin_ca.issue("origin.test"))) is not None  # a good certificate, refused
    assert counter(state, "egress_hook_errors_total", addon="UpstreamTls", hook="tls_start_server") == 1


def test_a_closed_client_connection_leaves_nothing_behind(addon: UpstreamTls) -> None:
    client = tflow.tclient_conn()
    flow = _request(client, "pinned.internal", backend="default/pinned")
    addon.requestheaders(flow)
    start = _tls_start(client, "pinned.internal")
    addon.tls_start_server(start)
    addon.client_disconnected(client)
    assert (addon.clients, addon.servers, addon.flow_keys) == ({}, {}, {})


def test_a_closed_server_connection_is_no_longer_offered_for_reuse(addon: UpstreamTls) -> None:
    from mitmproxy.proxy.server_hooks import ServerConnectionHookData

    client = tflow.tclient_conn()
    addon.requestheaders(_request(client, "pinned.internal", backend="default/pinned"))
    start = _tls_start(client, "pinned.internal")
    addon.tls_start_server(start)
    addon.server_disconnected(ServerConnectionHookData(start.conn, client))  # type: ignore[arg-type]
    assert start.conn.id not in addon.servers
    assert addon.clients[client.id][("pinned.internal", 443)].live == {}
