"""A keep-alive tunnel reuses its routing decision, and a reload is never answered from it (real gateway, real TLS).

egressproxy/decision_reuse.py keeps a connection's last decision for its next request with the same host and
path. Driven through one intercepted tunnel (one socket for every request, checked): requests before a reload are
served, the first request after a reload that denies the route is denied on that same connection, and a header
rule of the route still decides each request by its headers.
"""

from __future__ import annotations

import http.client
import ssl

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
      hostnames: [a.example.test, t.example.test]
"""

ROUTES = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route-a}
spec:
  parentRefs: [{name: eg}]
  hostnames: [a.example.test]
  rules: [{}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: teams}
spec:
  parentRefs: [{name: eg}]
  hostnames: [t.example.test]
  rules:
  - matches: [{headers: [{name: x-team, value: a}]}]
    filters:
    - type: ExtensionRef
      extensionRef: {group: gateway.kgateway.dev, kind: DirectResponse, name: team-a}
  - {}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: DirectResponse
metadata: {name: team-a}
spec: {status: 299, body: team a}
"""

DENY_ROUTE_A = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressDenyPolicy
metadata: {name: close-a}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: route-a}
  denyResponse: {statusCode: 451, message: closed}
"""


def tunnel(gw, host: str, port: int, cafile: str) -> http.client.HTTPSConnection:
    conn = http.client.HTTPSConnection("127.0.0.1", gw.port, timeout=10, context=ssl.create_default_context(cafile=cafile))
    conn.set_tunnel(host, port)
    return conn


def get(conn: http.client.HTTPSConnection, path: str = "/", **headers: str) -> tuple[int, str | None]:
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status, response.getheader("x-egress-denied")


def test_a_reload_denies_the_next_request_on_a_tunnel_whose_decision_was_kept(gateway, gateway_ca, trust_secret, tls_origin):
    origin = tls_origin("a.example.test", "t.example.test")
    gw = gateway(GATEWAY, ROUTES, gateway_ca[1], trust_secret)
    conn = tunnel(gw, "a.example.test", origin.port, str(gateway_ca[0]))
    try:
        assert get(conn) == (200, None)
        sock = conn.sock
        assert get(conn, "/other") == (200, None)  # the kept decision (a hostname-only route: any path)
        (gw.configs[0] / "30-deny.yaml").write_text(DENY_ROUTE_A)
        assert gw.admin("/reload", method="POST").json()["ok"] is True
        assert get(conn, "/other") == (451, "route-denied"), gw.logs()
        assert conn.sock is sock  # the same tunnel throughout
    finally:
        conn.close()


def test_a_route_with_a_header_rule_decides_every_request_by_its_headers(gateway, gateway_ca, trust_secret, tls_origin):
    origin = tls_origin("a.example.test", "t.example.test")
    gw = gateway(GATEWAY, ROUTES, gateway_ca[1], trust_secret)
    conn = tunnel(gw, "t.example.test", origin.port, str(gateway_ca[0]))
    try:
        assert get(conn)[0] == 200
        sock = conn.sock
        assert get(conn, **{"x-team": "a"})[0] == 299  # the header rule, same path, same connection
        assert get(conn)[0] == 200
        assert conn.sock is sock
    finally:
        conn.close()
