"""Interception (TLS Terminate / HTTPS listeners): minted certificates, HTTPRoutes, filters, direct answers."""

from __future__ import annotations

import json
import ssl
import subprocess

import httpx
import pytest

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
