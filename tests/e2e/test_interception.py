"""Interception (TLS Terminate / HTTPS listeners): minted certificates, HTTPRoutes, filters, direct answers."""

from __future__ import annotations

import json
import ssl
import subprocess
import time

import httpx
import pytest
from cryptography import x509

from tests.support.rawproxy import open_socket, read_response

pytestmark = pytest.mark.e2e

GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - name: https
    protocol: HTTPS
    tls: {mode: Terminate, caCertRef: {name: egress-ca}}
  upstreamTLS:
    additionalTrustBundleSecretRef: {name: origin-ca}
    hostAliases:
    - ip: 127.0.0.1
      hostnames: [api.example.test]
"""

ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [api.example.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}, method: GET}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-added, value: by-gateway}]
        remove: [x-secret-header]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add: [{name: x-seen-by, value: egressproxy}]
  - matches: [{path: {type: Exact, value: /teapot}}]
    filters:
    - type: ExtensionRef
      extensionRef: {group: gateway.kgateway.dev, kind: DirectResponse, name: teapot}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: DirectResponse
metadata: {name: teapot}
spec:
  status: 418
  body: short and stout
"""


@pytest.fixture
def setup(gateway, gateway_ca, trust_secret, tls_origin):
    origin = tls_origin("api.example.test")
    gw = gateway(GATEWAY, ROUTE, gateway_ca[1], trust_secret)
    client = httpx.Client(proxy=gw.proxy_url, verify=ssl.create_default_context(cafile=str(gateway_ca[0])), timeout=10)
    yield gw, origin, client
    client.close()


def test_client_trusting_only_the_gateway_ca_gets_a_certificate_for_the_requested_host(setup, gateway_ca):
    gw, origin, _ = setup
    out = subprocess.run(
        ["curl", "-sS", "-v", "--max-time", "10", "--proxy", gw.proxy_url, "--cacert", str(gateway_ca[0]),
         f"https://api.example.test:{origin.port}/v1/x"],
        capture_output=True, text=True, timeout=20,
    )
    assert out.returncode == 0, out.stderr
    assert "subject: CN=api.example.test" in out.stderr
    assert "issuer: CN=egress-ca" in out.stderr
    assert json.loads(out.stdout)["path"] == "/v1/x"


def test_route_filters_modify_request_and_response_headers(setup):
    gw, origin, client = setup
    r = client.get(f"https://api.example.test:{origin.port}/v1/echo", headers={"x-secret-header": "s"})
    assert r.status_code == 200
    seen = r.json()["headers"]
    assert seen["x-added"] == "by-gateway"
    assert "x-secret-header" not in seen
    assert r.headers["x-seen-by"] == "egressproxy"


@pytest.mark.parametrize(
    "method,path",
    [("GET", "/other"), ("POST", "/v1/echo"), ("GET", "/v")],
    ids=["path-not-routed", "method-not-routed", "prefix-is-segment-aware"],
)
def test_unmatched_request_on_a_routed_host_is_denied_by_default_policy(setup, method, path):
    gw, origin, client = setup
    r = client.request(method, f"https://api.example.test:{origin.port}{path}")
    assert r.status_code == 403
    assert r.headers["x-egress-denied"] == "no-route"
    assert r.json() == {"error": "no route allows this destination", "reason": "no-route", "policy": "EgressGateway/default/eg"}
    assert not any(p == path for _, p, _ in origin.requests)


def test_direct_response_is_served_without_contacting_the_origin(setup):
    gw, origin, client = setup
    r = client.get(f"https://api.example.test:{origin.port}/teapot")
    assert (r.status_code, r.text) == (418, "short and stout")
    assert origin.requests == []


def test_host_header_must_agree_with_the_tunnel(setup):
    gw, origin, client = setup
    r = client.get(f"https://api.example.test:{origin.port}/v1/x", headers={"host": "evil.example.test"})
    assert r.status_code == 421
    assert r.headers["x-egress-denied"] == "host-mismatch"
    assert origin.requests == []


