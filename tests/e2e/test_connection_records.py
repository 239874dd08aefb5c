"""Every connection ends in a finished record: its bytes each way and its duration reach /metrics.

Bytes are counted as received on the wire, per client connection: `upstream` is everything the client sent
(the CONNECT head included), `downstream` everything the upstream sent. Passthrough tunnels fire no mitmproxy
hook at all, so these tests are what shows they are metered.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support.rawproxy import connect

pytestmark = pytest.mark.e2e

GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: deny-all
  listeners:
{listeners}
  upstreamTLS:
    hostAliases:
    - ip: 127.0.0.1
      hostnames: [pinned.example.test, tcp.example.test]
"""

TLS_PASSTHROUGH = """  - name: tls
    protocol: TLS
    tls: {mode: Passthrough}"""

PINNED_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: pinned}
spec:
  parentRefs: [{name: eg, sectionName: tls}]
  hostnames: [pinned.example.test]
"""

TCP_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: raw}
spec:
  parentRefs: [{name: eg, sectionName: tcp}]
  rules: [{}]
"""


class ReadThenReply:
    """A raw TCP origin: reads exactly `expect` bytes, answers with `reply`, then closes."""

    def __init__(self, expect: int, reply: bytes) -> None:
        self.expect, self.reply = expect, reply
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(10)
            while len(self.received) < self.expect:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                self.received += chunk
            conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def origin() -> Iterator[Callable[[int, bytes], ReadThenReply]]:
    started: list[ReadThenReply] = []

    def start(expect: int, reply: bytes) -> ReadThenReply:
        started.append(ReadThenReply(expect, reply))
        return started[-1]

    yield start
    for o in started:
        o.close()


def client_hello(sni: str) -> bytes:
    """A real TLS ClientHello for `sni` (what the passthrough listener routes on), without finishing TLS."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_for_metric(gw: object, name: str, expected: float, timeout: float = 10.0, **labels: str) -> str:
    """Poll /metrics until `name{labels}` reaches `expected` (the record is finished when the client is gone)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = gw.metrics()  # type: ignore[attr-defined]
        if metric(text, name, **labels) >= expected:
            return text
        time.sleep(0.05)  # polling a condition, bounded by the deadline
    raise AssertionError(f"{name}{labels} never reached {expected}:\n" + "\n".join(
        line for line in text.splitlines() if line.startswith("egress_connection")
    ))


def tunnel(gw: object, authority: str, payload: bytes, reply_size: int) -> tuple[int, bytes]:
    """CONNECT, send `payload`, read `reply_size` bytes, close; returns (bytes of the CONNECT head, reply)."""
    head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode()
    sock, answer = connect(gw.host, gw.port, authority)  # type: ignore[attr-defined]
    with sock:
        assert answer.status == 200, (answer.status, answer.body)
        sock.sendall(payload)
        received = answer.body
        while len(received) < reply_size:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return len(head), received


def test_a_passthrough_tunnel_is_metered_each_way_and_its_end_observed(gateway, origin):
    hello = client_hello("pinned.example.test")
    payload = hello + b"\x17\x03\x03" + bytes(5000)  # the hello, then opaque bytes the gateway never reads
    reply = b"\x16\x03\x03" + bytes(70000)
    server = origin(len(payload), reply)
    gw = gateway(GATEWAY.format(listeners=TLS_PASSTHROUGH), PINNED_ROUTE)
    route = dict(gateway="default/eg", listener="tls", route="default/pinned")

    head, received = tunnel(gw, f"pinned.example.test:{server.port}", payload, len(reply))

    assert received == reply
    assert server.received == payload
    text = wait_for_metric(gw, "egress_connection_duration_seconds_count", 1, **route)
    assert metric(text, "egress_connection_bytes_total", **route, direction="upstream") == head + len(payload)
    assert metric(text, "egress_connection_bytes_total", **route, direction="downstream") == len(reply)
    assert metric(text, "egress_connection_duration_seconds_count", **route) == 1


