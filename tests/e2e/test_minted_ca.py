"""A Terminate listener without caCertRef (DESIGN.md 4.2): `egressproxy run` mints the gateway's CA under
--data-dir, `egressproxy ca show` prints it for clients to trust, and a restart serves leaves from the same CA."""

from __future__ import annotations

import ssl
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from cryptography import x509

from tests.support.gateway import GatewayProcess

if TYPE_CHECKING:
    from tests.e2e.test_mitmweb import Mitmweb

pytestmark = pytest.mark.e2e

GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg, namespace: platform}
spec:
  defaultPolicy: deny-all
  listeners:
  - name: https
    protocol: HTTPS
    tls: {mode: Terminate}
  upstreamTLS:
    additionalTrustBundleSecretRef: {name: origin-ca}
    hostAliases:
    - ip: 127.0.0.1
      hostnames: [api.example.test]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: platform}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [api.example.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}}]
"""


def ca_show(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "egressproxy", "ca", "show", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=30,
    )


def get_through(gw: "GatewayProcess | Mitmweb", trust: Path, port: int) -> tuple[httpx.Response, x509.Certificate]:
    """A request through the gateway trusting only `trust`, and the leaf certificate the gateway presented."""
    ctx = ssl.create_default_context(cafile=str(trust))
    with httpx.Client(proxy=gw.proxy_url, verify=ctx, timeout=10) as client:
        with client.stream("GET", f"https://api.example.test:{port}/v1/x") as r:
            der = r.extensions["network_stream"].get_extra_info("ssl_object").getpeercert(True)
            r.read()
    return r, x509.load_der_x509_certificate(der)


def test_minted_ca_is_shown_trusted_and_kept_across_a_restart(tmp_path, trust_secret, tls_origin):
    origin = tls_origin("api.example.test")
    config = tmp_path / "config"
    config.mkdir()
    (config / "gw.yaml").write_text(textwrap.dedent(GATEWAY))
    (config / "trust.yaml").write_text(trust_secret.replace("name: origin-ca", "name: origin-ca\n  namespace: platform"))
    data = tmp_path / "data"
    assert ca_show(data).returncode == 1  # nothing minted before the first run

    with GatewayProcess(config, data) as gw:
        cert_path = data / "ca" / "platform" / "eg" / "ca.crt"
        assert f"gateway platform/eg: interception CA minted at {cert_path}" in gw.logs()
        assert stat.S_IMODE((cert_path.parent / "ca.key").stat().st_mode) == 0o600
        assert stat.S_IMODE(cert_path.parent.stat().st_mode) == 0o700
        shown = ca_show(data)
        assert (shown.returncode, shown.stderr) == (0, "")
        assert shown.stdout == cert_path.read_text()
        trust = tmp_path / "trusted-ca.crt"
        trust.write_text(shown.stdout)
        r, leaf = get_through(gw, trust, origin.port)
        assert r.status_code == 200, r.text
        assert r.json()["path"] == "/v1/x"
        ca = x509.load_pem_x509_certificate(shown.stdout.encode())
        assert leaf.issuer == ca.subject
        assert leaf.subject.rfc4514_string() == "O=egressproxy,CN=api.example.test"

    with GatewayProcess(config, data) as again:  # the restart: same data dir, new process
        assert f"gateway platform/eg: interception CA reused at {cert_path}" in again.logs()
        assert ca_show(data).stdout == shown.stdout
        r, leaf = get_through(again, trust, origin.port)
        assert r.status_code == 200, r.text
        assert leaf.issuer == ca.subject


def test_mitmweb_mints_the_gateway_ca_under_egress_data_dir(tmp_path, trust_secret, tls_origin):
    from tests.e2e.test_mitmweb import Mitmweb

    origin = tls_origin("api.example.test")
    config = tmp_path / "config"
    config.mkdir()
    (config / "gw.yaml").write_text(textwrap.dedent(GATEWAY))
    (config / "trust.yaml").write_text(trust_secret.replace("name: origin-ca", "name: origin-ca\n  namespace: platform"))
    web = Mitmweb(config, tmp_path / "run").start()  # egress_data_dir=run/data
    try:
        web.wait_ready()
        data = tmp_path / "run" / "data"
        cert_path = data / "ca" / "platform" / "eg" / "ca.crt"
        web.wait_log(f"gateway platform/eg: interception CA minted at {cert_path}")
        shown = ca_show(data)
        assert shown.returncode == 0, shown.stderr
        trust = tmp_path / "trusted-ca.crt"
        trust.write_text(shown.stdout)
        r, leaf = get_through(web, trust, origin.port)
        assert r.status_code == 200, r.text
        assert leaf.issuer == x509.load_pem_x509_certificate(shown.stdout.encode()).subject
    finally:
        web.stop()
