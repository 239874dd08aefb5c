"""addons/listener_match.py: which layer a connection gets in `next_layer`, by what it carries and its port.

Each case builds mitmproxy's own NextLayer over a context (tflow's client, a proxy mode, the first client bytes)
and reads back the layer the addon chose and what it wrote into the connection's record: the decision a
client experiences as interception, passthrough, relay or a closed connection.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from mitmproxy import exceptions, options
from mitmproxy.addons import proxyserver
from mitmproxy.proxy import context, events, layer, layers
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from addons.listener_match import ListenerMatch, looks_like_http
from egressproxy.engine.direct_relay import DirectRelayLayer
from egressproxy.engine.layers import CloseLayer
from egressproxy.engine.mitmproxy_boundary import HttpUpstreamProxy
from tests.support.addon_state import compile_snapshot, counter, state_for

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: https, protocol: HTTPS, tls: {mode: Terminate, caCertRef: {name: ca}}}
  - {name: pass, protocol: TLS, tls: {mode: Passthrough}}
  - {name: http, protocol: HTTP, port: 80}
  - {name: db, protocol: TCP, port: 5432}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [api.example.com]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: plain}
spec:
  parentRefs: [{name: eg, sectionName: http}]
  hostnames: [plain.example.com]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: pinned}
spec:
  parentRefs: [{name: eg, sectionName: pass}]
  hostnames: [pinned.example.org]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressL4Route
metadata: {name: db}
spec:
  parentRefs: [{name: eg, sectionName: db}]
  rules:
  - matches: [{destinationCIDRs: [10.1.0.0/16]}]
"""

PARENT = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  parentRef: {name: parent}
  listeners:
  - {name: pass, protocol: TLS, tls: {mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: pinned}
spec:
  parentRefs: [{name: eg, sectionName: pass}]
  hostnames: [pinned.example.org]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: parent}
spec:
  type: Static
  static: {hosts: [{host: parent.internal, port: 3128}]}
  parent: {}
"""


TCP_ONLY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: http, protocol: HTTP, port: 80}
  - {name: db, protocol: TCP, port: 5432}
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressL4Route
metadata: {name: db}
spec:
  parentRefs: [{name: eg, sectionName: db}]
  rules:
  - matches: [{destinationCIDRs: [10.1.0.0/16]}]
"""


@pytest.fixture(scope="module")
def snapshot():
    return compile_snapshot(CONFIG, ca="ca")


