"""defaultPolicy (allow-all | deny-all) for plain HTTP, TLS and TCP; L4 routes; EgressDenyPolicy on an HTTPRoute."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.support.origins import TcpEcho
from tests.support.rawproxy import connect, is_closed

pytestmark = pytest.mark.e2e

ALIASES = "[plain.example.test, secure.example.test, tcp.example.test, denied.example.test]"


def gateway_doc(policy: str, listeners: str, extra: str = "") -> str:
    return f"""
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: {policy}
  listeners:
{listeners}
  upstreamTLS:
    additionalTrustBundleSecretRef: {{name: origin-ca}}
    hostAliases:
    - ip: 127.0.0.1
      hostnames: {ALIASES}
{extra}"""


HTTP_LISTENER = """  - name: http
    protocol: HTTP"""
HTTPS_LISTENER = """  - name: https
    protocol: HTTPS
    tls: {mode: Terminate, caCertRef: {name: egress-ca}}"""


def tcp_listener(port: int) -> str:
    return f"""  - name: tcp
    protocol: TCP
    port: {port}"""


class CountingTcpEcho(TcpEcho):
    """TcpEcho that counts accepted connections (so a test can say "the origin saw nothing")."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted = 0
        self._lock = threading.Lock()
        original = self.server.verify_request

        def verify(request: object, client_address: object) -> bool:
            with self._lock:
                self.accepted += 1
            return original(request, client_address)  # type: ignore[arg-type]

        self.server.verify_request = verify  # type: ignore[method-assign]


@pytest.fixture
def tcp_echo() -> Iterator[CountingTcpEcho]:
    with CountingTcpEcho() as echo:
        yield echo


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "-i", "--max-time", "10", *args], capture_output=True, text=True, timeout=20)


def split_response(out: str) -> tuple[int, dict[str, str], str]:
    """Status, headers and body of the last response in `curl -i` output (after any CONNECT answer)."""
    blocks = out.replace("\r\n", "\n").split("\n\n")
    # find the last head that starts with HTTP/
    heads = [i for i, b in enumerate(blocks) if b.startswith("HTTP/")]
    i = heads[-1]
    lines = blocks[i].split("\n")
    status = int(lines[0].split()[1])
    headers = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
    return status, headers, "\n\n".join(blocks[i + 1 :])


# --- plain HTTP through the explicit proxy (absolute-form) -----------------------------------------------------


def test_plain_http_allow_all_forwards_an_unrouted_host(gateway, plain_origin, trust_secret):
    origin = plain_origin()
    gw = gateway(gateway_doc("allow-all", HTTP_LISTENER), trust_secret)
    out = curl("--proxy", gw.proxy_url, f"http://plain.example.test:{origin.port}/anything")
    assert out.returncode == 0, out.stderr
    status, _, body = split_response(out.stdout)
    assert status == 200, out.stdout + gw.logs()
    seen = json.loads(body)
    assert seen["path"] == "/anything"
    assert seen["headers"]["host"] == f"plain.example.test:{origin.port}"


def test_plain_http_deny_all_answers_403_no_route_without_contacting_the_origin(gateway, plain_origin, trust_secret):
    origin = plain_origin()
    gw = gateway(gateway_doc("deny-all", HTTP_LISTENER), trust_secret)
    out = curl("--proxy", gw.proxy_url, f"http://plain.example.test:{origin.port}/anything")
    status, headers, body = split_response(out.stdout)
    assert status == 403
    assert headers["x-egress-denied"] == "no-route"
    assert json.loads(body) == {"error": "no route allows this destination", "reason": "no-route", "policy": "EgressGateway/default/eg"}
    assert origin.requests == []


# --- TLS on a Terminate listener -------------------------------------------------------------------------------


def test_tls_allow_all_intercepts_an_unrouted_host(gateway, gateway_ca, trust_secret, tls_origin):
    origin = tls_origin("secure.example.test")
    gw = gateway(gateway_doc("allow-all", HTTPS_LISTENER), gateway_ca[1], trust_secret)
    out = subprocess.run(
        ["curl", "-sS", "-v", "--max-time", "10", "--proxy", gw.proxy_url, "--cacert", str(gateway_ca[0]),
         f"https://secure.example.test:{origin.port}/unrouted"],
        capture_output=True, text=True, timeout=20,
    )
    assert out.returncode == 0, out.stderr + gw.logs()
    assert "issuer: CN=egress-ca" in out.stderr  # intercepted, not passed through
    assert json.loads(out.stdout)["path"] == "/unrouted"


def test_tls_deny_all_refuses_the_connect(gateway, gateway_ca, trust_secret, tls_origin):
    origin = tls_origin("secure.example.test")
    gw = gateway(gateway_doc("deny-all", HTTPS_LISTENER), gateway_ca[1], trust_secret)
    sock, answer = connect(gw.host, gw.port, f"secure.example.test:{origin.port}")
    sock.close()
    assert answer.status == 403
    assert answer.headers["x-egress-denied"] == "no-route"
    assert answer.json()["policy"] == "EgressGateway/default/eg"
    assert origin.requests == []


# --- raw TCP on a TCP listener ---------------------------------------------------------------------------------


