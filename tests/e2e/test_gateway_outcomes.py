"""Gateway failures are answered from the typed outcome the failing part wrote, never from words in error text.

A destination whose name reads like a TLS problem (`ssl-tls-certificate.example`) and whose port is closed is
unreachable, whatever the words in its name: 502 `upstream-unreachable` naming the destination (so the name is
in the text a classifier of words would have read), for plain HTTP and for intercepted HTTPS alike.
"""

from __future__ import annotations

import ssl
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from egressproxy.ca import create_ca, secret_manifest
from tests.support.gateway import GatewayProcess, free_port

pytestmark = pytest.mark.e2e

TLS_WORDS_HOST = "ssl-tls-certificate.example"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Path]]:
    tmp = tmp_path_factory.mktemp("outcomes")
    ca_cert, ca_key = create_ca("egress-ca")
    (tmp / "ca.crt").write_bytes(ca_cert)
    config = tmp / "config"
    config.mkdir()
    (config / "gateway.yaml").write_text(
        textwrap.dedent(
            f"""
            apiVersion: clrk.apoxy.dev/v1alpha1
            kind: EgressGateway
            metadata: {{name: eg}}
            spec:
              defaultPolicy: allow-all
              listeners:
              - name: https
                protocol: HTTPS
                tls: {{mode: Terminate, caCertRef: {{name: egress-ca}}}}
              - name: http
                protocol: HTTP
              upstreamTLS:
                hostAliases:
                - ip: 127.0.0.1
                  hostnames: [{TLS_WORDS_HOST}]
            """
        )
        + "---\n"
        + secret_manifest("egress-ca", ca_cert, ca_key)
    )
    with GatewayProcess(config, tmp / "data") as gw:
        yield gw, tmp / "ca.crt"


def assert_unreachable(r: httpx.Response, port: int) -> None:
    assert r.status_code == 502, r.text
    assert r.headers["x-egress-error"] == "upstream-unreachable", r.headers
    body = r.json()
    assert body["reason"] == "upstream-unreachable", body
    assert f"{TLS_WORDS_HOST}:{port} (127.0.0.1)" in body["error"], body
    assert "refused" in body["error"], body


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_closed_port_behind_a_tls_sounding_name_is_unreachable(gateway: tuple[GatewayProcess, Path], scheme: str) -> None:
    gw, ca = gateway
    closed = free_port()  # bound and released: nothing listens there
    verify = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(proxy=gw.proxy_url, verify=verify, timeout=20) as client:
        r = client.get(f"{scheme}://{TLS_WORDS_HOST}:{closed}/")
    assert_unreachable(r, closed)
    assert 'egress_upstream_errors_total{reason="upstream-unreachable"}' in gw.metrics()
    assert 'egress_upstream_errors_total{reason="upstream-tls-invalid"}' not in gw.metrics()
