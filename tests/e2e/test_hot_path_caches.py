"""Hot-path caches through the real process (issue 16, item 5): the minted-leaf cache bounded by
`--cert-cache-size`, and upstream TLS sessions resumed by a later client connection to the same origin.

Every request comes on a new client connection (a new httpx client), so each one makes the gateway present a
certificate and open a new upstream connection; the origin records, per accepted connection, whether its TLS
handshake resumed a session (`HttpOrigin.connections`).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.origins import HttpOrigin

pytestmark = pytest.mark.e2e

HOSTS = ("a.cache.test", "b.cache.test", "c.cache.test")

GATEWAY = f"""
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: deny-all
  listeners:
  - name: https
    protocol: HTTPS
    tls: {{mode: Terminate, caCertRef: {{name: egress-ca}}}}
  upstreamTLS:
    additionalTrustBundleSecretRef: {{name: origin-ca}}
    hostAliases:
    - ip: 127.0.0.1
      hostnames: [{", ".join(HOSTS)}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: cached}}
spec:
  parentRefs: [{{name: eg, sectionName: https}}]
  hostnames: [{", ".join(HOSTS)}]
  rules: [{{}}]
"""


def metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    total = 0.0
    for line in gw.metrics().splitlines():
        if line.startswith(name) and line[len(name)] in "{ " and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def fetch_on_a_new_connection(gw: GatewayProcess, ca: Path, host: str, port: int) -> None:
    with httpx.Client(proxy=gw.proxy_url, verify=ssl.create_default_context(cafile=str(ca)), timeout=10) as client:
        r = client.get(f"https://{host}:{port}/x")
    assert r.status_code == 200, r.text


@pytest.fixture
def origin(tls_origin) -> HttpOrigin:
    return tls_origin(*HOSTS)


@pytest.fixture
def start(gateway, gateway_ca, trust_secret):
    def start(*extra_args: str) -> GatewayProcess:
        return gateway(GATEWAY, gateway_ca[1], trust_secret, extra_args=list(extra_args))

    return start


def test_a_cache_smaller_than_the_hosts_in_use_evicts_and_mints_again(start, gateway_ca, origin) -> None:
    gw = start("--cert-cache-size", "2")
    for host in (*HOSTS, HOSTS[0]):  # a, b, c (evicts a), a again: minted again
        fetch_on_a_new_connection(gw, gateway_ca[0], host, origin.port)
    assert metric(gw, "egress_cert_cache_total", result="minted") == 4
    assert metric(gw, "egress_cert_cache_total", result="hit") == 0
    assert metric(gw, "egress_cert_cache_evictions_total") == 2
    assert metric(gw, "egress_cert_cache_entries") == 2
    cache = gw.admin("/stats").json()["caches"]["cert_cache"]
    assert cache == {"capacity": 2, "entries": 2, "hits": 0, "minted": 4, "evictions": 2}


def test_a_cache_large_enough_mints_each_host_once(start, gateway_ca, origin) -> None:
    gw = start()  # the default bound, 4096
    for host in (*HOSTS, HOSTS[0], HOSTS[1]):
        fetch_on_a_new_connection(gw, gateway_ca[0], host, origin.port)
    assert metric(gw, "egress_cert_cache_total", result="minted") == 3
    assert metric(gw, "egress_cert_cache_total", result="hit") == 2
    assert metric(gw, "egress_cert_cache_evictions_total") == 0
    assert gw.admin("/stats").json()["caches"]["cert_cache"]["capacity"] == 4096


def test_a_second_client_connection_resumes_the_upstream_tls_session(start, gateway_ca, origin) -> None:
    """And every later one too: each connection leaves a session the next can resume, however its client left (a
    client closing first once made OpenSSL spoil the session now and then; mitmproxy sends no close_notify)."""
    gw = start()
    for _ in range(8):
        fetch_on_a_new_connection(gw, gateway_ca[0], HOSTS[0], origin.port)
    assert origin.connections == [False] + [True] * 7  # one upstream connection each, all but the first resumed
    assert metric(gw, "egress_upstream_tls_handshakes_total", session="resumed") == 7
    assert metric(gw, "egress_upstream_tls_handshakes_total", session="full") == 1
    sessions = gw.admin("/stats").json()["caches"]["upstream_tls_sessions"]
    assert sessions == {"entries": 1, "offered": 7, "resumed": 7, "full": 1}


def test_a_session_is_never_offered_to_another_name(start, gateway_ca, origin) -> None:
    """Same origin address and port, another SNI and verified name: a full handshake, checked afresh."""
    gw = start()
    fetch_on_a_new_connection(gw, gateway_ca[0], HOSTS[0], origin.port)
    fetch_on_a_new_connection(gw, gateway_ca[0], HOSTS[1], origin.port)
    fetch_on_a_new_connection(gw, gateway_ca[0], HOSTS[1], origin.port)
    assert origin.connections == [False, False, True]
    assert origin.sni_seen[:3] == [HOSTS[0], HOSTS[1], HOSTS[1]]
