"""A config written for Gateway API as people have it, through the real process: an HTTPRoute `v1beta1` whose
parentRef is a `Gateway`, a BackendTLSPolicy `v1alpha3` whose CA is a ConfigMap (key `ca.crt`). The ConfigMap's CA
verifies a loopback origin no other trust knows; the same origin through a Backend without the policy is 502.
"""

from __future__ import annotations

import json
import ssl
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.origins import HttpOrigin
from tests.support.pki import TestCA

pytestmark = pytest.mark.e2e


@dataclass
class Setup:
    gw: GatewayProcess
    origin: HttpOrigin
    gateway_ca: Path


def route(name: str, hostname: str, backend: str) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {{name: {name}}}
spec:
  parentRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: eg, sectionName: https}}]
  hostnames: [{hostname}]
  rules: [{{backendRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: {backend}}}]}}]
"""


def backend(name: str, port: int) -> str:
    return f"""
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: {name}}}
spec: {{type: Static, static: {{hosts: [{{host: private.internal, port: {port}}}]}}}}
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, gateway_ca: tuple[Path, str]) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("config-map-ca")
    private_ca = TestCA("private CA only a ConfigMap holds")
    cert, key = private_ca.issue("private.internal").write(tmp / "origin", "leaf")
    origin = HttpOrigin("127.0.0.1", 0, tls=(cert, key), name="private").__enter__()
    ca_path, ca_secret = gateway_ca
    docs = [
        """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: https, protocol: HTTPS, tls: {mode: Terminate, caCertRef: {name: egress-ca}}}
  upstreamTLS:
    hostAliases: [{ip: 127.0.0.1, hostnames: [private.internal]}]
""",
        ca_secret,
        f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: private-ca}}
data:
  ca.crt: {json.dumps(private_ca.cert_pem.decode())}
""",
        backend("private", origin.port),
        backend("private-nopolicy", origin.port),
        route("private", "private.test", "private"),
        route("private-nopolicy", "private-nopolicy.test", "private-nopolicy"),
        """
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: BackendTLSPolicy
metadata: {name: private}
spec:
  targetRefs: [{group: gateway.kgateway.dev, kind: Backend, name: private}]
  validation:
    caCertificateRefs: [{group: "", kind: ConfigMap, name: private-ca}]
    hostname: private.internal
""",
    ]
    config = tmp / "config"
    config.mkdir()
    for i, doc in enumerate(docs):
        (config / f"{i:02d}.yaml").write_text(textwrap.dedent(doc))
    gw = GatewayProcess(config, tmp / "data").start()
    try:
        yield Setup(gw, origin, ca_path)
    finally:
        gw.stop()
        origin.__exit__()


def get(setup: Setup, url: str) -> httpx.Response:
    verify = ssl.create_default_context(cafile=str(setup.gateway_ca))
    with httpx.Client(proxy=setup.gw.proxy_url, verify=verify, timeout=15) as client:
        return client.get(url)


def test_a_config_map_ca_verifies_the_origin(setup: Setup) -> None:
    r = get(setup, "https://private.test/p")
    assert r.status_code == 200, r.text
    assert (r.json()["origin"], r.json()["path"]) == ("private", "/p")
    assert "private.internal" in setup.origin.sni_seen


def test_without_the_policy_the_same_origin_is_502_unknown_ca(setup: Setup) -> None:
    before = len(setup.origin.requests)
    r = get(setup, "https://private-nopolicy.test/p")
    assert r.status_code == 502, r.text
    assert r.headers["x-egress-error"] == "upstream-tls-invalid"
    assert "unknown CA" in r.json()["error"]
    assert len(setup.origin.requests) == before