def test_unrouted_host_gets_403_on_connect_before_any_tunnel(setup):
    gw, origin, client = setup
    out = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "10", "--proxy", gw.proxy_url, "https://unrouted.example.test/"],
        capture_output=True, text=True, timeout=20,
    )
    assert "HTTP/1.1 403" in out.stdout
    assert "x-egress-denied: no-route" in out.stdout


def _minted_certificate(gw, authority: str, sni: str) -> x509.Certificate:
    """The certificate the gateway presents inside a CONNECT tunnel to `authority`."""
    sock = open_socket(gw.host, gw.port)
    sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    assert read_response(sock, head_only=True).status == 200
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with ctx.wrap_socket(sock, server_hostname=sni or None) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_minted_certificates_are_cached_on_disk_and_survive_a_restart(setup):
    gw, origin, _ = setup
    first = _minted_certificate(gw, f"api.example.test:{origin.port}", "api.example.test")
    assert first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == ["api.example.test"]
    deadline = time.monotonic() + 10  # the cache file is written off the event loop, after the handshake
    while not list((gw.data_dir / "certs").glob("*/api.example.test.pem")):
        assert time.monotonic() < deadline, "the minted certificate was not written under --data-dir/certs"
        time.sleep(0.05)
    gw.stop()
    gw.start()
    again = _minted_certificate(gw, f"api.example.test:{origin.port}", "api.example.test")
    assert again.serial_number == first.serial_number  # served from --data-dir, not minted again


def test_an_ip_literal_gets_a_certificate_with_an_ip_san(gateway, gateway_ca, trust_secret, tls_origin):
    origin = tls_origin("127.0.0.1")
    allow_all = GATEWAY.replace("defaultPolicy: deny-all", "defaultPolicy: allow-all\n  ssrfGuard: {allowCIDRs: [127.0.0.1/32]}")
    gw = gateway(allow_all, gateway_ca[1], trust_secret)
    cert = _minted_certificate(gw, f"127.0.0.1:{origin.port}", "")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


MATCHING = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matching}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: ["*.example.test"]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /v1}
      headers: [{name: X-Tenant, value: acme}]
      queryParams: [{name: mode, type: RegularExpression, value: "fast|slow"}]
    filters:
    - type: URLRewrite
      urlRewrite:
        hostname: internal.example.test
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /openai/v1}
  - matches: [{path: {type: Exact, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: new.example.test, statusCode: 301}
"""


def test_header_and_query_matches_select_the_rule_and_url_rewrite_applies(gateway, gateway_ca, trust_secret, tls_origin):
    origin = tls_origin("api.example.test")
    gw = gateway(GATEWAY, MATCHING, gateway_ca[1], trust_secret)
    verify = ssl.create_default_context(cafile=str(gateway_ca[0]))
    base = f"https://api.example.test:{origin.port}"
    with httpx.Client(proxy=gw.proxy_url, verify=verify, timeout=10) as client:
        ok = client.get(f"{base}/v1/chat?mode=fast", headers={"x-tenant": "acme"})
        assert ok.status_code == 200
        seen = ok.json()
        assert seen["path"] == "/openai/v1/chat?mode=fast"
        assert seen["headers"]["host"] == "internal.example.test"
        for headers, query in (({"x-tenant": "other"}, "mode=fast"), ({"x-tenant": "acme"}, "mode=other"), ({}, "mode=fast")):
            denied = client.get(f"{base}/v1/chat?{query}", headers=headers)
            assert denied.status_code == 403 and denied.headers["x-egress-denied"] == "no-route"
        moved = client.get(f"{base}/old")
        assert moved.status_code == 301
        assert moved.headers["location"] == "https://new.example.test/old"
    assert [path for _, path, _ in origin.requests] == ["/openai/v1/chat?mode=fast"]