def test_a_tcp_route_relay_is_metered_each_way_and_its_end_observed(gateway, origin):
    payload = b"\x00\x01binary request " * 100
    reply = b"binary answer " * 300
    server = origin(len(payload), reply)
    listener = f"""  - name: tcp
    protocol: TCP
    port: {server.port}"""
    gw = gateway(GATEWAY.format(listeners=listener), TCP_ROUTE)
    route = dict(gateway="default/eg", listener="tcp", route="default/raw")

    head, received = tunnel(gw, f"tcp.example.test:{server.port}", payload, len(reply))

    assert received == reply
    text = wait_for_metric(gw, "egress_connection_duration_seconds_count", 1, **route)
    assert metric(text, "egress_connection_bytes_total", **route, direction="upstream") == head + len(payload)
    assert metric(text, "egress_connection_bytes_total", **route, direction="downstream") == len(reply)


def test_two_tunnels_add_up_and_a_denied_connect_is_a_record_of_its_own(gateway, origin):
    hello = client_hello("pinned.example.test")
    first, second = origin(len(hello), b"a" * 10), origin(len(hello), b"b" * 20)
    gw = gateway(GATEWAY.format(listeners=TLS_PASSTHROUGH), PINNED_ROUTE)
    route = dict(gateway="default/eg", listener="tls", route="default/pinned")
    head1, _ = tunnel(gw, f"pinned.example.test:{first.port}", hello, 10)
    head2, _ = tunnel(gw, f"pinned.example.test:{second.port}", hello, 20)
    sock, answer = connect(gw.host, gw.port, "unrouted.example.test:443")
    sock.close()
    assert answer.status == 403

    text = wait_for_metric(gw, "egress_connection_duration_seconds_count", 2, **route)
    assert metric(text, "egress_connection_bytes_total", **route, direction="upstream") == head1 + head2 + 2 * len(hello)
    assert metric(text, "egress_connection_bytes_total", **route, direction="downstream") == 30
    # the denied CONNECT was a connection too: it ends in a record (no route), never in the route's numbers
    wait_for_metric(gw, "egress_connection_duration_seconds_count", 3, gateway="default/eg")


HTTP_GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - name: https
    protocol: HTTPS
    tls: {mode: Terminate, caCertRef: {name: egress-ca}}
  - name: http
    protocol: HTTP
  upstreamTLS:
    additionalTrustBundleSecretRef: {name: origin-ca}
    hostAliases:
    - ip: 127.0.0.1
      hostnames: [api.example.test]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: https}, {name: eg, sectionName: http}]
  hostnames: [api.example.test]
"""


def test_intercepted_and_plain_http_connections_end_in_records_too(gateway, gateway_ca, trust_secret, tls_origin, plain_origin):
    """The connection that carried requests is metered on the wire (TLS records included) with the route the
    requests took: the CONNECT's for an intercepted tunnel, the last request's for plain explicit-proxy HTTP."""
    secure, plain = tls_origin("api.example.test"), plain_origin()
    gw = gateway(HTTP_GATEWAY, gateway_ca[1], trust_secret)
    ctx = ssl.create_default_context(cafile=str(gateway_ca[0]))
    body = b"x" * 3000
    with httpx.Client(proxy=gw.proxy_url, verify=ctx, timeout=15) as client:
        assert client.post(f"https://api.example.test:{secure.port}/up", content=body).status_code == 200
    with httpx.Client(proxy=gw.proxy_url, timeout=15) as client:
        assert client.post(f"http://api.example.test:{plain.port}/up", content=body).status_code == 200

    https = dict(gateway="default/eg", listener="https", route="default/api")
    http = dict(gateway="default/eg", listener="http", route="default/api")
    text = wait_for_metric(gw, "egress_connection_duration_seconds_count", 1, **https)
    text = wait_for_metric(gw, "egress_connection_duration_seconds_count", 1, **http)
    for labels in (https, http):
        assert metric(text, "egress_connection_bytes_total", **labels, direction="upstream") > len(body)
        assert metric(text, "egress_connection_bytes_total", **labels, direction="downstream") > 0
        assert metric(text, "egress_requests_total", **labels, decision="allow", status_class="2xx") == 1
