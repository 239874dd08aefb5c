"""Upstream TLS through the real process: the gateway trust, BackendTLSPolicy (CAs, hostname/SNI, mTLS, SPKI
pins, CRLs), and a 502 `upstream-tls-invalid` naming the cause for every certificate that fails.

One gateway serves every scenario: each has its own requested host (a route), most a Backend whose static host
is an origin's name, mapped to 127.0.0.1 by hostAliases (trusted by the SSRF guard).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import shutil
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from egressproxy.ca import create_ca, secret_manifest
from tests.support.gateway import GatewayProcess
from tests.support.origins import HttpOrigin
from tests.support.pki import Issued, TestCA

pytestmark = pytest.mark.e2e

NOW = datetime.datetime.now(datetime.timezone.utc)


def self_signed(name: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=10))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def crl_of(ca: TestCA, revoked: list[x509.Certificate]) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(NOW - datetime.timedelta(hours=1))
        .next_update(NOW + datetime.timedelta(days=7))
    )
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(NOW - datetime.timedelta(minutes=30))
            .build()
        )
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def pin_of(issued: Issued) -> str:
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def secret(name: str, **values: bytes | str) -> str:
    lines = ["apiVersion: v1", "kind: Secret", f"metadata: {{name: {name}}}", "stringData:"]
    for key, value in values.items():
        text = value.decode() if isinstance(value, bytes) else value
        lines.append(f"  {key.replace('_', '.')}: |")
        lines.append(textwrap.indent(text.strip() + "\n", "    ").rstrip("\n"))
    return "\n".join(lines) + "\n"


def backend(name: str, host: str, port: int) -> str:
    return f"""
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: {name}}}
spec:
  type: Static
  static:
    hosts: [{{host: {host}, port: {port}}}]
"""


def route(name: str, hostname: str, backend_name: str | None = None) -> str:
    rules = f"[{{backendRefs: [{{name: {backend_name}}}]}}]" if backend_name else "[{}]"
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}}}
spec:
  parentRefs: [{{name: eg, sectionName: https}}]
  hostnames: [{hostname}]
  rules: {rules}
"""


def tls_policy(name: str, backend_name: str, ca_secret: str, hostname: str, extra_validation: str = "", extra: str = "") -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: {name}}}
spec:
  targetRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: {backend_name}}}]
  validation:
    caCertificateRefs: [{{group: "", kind: Secret, name: {ca_secret}}}]
    hostname: {hostname}
{extra_validation}{extra}"""


ALIASED = [
    "selfsigned.test", "expired.test", "wrongname.test", "bundle.test", "private.test", "private-nopolicy.test",
    "mtls.test", "mtls-nocert.test", "pin-ok.test", "pin-bad.test", "revoked.test", "crl-ok.test",
    "bundle-system.test", "mixed.test", "plain.test", "private.internal", "mtls.internal", "pinned.internal", "revoked.internal", "good.internal",
]


@dataclass
class Setup:
    gw: GatewayProcess
    origins: dict[str, HttpOrigin]
    gateway_ca: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, origin_ca: TestCA) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("upstream-tls")
    private_ca = TestCA("private CA only a BackendTLSPolicy knows")
    client_ca = TestCA("client CA the mTLS origin trusts")
    crl_ca = TestCA("CA with a CRL")
    client_ca_path = tmp / "client-ca.crt"
    client_ca_path.write_bytes(client_ca.cert_pem)

    revoked = crl_ca.issue("revoked.internal")
    good = crl_ca.issue("good.internal")
    pinned = private_ca.issue("pinned.internal")
    certs: dict[str, tuple[Issued, Path | None]] = {
        "selfsigned": (self_signed("selfsigned.test"), None),
        "expired": (origin_ca.issue("expired.test", expired=True), None),
        "wrongname": (origin_ca.issue("other.test"), None),
        "bundle": (origin_ca.issue("bundle.test"), None),
        "private": (private_ca.issue("private.internal"), None),
        "mtls": (private_ca.issue("mtls.internal"), client_ca_path),
        "pinned": (pinned, None),
        "revoked": (revoked, None),
        "good": (good, None),
    }
    origins: dict[str, HttpOrigin] = {}
    for name, (issued, client_ca_file) in certs.items():
        cert, key = issued.write(tmp / name, "leaf")
        origins[name] = HttpOrigin("127.0.0.1", 0, tls=(cert, key), name=name, client_ca=client_ca_file).__enter__()

    ca_cert, ca_key = create_ca("egress-ca")
    (tmp / "ca.crt").write_bytes(ca_cert)
    client = client_ca.issue("gateway-client", client=True)
    other_key_pin = pin_of(self_signed("unrelated.test"))
    validation_extra = "    spkiPins: [{pins}]\n"
    aliases = ", ".join(ALIASED)
    docs = [
        f"""
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: deny-all
  listeners:
  - name: https
    protocol: HTTPS
    tls: {{mode: Terminate, caCertRef: {{name: egress-ca}}}}
  - name: http
    protocol: HTTP
  upstreamTLS:
    additionalTrustBundleSecretRef: {{name: origin-ca}}
    hostAliases:
    - ip: 127.0.0.1
      hostnames: [{aliases}]