def client_hello(sni: str) -> bytes:
    """The first flight of a real TLS client (Python's ssl) for `sni`."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _options() -> options.Options:
    with taddons.context(proxyserver.Proxyserver()) as tctx:
        return tctx.options


def _next_layer(mode: str, data: bytes, address: tuple[str, int] | None) -> layer.NextLayer:
    client = tflow.tclient_conn()
    client.proxy_mode = ProxyMode.parse(mode)
    ctx = context.Context(client, _options())
    ctx.server.address = address
    nl = layer.NextLayer(ctx)
    if data:
        nl.events.append(events.DataReceived(client, data))
    return nl


def _decide(addon: ListenerMatch, mode: str, data: bytes, address: tuple[str, int] | None, connect_host: str | None = None):
    nl = _next_layer(mode, data, address)
    record = addon.state.connection(nl.context.client.id)
    record.connect_host = connect_host
    with taddons.context(addon):
        addon.next_layer(nl)
    return nl, record


@pytest.fixture
def addon(snapshot, tmp_path: Path) -> ListenerMatch:
    return ListenerMatch(state_for(snapshot, tmp_path))


def test_a_routed_sni_in_a_tunnel_is_intercepted(addon) -> None:
    nl, record = _decide(addon, "regular", client_hello("api.example.com"), ("api.example.com", 443), "api.example.com")
    assert isinstance(nl.layer, layers.ServerTLSLayer)
    assert record.intercept and record.listener == "https" and record.sni == "api.example.com"
    assert record.verdict.allowed


def test_an_sni_that_disagrees_with_the_connect_authority_is_closed(addon) -> None:
    nl, record = _decide(addon, "regular", client_hello("evil.example.com"), ("api.example.com", 443), "api.example.com")
    assert isinstance(nl.layer, CloseLayer)
    assert record.verdict.reason == "sni-mismatch"
    assert counter(addon.state, "egress_denials_total", reason="sni-mismatch") == 1


def test_a_passthrough_route_relays_tls_untouched(addon) -> None:
    nl, record = _decide(addon, "transparent", client_hello("pinned.example.org"), ("203.0.113.7", 443))
    assert isinstance(nl.layer, layers.TCPLayer) and nl.layer.flow is None  # ignore=True: no flow, no decryption
    assert isinstance(nl.layer, DirectRelayLayer) and nl.layer.meter is record  # relayed directly once open
    assert not record.intercept and record.listener == "pass"
    assert nl.context.server.address == ("pinned.example.org", 443)  # dials the decided name, not the client's IP
    assert ("pinned.example.org", 443) in record.upstreams


def test_a_partial_client_hello_waits_for_more_bytes(addon) -> None:
    hello = client_hello("api.example.com")
    with pytest.raises(exceptions.AddonHalt):
        _decide(addon, "regular", hello[:20], ("api.example.com", 443), "api.example.com")


def test_tls_straight_to_the_explicit_proxy_port_is_closed(addon) -> None:
    nl, record = _decide(addon, "regular", client_hello("api.example.com"), None)
    assert isinstance(nl.layer, CloseLayer) and record.decided


def test_plain_http_to_the_explicit_proxy_is_left_to_mitmproxy(addon) -> None:
    nl, record = _decide(addon, "regular", b"GET http://plain.example.com/ HTTP/1.1\r\n\r\n", None)
    assert nl.layer is None and not record.decided  # routed per request by the HTTP routes addon


def test_transparent_plain_http_gets_the_http_layer(addon) -> None:
    nl, record = _decide(addon, "transparent", b"GET / HTTP/1.1\r\nHost: plain.example.com\r\n\r\n", ("10.9.9.9", 80))
    assert isinstance(nl.layer, layers.HttpLayer)  # each request is then routed by its Host
    assert record.carries == "HTTP" and record.decided


@pytest.mark.parametrize(("ip", "allowed"), [("10.1.2.3", True), ("10.2.0.1", False)])
def test_transparent_raw_tcp_is_relayed_only_where_an_l4_route_allows(addon, ip: str, allowed: bool) -> None:
    nl, record = _decide(addon, "transparent", b"\x00\x01binary", (ip, 5432))
    assert isinstance(nl.layer, layers.TCPLayer if allowed else CloseLayer)
    assert record.verdict.allowed is allowed


def test_server_speaks_first_ports_are_decided_before_any_client_byte(tmp_path) -> None:
    """Only a TCP listener could take port 5432: decided on start, so a server's banner can flow first."""
    addon = ListenerMatch(state_for(compile_snapshot(TCP_ONLY), tmp_path))
    nl, record = _decide(addon, "transparent", b"", ("10.1.2.3", 5432))
    assert isinstance(nl.layer, layers.TCPLayer) and record.decided


def test_ports_other_listeners_could_take_wait_for_the_first_client_bytes(addon) -> None:
    with pytest.raises(exceptions.AddonHalt):
        _decide(addon, "transparent", b"", ("10.1.2.3", 443))


def test_without_a_configuration_transparent_connections_are_closed(tmp_path) -> None:
    addon = ListenerMatch(state_for(None, tmp_path))
    nl, record = _decide(addon, "transparent", b"GET / HTTP/1.1\r\n\r\n", ("10.9.9.9", 80))
    assert isinstance(nl.layer, CloseLayer) and not record.verdict.allowed


def test_a_passthrough_route_through_a_parent_tunnels_by_name(tmp_path) -> None:
    addon = ListenerMatch(state_for(compile_snapshot(PARENT), tmp_path))
    nl, record = _decide(addon, "transparent", client_hello("pinned.example.org"), ("203.0.113.7", 443))
    assert isinstance(nl.layer, HttpUpstreamProxy)
    assert nl.layer.tunnel_connection.address == ("parent.internal", 3128)
    assert not isinstance(nl.layer.child_layer, DirectRelayLayer)  # through a parent: mitmproxy's own relay
    assert nl.context.server.address == ("pinned.example.org", 443)  # the parent is asked for the name
    assert record.upstreams[("parent.internal", 3128)].trusted


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"GET / HTTP/1.1\r\n", True), (b"PRI * HTTP/2.0\r\n", True), (b"GETX / HTTP/1.1", False), (b"\x16\x03\x01", False)],
)
def test_looks_like_http(data: bytes, expected: bool) -> None:
    assert looks_like_http(data) is expected
