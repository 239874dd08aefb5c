"""TLS Passthrough listeners and TLSRoutes: routed by SNI, never decrypted; route-aware listener choice."""

from __future__ import annotations

import json
import ssl
import subprocess

import pytest

from tests.support.rawproxy import client_context, connect, is_closed

pytestmark = pytest.mark.e2e

PASSTHROUGH_GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - name: tls
    protocol: TLS
    tls: {mode: Passthrough}
  upstreamTLS:
    hostAliases:
    - ip: 127.0.0.1
      hostnames: [pinned.example.test, blocked.example.test, other.example.test]
"""

TLS_ROUTES = """
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: pinned}
spec:
  parentRefs: [{name: eg, sectionName: tls}]
  hostnames: [pinned.example.test]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: blocked}
spec:
  parentRefs: [{name: eg, sectionName: tls}]
  hostnames: [blocked.example.test]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressDenyPolicy
metadata: {name: no-blocked}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: TLSRoute, name: blocked}
  denyResponse: {statusCode: 451, message: blocked.example.test is off limits}
"""


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "-v", "--max-time", "10", *args], capture_output=True, text=True, timeout=20)


@pytest.fixture
def passthrough(gateway, tls_origin):
    origin = tls_origin("pinned.example.test", "blocked.example.test", "other.example.test")
    gw = gateway(PASSTHROUGH_GATEWAY, TLS_ROUTES)
    return gw, origin


def test_allowed_sni_reaches_the_origin_and_the_client_verifies_the_origins_own_certificate(passthrough, origin_ca, tmp_path):
    gw, origin = passthrough
    cafile = tmp_path / "origin-ca.crt"
    cafile.write_bytes(origin_ca.cert_pem)
    out = curl("--proxy", gw.proxy_url, "--cacert", str(cafile), f"https://pinned.example.test:{origin.port}/hello")
    assert out.returncode == 0, out.stderr + gw.logs()
    assert "issuer: CN=egressproxy test origins" in out.stderr
    assert "CN=egress-ca" not in out.stderr
    assert json.loads(out.stdout)["path"] == "/hello"
    assert [p for _, p, _ in origin.requests] == ["/hello"]


def test_passthrough_never_presents_a_gateway_certificate(passthrough, gateway_ca):
    """A client trusting only the gateway CA must fail: the bytes are the origin's, not a minted leaf."""
    gw, origin = passthrough
    out = curl("--proxy", gw.proxy_url, "--cacert", str(gateway_ca[0]), f"https://pinned.example.test:{origin.port}/")
    assert out.returncode == 60, out.stderr  # CURLE_PEER_FAILED_VERIFICATION
    assert origin.requests == []


def test_sni_that_disagrees_with_the_connect_host_is_refused(passthrough):
    gw, origin = passthrough
    sock, answer = connect(gw.host, gw.port, f"pinned.example.test:{origin.port}")
    assert answer.status == 200  # the authority itself is routed; the ClientHello decides the rest
    # Verification off on purpose: if the gateway relayed this, the request below would reach the origin.
    ctx = client_context(verify=False)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        tls = ctx.wrap_socket(sock, server_hostname="other.example.test")
        tls.sendall(b"GET /fronted HTTP/1.1\r\nHost: pinned.example.test\r\nConnection: close\r\n\r\n")
        if is_closed(tls):
            raise ConnectionError("closed")
    sock.close()
    assert origin.requests == []
    assert 'egress_denials_total{reason="sni-mismatch"} 1.0' in gw.metrics()


def test_unrouted_host_under_deny_all_gets_403_on_connect(passthrough):
    gw, origin = passthrough
    sock, answer = connect(gw.host, gw.port, f"unrouted.example.test:{origin.port}")
    sock.close()
    assert answer.status == 403
    assert answer.headers["x-egress-denied"] == "no-route"
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"error": "no route allows this destination", "reason": "no-route", "policy": "EgressGateway/default/eg"}
    assert origin.requests == []


def test_egress_deny_policy_on_a_tlsroute_answers_the_connect_with_its_status_and_message(passthrough):
    gw, origin = passthrough
    sock, answer = connect(gw.host, gw.port, f"blocked.example.test:{origin.port}")
    sock.close()
    assert answer.status == 451
    assert answer.headers["x-egress-denied"] == "route-denied"
    assert answer.json() == {
        "error": "blocked.example.test is off limits",
        "reason": "route-denied",
        "policy": "EgressDenyPolicy/default/no-blocked",
    }
    assert origin.requests == []


# --- Route-aware listener choice: Terminate takes the rest, Passthrough keeps the pinned host ------------------

MIXED_GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - name: https
    protocol: HTTPS
    tls: {mode: Terminate, caCertRef: {name: egress-ca}}
  - name: pinned
    protocol: TLS
    tls: {mode: Passthrough}
  upstreamTLS:
    additionalTrustBundleSecretRef: {name: origin-ca}
    hostAliases:
    - ip: 127.0.0.1
      hostnames: [pinned.example.test, api.example.test]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [api.example.test]
---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: TLSRoute
metadata: {name: pinned}
spec:
  parentRefs: [{name: eg, sectionName: pinned}]
  hostnames: [pinned.example.test]
"""


@pytest.fixture
def mixed(gateway, gateway_ca, trust_secret, tls_origin, origin_ca, tmp_path):
    origin = tls_origin("pinned.example.test", "api.example.test")
    gw = gateway(MIXED_GATEWAY, gateway_ca[1], trust_secret)
    cafile = tmp_path / "origin-ca.crt"
    cafile.write_bytes(origin_ca.cert_pem)
    return gw, origin, cafile


def test_pinned_host_is_passed_through_while_other_hosts_are_intercepted(mixed, gateway_ca):
    gw, origin, origin_cafile = mixed
    pinned = curl("--proxy", gw.proxy_url, "--cacert", str(origin_cafile), f"https://pinned.example.test:{origin.port}/p")
    assert pinned.returncode == 0, pinned.stderr + gw.logs()
    assert "issuer: CN=egressproxy test origins" in pinned.stderr
    intercepted = curl("--proxy", gw.proxy_url, "--cacert", str(gateway_ca[0]), f"https://api.example.test:{origin.port}/i")
    assert intercepted.returncode == 0, intercepted.stderr + gw.logs()
    assert "issuer: CN=egress-ca" in intercepted.stderr
    assert "subject: CN=api.example.test" in intercepted.stderr
    assert [p for _, p, _ in origin.requests] == ["/p", "/i"]


def test_intercepted_host_is_not_reachable_with_the_origin_ca_alone(mixed):
    """The other host really is intercepted: trusting only the origin CA, curl rejects the minted leaf."""
    gw, origin, origin_cafile = mixed
    out = curl("--proxy", gw.proxy_url, "--cacert", str(origin_cafile), f"https://api.example.test:{origin.port}/")
    assert out.returncode == 60, out.stderr
    assert origin.requests == []