""",
        secret_manifest("egress-ca", ca_cert, ca_key),
        secret("origin-ca", ca_crt=origin_ca.cert_pem),
        secret("private-ca", ca_crt=private_ca.cert_pem),
        secret("crl-ca", ca_crt=crl_ca.cert_pem),
        secret("crl", ca_crl=crl_of(crl_ca, [x509.load_pem_x509_certificate(revoked.cert_pem)])),
        secret("client-cert", tls_crt=client.cert_pem, tls_key=client.key_pem),
        # The gateway trust (system + bundle), dynamic forwarding to the requested host.
        route("selfsigned", "selfsigned.test"),
        route("expired", "expired.test"),
        route("wrongname", "wrongname.test"),
        route("bundle", "bundle.test"),
        # A CA only a BackendTLSPolicy knows: one backend has the policy, another reaches the same origin without.
        backend("private", "private.internal", origins["private"].port),
        backend("private-nopolicy", "private.internal", origins["private"].port),
        route("private", "private.test", "private"),
        route("private-nopolicy", "private-nopolicy.test", "private-nopolicy"),
        tls_policy("private", "private", "private-ca", "private.internal"),
        # One route, two rules: the same origin through a Backend with the policy and one without.
        """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mixed}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [mixed.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /policy}}]
    backendRefs: [{name: private}]
  - matches: [{path: {type: PathPrefix, value: /nopolicy}}]
    backendRefs: [{name: private-nopolicy}]
""",
        # Plain HTTP in, TLS (under the policy) out: the Backend has a BackendTLSPolicy.
        """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: plain}
spec:
  parentRefs: [{name: eg, sectionName: http}]
  hostnames: [plain.test]
  rules: [{backendRefs: [{name: private}]}]
""",
        # A policy replaces the gateway trust: `System` alone does not include the trust bundle.
        backend("bundle-system", "bundle.test", origins["bundle"].port),
        route("bundle-system", "bundle-system.test", "bundle-system"),
        """
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: bundle-system}
spec:
  targetRefs: [{group: gateway.kgateway.dev, kind: Backend, name: bundle-system}]
  validation:
    wellKnownCACertificates: System
    hostname: bundle.test
