"""The gateway trusts the system store as OpenSSL finds it (DESIGN.md 4.2): behind a TLS-inspecting corporate
proxy whose CA is named by SSL_CERT_FILE, intercepted requests pass; without it they fail with a 502 that names
what was trusted."""

from __future__ import annotations

import ssl
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from egressproxy.ca import create_ca, secret_manifest
from tests.e2e.test_upstream_tls import secret
from tests.support.gateway import GatewayProcess
from tests.support.origins import HttpOrigin
from tests.support.pki import TestCA

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def corp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, HttpOrigin, Path]]:
    """An origin whose certificate a corporate CA signed; returns (config dir, origin, the CA's PEM file)."""
    tmp = tmp_path_factory.mktemp("system-trust")
    corp_ca = TestCA("corporate inspection CA")
    (tmp / "corp-ca.pem").write_bytes(corp_ca.cert_pem)
    cert, key = corp_ca.issue("corp.test").write(tmp, "leaf")
    ca_cert, ca_key = create_ca("egress-ca")
    (tmp / "egress-ca.crt").write_bytes(ca_cert)
    config = tmp / "config"
    config.mkdir()
    (config / "gateway.yaml").write_text(
        textwrap.dedent(
            """
            apiVersion: clrk.apoxy.dev/v1alpha1
            kind: EgressGateway
            metadata: {name: eg}
            spec:
              defaultPolicy: allow-all
              listeners:
              - name: https
                protocol: HTTPS
                tls: {mode: Terminate, caCertRef: {name: egress-ca}}
              upstreamTLS:
                additionalTrustBundleSecretRef: {name: unrelated-ca}
                hostAliases:
                - {ip: 127.0.0.1, hostnames: [corp.test]}
            """
        )
        + "---\n"
        + secret_manifest("egress-ca", ca_cert, ca_key)
        + "---\n"
        + secret("unrelated-ca", ca_crt=TestCA("unrelated").cert_pem)
    )
    with HttpOrigin("127.0.0.1", 0, tls=(cert, key), name="corp") as origin:
        yield config, origin, tmp / "corp-ca.pem"


def get_through(gw: GatewayProcess, origin: HttpOrigin, egress_ca: Path) -> httpx.Response:
    verify = ssl.create_default_context(cafile=str(egress_ca))
    with httpx.Client(proxy=gw.proxy_url, verify=verify, timeout=20) as client:
        return client.get(f"https://corp.test:{origin.port}/")


def test_ssl_cert_file_naming_the_corporate_ca_is_trusted(corp, tmp_path: Path) -> None:
    config, origin, corp_ca = corp
    with GatewayProcess(config, tmp_path / "data", env={"SSL_CERT_FILE": str(corp_ca)}) as gw:
        r = get_through(gw, origin, config.parent / "egress-ca.crt")
    assert r.status_code == 200, r.text
    assert r.json()["origin"] == "corp"


def test_without_it_the_502_names_the_system_store_and_the_secret(corp, tmp_path: Path) -> None:
    config, origin, _ = corp
    gw = GatewayProcess(config, tmp_path / "data")
    gw.env.pop("SSL_CERT_FILE", None)
    gw.env.pop("SSL_CERT_DIR", None)
    before = len(origin.requests)
    with gw:
        r = get_through(gw, origin, config.parent / "egress-ca.crt")
    assert r.status_code == 502, r.text
    assert r.headers["x-egress-error"] == "upstream-tls-invalid"
    error = r.json()["error"]
    assert "unknown CA" in error and "checked against the system store " in error, error
    assert error.endswith("+ Secret default/unrelated-ca"), error
    assert len(origin.requests) == before  # refused in the handshake: the origin never saw a request