def relay(gw: object, authority: str, payload: bytes = b"ping\n") -> bytes:
    sock, answer = connect(gw.host, gw.port, authority)  # type: ignore[attr-defined]
    with sock:
        assert answer.status == 200, (answer.status, answer.body)
        sock.sendall(payload)
        received = b""
        expected = b"echo:" + payload
        while len(received) < len(expected):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def test_tcp_allow_all_relays_raw_bytes(gateway, tcp_echo, trust_secret):
    gw = gateway(gateway_doc("allow-all", tcp_listener(tcp_echo.port)), trust_secret)
    assert relay(gw, f"tcp.example.test:{tcp_echo.port}", b"\x00\x01binary\n") == b"echo:\x00\x01binary\n"
    assert tcp_echo.accepted == 1


def test_tcp_deny_all_without_routes_never_reaches_the_origin(gateway, tcp_echo, trust_secret):
    gw = gateway(gateway_doc("deny-all", tcp_listener(tcp_echo.port)), trust_secret)
    sock, answer = connect(gw.host, gw.port, f"tcp.example.test:{tcp_echo.port}")
    with sock:
        if answer.status == 200:  # a tunnel opened after all: it must close without relaying
            sock.sendall(b"ping\n")
            assert is_closed(sock)
        else:
            assert answer.status == 403
            assert answer.headers["x-egress-denied"] == "no-route"
    assert tcp_echo.accepted == 0


def test_tcp_route_relays_its_destination_under_deny_all(gateway, tcp_echo, trust_secret):
    route = """
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: echo}
spec:
  parentRefs: [{name: eg, sectionName: tcp}]
  rules: [{}]
"""
    gw = gateway(gateway_doc("deny-all", tcp_listener(tcp_echo.port)), route, trust_secret)
    assert relay(gw, f"tcp.example.test:{tcp_echo.port}") == b"echo:ping\n"
    assert tcp_echo.accepted == 1


def test_egress_l4_route_relays_by_destination_cidr_and_port(gateway, tcp_echo, trust_secret):
    other = CountingTcpEcho().__enter__()
    try:
        route = f"""
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressL4Route
metadata: {{name: loopback-echo}}
spec:
  parentRefs: [{{name: eg, sectionName: tcp}}]
  rules:
  - matches:
    - destinationCIDRs: [127.0.0.0/8]
      ports: [{{port: {tcp_echo.port}}}]
      protocol: TCP
"""
        listeners = "  - name: tcp\n    protocol: TCP"
        gw = gateway(gateway_doc("deny-all", listeners, "  ssrfGuard: {allowCIDRs: [127.0.0.0/8]}\n"), route, trust_secret)
        assert relay(gw, f"127.0.0.1:{tcp_echo.port}") == b"echo:ping\n"
        assert tcp_echo.accepted == 1
        # Same address, a port the route does not list: denied, and that origin sees nothing.
        sock, answer = connect(gw.host, gw.port, f"127.0.0.1:{other.port}")
        with sock:
            if answer.status == 200:
                sock.sendall(b"ping\n")
                assert is_closed(sock)
            else:
                assert answer.headers["x-egress-denied"] == "no-route"
        assert other.accepted == 0
    finally:
        other.__exit__()


# --- EgressDenyPolicy on an HTTPRoute --------------------------------------------------------------------------

DENY_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: denied}
spec:
  parentRefs: [{name: eg, sectionName: http}, {name: eg, sectionName: https}]
  hostnames: [denied.example.test]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressDenyPolicy
metadata: {name: block-denied}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: denied}]
  denyResponse: {statusCode: 429, message: this destination is closed for maintenance}
"""

DENY_BODY = {
    "error": "this destination is closed for maintenance",
    "reason": "route-denied",
    "policy": "EgressDenyPolicy/default/block-denied",
}


@pytest.fixture
def deny_gateway(gateway, gateway_ca, trust_secret):
    return gateway(gateway_doc("allow-all", HTTP_LISTENER + "\n" + HTTPS_LISTENER), DENY_ROUTE, gateway_ca[1], trust_secret)


def test_egress_deny_policy_on_an_httproute_answers_plain_http(deny_gateway, plain_origin):
    origin = plain_origin()
    out = curl("--proxy", deny_gateway.proxy_url, f"http://denied.example.test:{origin.port}/x")
    status, headers, body = split_response(out.stdout)
    assert status == 429
    assert headers["x-egress-denied"] == "route-denied"
    assert json.loads(body) == DENY_BODY
    assert origin.requests == []


def test_egress_deny_policy_on_an_httproute_answers_intercepted_https(deny_gateway, gateway_ca, tls_origin):
    origin = tls_origin("denied.example.test")
    with httpx.Client(proxy=deny_gateway.proxy_url, verify=ssl.create_default_context(cafile=str(gateway_ca[0])), timeout=10) as client:
        r = client.get(f"https://denied.example.test:{origin.port}/x")
    assert r.status_code == 429
    assert r.headers["x-egress-denied"] == "route-denied"
    assert r.json() == DENY_BODY
    assert origin.requests == []


def test_proxy_credentials_never_reach_the_origin(gateway, plain_origin):
    """Absolute-form requests carry Proxy-Authorization for the proxy; the origin must never see it."""
    origin = plain_origin()
    config = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: allow-all
  ssrfGuard: {allowCIDRs: [127.0.0.1/32]}
  listeners:
  - {name: http, protocol: HTTP}
"""
    gw = gateway(config)
    proxy = httpx.Proxy(gw.proxy_url, auth=("team-a/billing", "s3cret"))
    r = httpx.get(f"http://127.0.0.1:{origin.port}/creds", proxy=proxy, timeout=10)
    assert r.status_code == 200
    assert "proxy-authorization" not in r.json()["headers"]
    assert 'namespace="team-a"' in gw.metrics()  # still attributed