""",
        # mTLS: the origin requires a client certificate from the client CA.
        backend("mtls", "mtls.internal", origins["mtls"].port),
        backend("mtls-nocert", "mtls.internal", origins["mtls"].port),
        route("mtls", "mtls.test", "mtls"),
        route("mtls-nocert", "mtls-nocert.test", "mtls-nocert"),
        tls_policy("mtls", "mtls", "private-ca", "mtls.internal", extra="  clientCertificateRef: {name: client-cert}\n"),
        tls_policy("mtls-nocert", "mtls-nocert", "private-ca", "mtls.internal"),
        # SPKI pins.
        backend("pin-ok", "pinned.internal", origins["pinned"].port),
        backend("pin-bad", "pinned.internal", origins["pinned"].port),
        route("pin-ok", "pin-ok.test", "pin-ok"),
        route("pin-bad", "pin-bad.test", "pin-bad"),
        tls_policy("pin-ok", "pin-ok", "private-ca", "pinned.internal", validation_extra.format(pins=f'"{other_key_pin}", "{pin_of(pinned)}"')),
        tls_policy("pin-bad", "pin-bad", "private-ca", "pinned.internal", validation_extra.format(pins=f'"{other_key_pin}"')),
        # CRLs.
        backend("revoked", "revoked.internal", origins["revoked"].port),
        backend("crl-ok", "good.internal", origins["good"].port),
        route("revoked", "revoked.test", "revoked"),
        route("crl-ok", "crl-ok.test", "crl-ok"),
        tls_policy("revoked", "revoked", "crl-ca", "revoked.internal", "    crlRefs: [{name: crl}]\n"),
        tls_policy("crl-ok", "crl-ok", "crl-ca", "good.internal", "    crlRefs: [{name: crl}]\n"),
    ]
    config = tmp / "config"
    config.mkdir()
    for i, doc in enumerate(docs):
        (config / f"{i:02d}.yaml").write_text(textwrap.dedent(doc))
    gw = GatewayProcess(config, tmp / "data").start()
    try:
        yield Setup(gw, origins, tmp / "ca.crt")
    finally:
        gw.stop()
        for origin in origins.values():
            origin.__exit__()


def get(setup: Setup, url: str) -> httpx.Response:
    verify = ssl.create_default_context(cafile=str(setup.gateway_ca))
    with httpx.Client(proxy=setup.gw.proxy_url, verify=verify, timeout=15) as client:
        return client.get(url)


def assert_tls_invalid(r: httpx.Response, *words: str) -> str:
    assert r.status_code == 502, r.text
    assert r.headers["x-egress-error"] == "upstream-tls-invalid"
    body = r.json()
    assert body["reason"] == "upstream-tls-invalid"
    for word in words:
        assert word in body["error"], body["error"]
    return str(body["error"])


# --- the gateway trust: system bundle + additionalTrustBundleSecretRef ------------------------------------------


def test_self_signed_origin_is_502_naming_it(setup: Setup) -> None:
    r = get(setup, f"https://selfsigned.test:{setup.origins['selfsigned'].port}/")
    assert_tls_invalid(r, "self-signed", "unknown CA")
    assert setup.origins["selfsigned"].requests == []


def test_expired_origin_certificate_is_502_naming_it(setup: Setup) -> None:
    r = get(setup, f"https://expired.test:{setup.origins['expired'].port}/")
    assert_tls_invalid(r, "certificate expired")
    assert setup.origins["expired"].requests == []


def test_certificate_for_another_name_is_502_hostname_mismatch(setup: Setup) -> None:
    r = get(setup, f"https://wrongname.test:{setup.origins['wrongname'].port}/")
    assert_tls_invalid(r, "hostname mismatch", "wrongname.test")
    assert setup.origins["wrongname"].requests == []


def test_ca_only_the_trust_bundle_knows_passes(setup: Setup) -> None:
    r = get(setup, f"https://bundle.test:{setup.origins['bundle'].port}/x")
    assert r.status_code == 200, r.text
    assert r.json()["origin"] == "bundle"


# --- BackendTLSPolicy ----------------------------------------------------------------------------------------------


def test_ca_only_a_backend_tls_policy_knows_passes_for_that_backend_and_its_hostname_is_the_sni(setup: Setup) -> None:
    r = get(setup, "https://private.test/p")
    assert r.status_code == 200, r.text
    assert (r.json()["origin"], r.json()["path"]) == ("private", "/p")
    assert "private.internal" in setup.origins["private"].sni_seen


def test_the_same_origin_through_a_backend_without_the_policy_is_502_unknown_ca(setup: Setup) -> None:
    before = len(setup.origins["private"].requests)
    r = get(setup, "https://private-nopolicy.test/p")
    assert_tls_invalid(r, "unknown CA")
    assert len(setup.origins["private"].requests) == before


def test_one_client_connection_never_reuses_an_upstream_verified_under_another_policy(setup: Setup) -> None:
    verify = ssl.create_default_context(cafile=str(setup.gateway_ca))
    with httpx.Client(proxy=setup.gw.proxy_url, verify=verify, timeout=15) as client:
        first = client.get("https://mixed.test/policy/1")
        second = client.get("https://mixed.test/nopolicy/2")
        third = client.get("https://mixed.test/policy/3")
    assert first.status_code == 200, first.text
    assert_tls_invalid(second, "unknown CA")
    assert third.status_code == 200, third.text
    paths = [path for _, path, _ in setup.origins["private"].requests]
    assert "/policy/1" in paths and "/policy/3" in paths and "/nopolicy/2" not in paths


def test_plain_http_to_a_backend_with_a_tls_policy_is_sent_over_verified_tls(setup: Setup) -> None:
    r = httpx.get("http://plain.test/plain", proxy=setup.gw.proxy_url, timeout=15)
    assert r.status_code == 200, r.text
    assert (r.json()["origin"], r.json()["path"]) == ("private", "/plain")


def test_a_policy_whose_ca_secret_holds_no_certificate_does_not_validate(setup: Setup, tmp_path: Path) -> None:
    """DESIGN.md 4.2: Secret material that does not parse is a validation problem, not a 502 on the first request."""
    config = tmp_path / "config"
    shutil.copytree(setup.gw.configs[0], config)
    broken = "---\n".join(
        [
            secret("not-a-ca", ca_crt="hello"),
            backend("broken", "private.internal", setup.origins["private"].port),
            tls_policy("broken", "broken", "not-a-ca", "private.internal"),
        ]
    )
    (config / "99-broken.yaml").write_text(broken)
    line = next(n for n, text in enumerate(broken.splitlines(), start=1) if "caCertificateRefs" in text)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "egressproxy"), "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        f"99-broken.yaml:{line}: BackendTLSPolicy/default/broken: spec.validation.caCertificateRefs[0].name: "
        "Secret \"default/not-a-ca\" key 'ca.crt' holds no PEM certificate"
    ) in done.stdout + done.stderr


def test_a_policy_replaces_the_gateway_trust(setup: Setup) -> None:
    r = get(setup, "https://bundle-system.test/")
    assert_tls_invalid(r, "unknown CA", "BackendTLSPolicy/default/bundle-system")


def test_mtls_with_client_certificate_ref_passes(setup: Setup) -> None:
    r = get(setup, "https://mtls.test/m")
    assert r.status_code == 200, r.text
    assert r.json()["origin"] == "mtls"


def test_mtls_origin_without_a_client_certificate_is_502_upstream_tls_invalid(setup: Setup) -> None:
    r = get(setup, "https://mtls-nocert.test/m")
    assert_tls_invalid(r, "client certificate")


def test_spki_pin_match_passes(setup: Setup) -> None:
    r = get(setup, "https://pin-ok.test/")
    assert r.status_code == 200, r.text
    assert r.json()["origin"] == "pinned"


def test_spki_pin_mismatch_is_refused(setup: Setup) -> None:
    before = len(setup.origins["pinned"].requests)
    r = get(setup, "https://pin-bad.test/")
    assert_tls_invalid(r, "SPKI pin mismatch", "BackendTLSPolicy/default/pin-bad")
    assert len(setup.origins["pinned"].requests) == before


def test_revoked_certificate_is_refused_via_crl(setup: Setup) -> None:
    r = get(setup, "https://revoked.test/")
    assert_tls_invalid(r, "certificate revoked")
    assert setup.origins["revoked"].requests == []


def test_certificate_not_on_the_crl_passes(setup: Setup) -> None:
    r = get(setup, "https://crl-ok.test/")
    assert r.status_code == 200, r.text
    assert r.json()["origin"] == "good"


def test_tls_failures_are_counted(setup: Setup) -> None:
    get(setup, "https://pin-bad.test/")
    metrics = setup.gw.metrics()
    line = next(l for l in metrics.splitlines() if l.startswith('egress_upstream_errors_total{reason="upstream-tls-invalid"}'))
    assert float(line.rsplit(" ", 1)[1]) >= 1
    assert 'egress_upstream_tls_failures_total{cause="pin-mismatch"}' in metrics
