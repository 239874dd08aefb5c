"""Report mode for EgressDenyPolicy (DESIGN.md 4.2): the route's traffic passes, `egress_policy_reports_total`
counts what would have been denied and a log line says so, for an intercepted request and for a TLS tunnel.
(RegionAllowListPolicy's and CEL's Report mode: tests/e2e/test_regions.py, test_cel_policies.py.)"""

from __future__ import annotations

import re
import socket
import ssl

import httpx
import pytest

pytestmark = pytest.mark.e2e

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: https, protocol: HTTPS, tls: {mode: Terminate, caCertRef: {name: egress-ca}}}
  - {name: tls, protocol: TLS, tls: {mode: Passthrough}}
  upstreamTLS:
    additionalTrustBundleSecretRef: {name: origin-ca}
    hostAliases:
    - {ip: 127.0.0.1, hostnames: [watched.example.test, tunnel.example.test]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: watched}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [watched.example.test]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: tunnel}
spec:
  parentRefs: [{name: eg, sectionName: tls}]
  hostnames: [tunnel.example.test]
  rules: [{}]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressDenyPolicy
metadata: {name: would-block}
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: watched}
  - {group: gateway.networking.k8s.io, kind: TLSRoute, name: tunnel}
  enforcementMode: Report
"""


def _reports(gw) -> list[str]:
    return re.findall(
        r'^egress_policy_reports_total\{policy="EgressDenyPolicy/default/would-block",reason="route-denied"\} (\S+)$',
        gw.metrics(), re.M,
    )


def test_a_report_mode_deny_policy_lets_requests_and_tunnels_pass_and_counts_them(gateway, gateway_ca, trust_secret, tls_origin, origin_ca):
    origin = tls_origin("watched.example.test", "tunnel.example.test", name="watched")
    gw = gateway(CONFIG, gateway_ca[1], trust_secret)
    with httpx.Client(proxy=gw.proxy_url, verify=ssl.create_default_context(cafile=str(gateway_ca[0])), timeout=10) as client:
        response = client.get(f"https://watched.example.test:{origin.port}/x")
    assert response.status_code == 200, response.text + gw.logs()
    assert _reports(gw) == ["1.0"]
    # A passthrough tunnel: CONNECT, then TLS straight to the origin (its certificate, not the gateway's).
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as raw:
        raw.sendall(f"CONNECT tunnel.example.test:{origin.port} HTTP/1.1\r\nHost: tunnel.example.test\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        context = ssl.create_default_context(cadata=origin_ca.cert_pem.decode())
        with context.wrap_socket(raw, server_hostname="tunnel.example.test") as tls:
            tls.sendall(b"GET /through HTTP/1.1\r\nHost: tunnel.example.test\r\nConnection: close\r\n\r\n")
            assert tls.recv(4096).startswith(b"HTTP/1.1 200")
    assert _reports(gw) == ["2.0"]
    assert "route-denied" not in re.findall(r'egress_denials_total\{reason="([^"]+)"\}', gw.metrics())
    logs = gw.logs()
    assert "report: EgressDenyPolicy/default/would-block would deny GET watched.example.test with route-denied" in logs
    assert "report: EgressDenyPolicy/default/would-block would deny the connection to tunnel.example.test" in logs
