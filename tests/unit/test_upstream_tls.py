"""Upstream TLS: pins, PEM splitting, CRL loading, SAN matching, parameters from a policy, and the checks of
the OpenSSL connection the addon builds (in-memory handshakes against a pyOpenSSL server)."""

from __future__ import annotations

import base64
import datetime
import subprocess
import textwrap

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL

from addons.upstream_tls import TlsSettings, Verification, build_context, make_connection, refusing_connection
from egressproxy.config.problems import ObjectRef
from egressproxy.snapshot import SecretData
from egressproxy.upstream_tls import (
    PemError,
    UpstreamTlsParams,
    backend_policy,
    backend_ref_from_name,
    describe_alert,
    describe_verify_error,
    gateway_params,
    load_crls,
    matches_subject_alt_names,
    policy_params,
    spki_pin,
    split_pem_certificates,
)
from tests.support.pki import Issued, TestCA

NOW = datetime.datetime.now(datetime.timezone.utc)
POLICY = ObjectRef("BackendTLSPolicy", "ns", "p")


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA("unit root")


def cert_of(issued: Issued) -> x509.Certificate:
    return x509.load_pem_x509_certificate(issued.cert_pem)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def crl(ca: TestCA, *revoked: x509.Certificate, encoding: serialization.Encoding = serialization.Encoding.PEM) -> bytes:
    builder = x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
    builder = builder.last_update(NOW - datetime.timedelta(hours=1)).next_update(NOW + datetime.timedelta(days=1))
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(NOW).build()
        )
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(encoding)


def intermediate(root: TestCA, name: str) -> TestCA:
    """A CA signed by `root` (TestCA API: .key, .cert, .issue)."""
    sub = TestCA(name)
    sub.cert = (
        x509.CertificateBuilder()
        .subject_name(sub.cert.subject)
        .issuer_name(root.cert.subject)
        .public_key(sub.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(root.key, hashes.SHA256())
    )
    sub.cert_pem = pem(sub.cert)
    return sub


def leaf_with_uri(ca: TestCA, dns: str, uri: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns), x509.UniformResourceIdentifier(uri)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return Issued(pem(cert), key_pem)


# --- pins ----------------------------------------------------------------------------------------------------------


def test_spki_pin_agrees_with_openssl(ca: TestCA, tmp_path) -> None:
    issued = ca.issue("pin.test")
    (tmp_path / "c.pem").write_bytes(issued.cert_pem)
    pubkey = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "c.pem"), "-pubkey", "-noout"], capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pubkey, capture_output=True, check=True).stdout
    digest = subprocess.run(["openssl", "dgst", "-sha256", "-binary"], input=der, capture_output=True, check=True).stdout
    assert spki_pin(cert_of(issued)) == base64.b64encode(digest).decode()
    assert len(base64.b64decode(spki_pin(cert_of(issued)))) == 32


def test_pins_differ_per_key_not_per_certificate(ca: TestCA) -> None:
    a, b = ca.issue("a.test"), ca.issue("a.test")
    assert spki_pin(cert_of(a)) != spki_pin(cert_of(b))
    other_ca = TestCA("other")
    reissued = (
        x509.CertificateBuilder()
        .subject_name(cert_of(a).subject)
        .issuer_name(other_ca.cert.subject)
        .public_key(cert_of(a).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .sign(other_ca.key, hashes.SHA256())
    )
    assert spki_pin(reissued) == spki_pin(cert_of(a))


# --- PEM -----------------------------------------------------------------------------------------------------------


def test_split_pem_finds_every_certificate_and_skips_other_blocks(ca: TestCA) -> None:
    one, two = ca.issue("one.test"), ca.issue("two.test")
    bundle = b"# comment\n" + one.cert_pem + one.key_pem + b"junk between\r\n" + two.cert_pem.replace(b"\n", b"\r\n") + ca.cert_pem
    certs = split_pem_certificates(bundle)
    assert [c.subject.rfc4514_string() for c in certs] == ["CN=one.test", "CN=two.test", "CN=unit root"]


def test_split_pem_accepts_trusted_certificate_label(ca: TestCA) -> None:
    text = ca.cert_pem.replace(b"BEGIN CERTIFICATE", b"BEGIN TRUSTED CERTIFICATE").replace(b"END CERTIFICATE", b"END TRUSTED CERTIFICATE")
    assert split_pem_certificates(text)[0].subject == ca.cert.subject


def test_split_pem_without_certificates_is_empty_and_a_broken_one_is_an_error(ca: TestCA) -> None:
    assert split_pem_certificates(b"") == []
    assert split_pem_certificates(ca.key_pem) == []
    with pytest.raises(PemError):
        split_pem_certificates(b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")


# --- CRLs ----------------------------------------------------------------------------------------------------------


def test_load_crls_pem_der_and_several(ca: TestCA) -> None:
    revoked = cert_of(ca.issue("r.test"))
    pem_crl = crl(ca, revoked)
    der_crl = crl(ca, revoked, encoding=serialization.Encoding.DER)
    assert load_crls(pem_crl)[0].get_revoked_certificate_by_serial_number(revoked.serial_number) is not None
    assert load_crls(der_crl)[0].issuer == ca.cert.subject
    other = TestCA("other")
    assert [c.issuer for c in load_crls(pem_crl + b"\n" + crl(other))] == [ca.cert.subject, other.cert.subject]


@pytest.mark.parametrize("data", [b"", b"   \n", b"not a crl", b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"])
def test_load_crls_rejects_what_is_not_a_crl(data: bytes) -> None:
    with pytest.raises(PemError):
        load_crls(data)


# --- subjectAltNames -----------------------------------------------------------------------------------------------


def test_subject_alt_names_match_hostnames_wildcards_and_uris(ca: TestCA) -> None:
    cert = cert_of(leaf_with_uri(ca, "svc.example.test", "spiffe://cluster/ns/a/sa/b"))
    assert matches_subject_alt_names(cert, [("Hostname", "svc.example.test")])
    assert matches_subject_alt_names(cert, [("Hostname", "SVC.example.test.")])
    assert matches_subject_alt_names(cert, [("Hostname", "nope.test"), ("URI", "spiffe://cluster/ns/a/sa/b")])
    assert not matches_subject_alt_names(cert, [("URI", "spiffe://cluster/ns/a/sa/c"), ("Hostname", "example.test")])
    wildcard = cert_of(ca.issue("*.wild.test"))
    assert matches_subject_alt_names(wildcard, [("Hostname", "a.wild.test")])
    assert not matches_subject_alt_names(wildcard, [("Hostname", "a.b.wild.test")])
    assert not matches_subject_alt_names(wildcard, [("Hostname", "wild.test")])


# --- parameters ----------------------------------------------------------------------------------------------------


def secrets(**by_name: dict[str, bytes]):
    table = {name.replace("_", "-"): SecretData(values) for name, values in by_name.items()}
    return lambda namespace, name: table.get(name) if namespace == "ns" else None


def test_policy_params_read_cas_hostname_pins_crls_and_client_certificate(ca: TestCA) -> None:
    other = TestCA("second")
    client = ca.issue("client", client=True)
    spec = {
        "validation": {
            "caCertificateRefs": [{"group": "", "kind": "Secret", "name": "cas"}],
            "hostname": "api.internal",
            "subjectAltNames": [{"type": "URI", "uri": "spiffe://x"}, {"type": "Hostname", "hostname": "b.internal"}],
            "spkiPins": ["AAAA"],
            "crlRefs": [{"name": "crl"}],
        },
        "clientCertificateRef": {"name": "client"},
    }
    lookup = secrets(
        cas={"ca.crt": ca.cert_pem, "more.pem": other.cert_pem + ca.cert_pem},
        crl={"ca.crl": crl(ca, encoding=serialization.Encoding.DER)},
        client={"tls.crt": client.cert_pem + ca.cert_pem, "tls.key": client.key_pem},
    )
    params = policy_params(POLICY, spec, lookup)
    assert params.problems == ()
    assert params.source == "BackendTLSPolicy/ns/p"
    assert not params.system_trust
    assert len(params.trust_der) == 3
    assert params.hostname == "api.internal"
    assert params.subject_alt_names == (("URI", "spiffe://x"), ("Hostname", "b.internal"))
    assert params.spki_pins == frozenset({"AAAA"})
    assert len(params.crls_der) == 1
    assert len(params.client_chain_der) == 2 and params.has_client_certificate
    assert b"PRIVATE KEY" not in repr(params).encode() and "client_key_pem" not in repr(params)  # never in a repr
    assert params == policy_params(POLICY, spec, lookup)  # equal inputs, equal parameters


def test_well_known_system_trust_alone() -> None:
    params = policy_params(POLICY, {"validation": {"wellKnownCACertificates": "System", "hostname": "h"}}, secrets())
    assert (params.system_trust, params.trust_der, params.problems) == (True, (), ())


@pytest.mark.parametrize(
    "spec,lookup_args,problem",
    [
        ({"caCertificateRefs": [{"name": "empty"}]}, {"empty": {"ca.crt": b"nothing here"}}, "holds no PEM certificate"),
        ({"caCertificateRefs": [{"name": "gone"}]}, {}, 'Secret "ns/gone" not found'),
        ({"caCertificateRefs": [{"name": "cas"}], "crlRefs": [{"name": "nocrl"}]}, {"nocrl": {"other": b"x"}}, "has no key 'ca.crl'"),
        ({"caCertificateRefs": [{"name": "cas"}], "crlRefs": [{"name": "badcrl"}]}, {"badcrl": {"ca.crl": b"garbage"}}, "validation.crlRefs[0]"),
    ],
    ids=["ca-secret-without-certificates", "ca-secret-missing", "crl-key-missing", "crl-unreadable"],
)
def test_policy_problems_are_reported_never_ignored(ca: TestCA, spec, lookup_args, problem) -> None:
    tables = {"cas": {"ca.crt": ca.cert_pem}, **lookup_args}
    lookup = lambda namespace, name: SecretData(tables[name]) if name in tables else None  # noqa: E731
    params = policy_params(POLICY, {"validation": {"hostname": "h", **spec}}, lookup)
    assert any(problem in p for p in params.problems), params.problems


def test_client_key_that_does_not_match_the_certificate_is_a_problem(ca: TestCA) -> None:
    a, b = ca.issue("a", client=True), ca.issue("b", client=True)
    spec = {"validation": {"wellKnownCACertificates": "System", "hostname": "h"}, "clientCertificateRef": {"name": "c"}}
    params = policy_params(POLICY, spec, secrets(c={"tls.crt": a.cert_pem, "tls.key": b.key_pem}))
    assert params.problems and "not the key of the first certificate" in params.problems[0]
    assert not params.has_client_certificate


def test_gateway_params_are_system_plus_the_bundle(ca: TestCA) -> None:
    other = TestCA("b")
    secret = ObjectRef("Secret", "ns", "bundle")
    params = gateway_params(ca.cert_pem + b"\n" + other.cert_pem, secret, "the system store /etc/ssl/x.pem")
    assert params.system_trust and len(params.trust_der) == 2 and not params.from_policy
    assert params.source == "the system store /etc/ssl/x.pem + Secret ns/bundle"
    assert gateway_params(None).trust_der == () and gateway_params(None).source == "the system store"


def test_backend_policy_lookup_on_a_compiled_snapshot(ca: TestCA) -> None:
    from tests.unit.test_compiler import compiled

    ca_pem = textwrap.indent(ca.cert_pem.decode(), "    ")
    snapshot = compiled(
        f"""
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: gw}}
spec:
  listeners: [{{name: https, protocol: HTTPS, tls: {{mode: Terminate, caCertRef: {{name: egress-ca}}}}}}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: b, namespace: team}}
spec: {{type: Static, static: {{hosts: [{{host: b.internal, port: 443}}]}}}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: plain, namespace: team}}
spec: {{type: Static, static: {{hosts: [{{host: p.internal, port: 443}}]}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: cas, namespace: team}}
stringData:
  ca.crt: |
{ca_pem}
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: p, namespace: team}}
spec:
  targetRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: b}}]
  validation:
    caCertificateRefs: [{{name: cas}}]
    hostname: b.internal
"""
    )
    ref = backend_ref_from_name(snapshot, "team/b")
    assert ref == ObjectRef("Backend", "team", "b")
    policy = backend_policy(snapshot, ref)
    assert policy is not None and policy.ref == ObjectRef("BackendTLSPolicy", "team", "p")
    params = policy_params(policy.ref, policy.spec, snapshot.secret)
    assert params.problems == () and params.hostname == "b.internal" and len(params.trust_der) == 1
    assert backend_policy(snapshot, backend_ref_from_name(snapshot, "team/plain")) is None
    assert backend_ref_from_name(snapshot, "team/missing") is None
    assert backend_ref_from_name(snapshot, "Service/ns/svc") == ObjectRef("Service", "ns", "svc")


# --- causes --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code,text,expected",
    [
        (10, "certificate has expired", "certificate expired (certificate has expired)"),
        (18, "self-signed certificate", "self-signed certificate (unknown CA)"),
        (20, "unable to get local issuer certificate", "unknown CA (unable to get local issuer certificate)"),
        (62, "hostname mismatch", "hostname mismatch:"),
        (23, "certificate revoked", "certificate revoked:"),
        (99, "something new", "certificate verify failed (something new)"),
    ],
)
def test_describe_verify_error_names_the_cause(code: int, text: str, expected: str) -> None:
    detail = describe_verify_error(code, text, 0, "CN=x", "x.test", "src")
    assert detail.startswith(expected) and "x.test" in detail and "src" in detail


def test_describe_alert() -> None:
    assert describe_alert("tlsv13 alert certificate required", sent_client_certificate=False, certificate_requested=True, name="o", source="s").startswith("client certificate required")
    assert describe_alert("tlsv1 alert unknown ca", sent_client_certificate=True, certificate_requested=True, name="o", source="s").startswith("client certificate rejected")
    assert "aborted" in describe_alert("tlsv1 alert internal error", sent_client_certificate=False, certificate_requested=False, name="o", source="s")


# --- the OpenSSL connection: in-memory handshakes --------------------------------------------------------------------


def server_for(issued: Issued, chain: tuple[x509.Certificate, ...] = (), require_client_from: TestCA | None = None) -> SSL.Connection:
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.use_certificate(cert_of(issued))
    for c in chain:
        context.add_extra_chain_cert(c)
    context.use_privatekey(serialization.load_pem_private_key(issued.key_pem, None))  # type: ignore[arg-type]
    if require_client_from is not None:
        context.get_cert_store().add_cert(__import__("OpenSSL").crypto.X509.from_cryptography(require_client_from.cert))
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *a: bool(a[-1]))
    conn = SSL.Connection(context, None)
    conn.set_accept_state()
    return conn


def handshake(client: SSL.Connection, server: SSL.Connection) -> SSL.Error | None:
    """Pump bytes until both sides finished; the client's error, if it fails."""
    done = {"client": False, "server": False}
    for _ in range(20):
        for side, conn, peer in (("client", client, server), ("server", server, client)):
            if not done[side]:
                try:
                    conn.do_handshake()
                    done[side] = True
                except SSL.WantReadError:
                    pass
                except SSL.Error as e:
                    if side == "client":
                        return e
                    done[side] = True
            try:
                data = conn.bio_read(65536)
            except SSL.WantReadError:
                data = b""
            if data:
                peer.bio_write(data)
        if all(done.values()):
            return None
    raise AssertionError("handshake did not finish")


def params(ca: TestCA | None = None, **kw: object) -> UpstreamTlsParams:
    trust = (ca.cert.public_bytes(serialization.Encoding.DER),) if ca else ()
    return UpstreamTlsParams("BackendTLSPolicy/ns/p", system_trust=False, trust_der=trust, **kw)  # type: ignore[arg-type]


def connect(p: UpstreamTlsParams, name: str, server: SSL.Connection) -> tuple[Verification, SSL.Error | None]:
    verification = Verification(p, name)
    client = make_connection(build_context(p, TlsSettings()), verification)
    return verification, handshake(client, server)


def test_a_trusted_certificate_for_the_name_passes(ca: TestCA) -> None:
    v, err = connect(params(ca), "ok.test", server_for(ca.issue("ok.test")))
    assert err is None and v.failure is None


@pytest.mark.parametrize(
    "issue_name,expired,verify_name,cause",
    [
        ("other.test", False, "ok.test", "hostname mismatch"),
        ("ok.test", True, "ok.test", "certificate expired"),
    ],
)
def test_wrong_name_and_expired_fail_naming_the_cause(ca: TestCA, issue_name, expired, verify_name, cause) -> None:
    v, err = connect(params(ca), verify_name, server_for(ca.issue(issue_name, expired=expired)))
    assert err is not None and v.failure is not None and v.failure.startswith(cause)


def test_unknown_ca_fails(ca: TestCA) -> None:
    v, err = connect(params(TestCA("someone else")), "ok.test", server_for(ca.issue("ok.test")))
    assert err is not None and v.failure is not None and v.failure.startswith("unknown CA")


def test_spki_pins(ca: TestCA) -> None:
    issued = ca.issue("pin.test")
    good = params(ca, spki_pins=frozenset({spki_pin(cert_of(issued)), "x"}))
    v, err = connect(good, "pin.test", server_for(issued))
    assert err is None and v.failure is None
    bad = params(ca, spki_pins=frozenset({spki_pin(cert_of(ca.issue("other")))}))
    v, err = connect(bad, "pin.test", server_for(issued))
    assert err is not None and v.failure is not None and v.failure.startswith("SPKI pin mismatch")


def test_crl_refuses_a_revoked_leaf_and_passes_the_others(ca: TestCA) -> None:
    revoked, fine = ca.issue("r.test"), ca.issue("f.test")
    the_crl = load_crls(crl(ca, cert_of(revoked)))[0].public_bytes(serialization.Encoding.DER)
    p = params(ca, crls_der=(the_crl,))
    v, err = connect(p, "r.test", server_for(revoked))
    assert err is not None and v.failure is not None and v.failure.startswith("certificate revoked")
    v, err = connect(p, "f.test", server_for(fine))
    assert err is None and v.failure is None


def test_crl_of_another_issuer_does_not_cover_the_leaf(ca: TestCA) -> None:
    other_crl = load_crls(crl(TestCA("unrelated")))[0].public_bytes(serialization.Encoding.DER)
    v, err = connect(params(ca, crls_der=(other_crl,)), "f.test", server_for(ca.issue("f.test")))
    assert err is not None and v.failure is not None and v.failure.startswith("no CRL for the issuer")


def test_crl_of_an_intermediate_checks_leaves_and_tolerates_no_crl_from_the_root(ca: TestCA) -> None:
    sub = intermediate(ca, "unit intermediate")
    revoked, fine = sub.issue("r.test"), sub.issue("f.test")
    sub_crl = load_crls(crl(sub, cert_of(revoked)))[0].public_bytes(serialization.Encoding.DER)
    p = params(ca, crls_der=(sub_crl,))
    v, err = connect(p, "f.test", server_for(fine, chain=(sub.cert,)))
    assert err is None and v.failure is None
    v, err = connect(p, "r.test", server_for(revoked, chain=(sub.cert,)))
    assert err is not None and v.failure is not None and v.failure.startswith("certificate revoked")


def test_subject_alt_names_replace_the_hostname_check(ca: TestCA) -> None:
    issued = leaf_with_uri(ca, "internal-name.test", "spiffe://cluster/ns/a/sa/b")
    p = params(ca, subject_alt_names=(("URI", "spiffe://cluster/ns/a/sa/b"),))
    v, err = connect(p, "public-name.test", server_for(issued))
    assert err is None and v.failure is None
    p = params(ca, subject_alt_names=(("URI", "spiffe://cluster/ns/a/sa/other"),))
    v, err = connect(p, "internal-name.test", server_for(issued))
    assert err is not None and v.failure is not None and v.failure.startswith("subjectAltName mismatch")


def test_client_certificate_is_presented_and_the_request_for_it_noticed(ca: TestCA) -> None:
    client_ca = TestCA("client ca")
    client = client_ca.issue("gateway", client=True)
    lookup = secrets(c={"tls.crt": client.cert_pem, "tls.key": client.key_pem})
    spec = {"validation": {"wellKnownCACertificates": "System", "hostname": "m.test"}, "clientCertificateRef": {"name": "c"}}
    with_cert = policy_params(POLICY, spec, lookup)
    p = params(ca, client_chain_der=with_cert.client_chain_der, client_key_pem=with_cert.client_key_pem)
    server = server_for(ca.issue("m.test"), require_client_from=client_ca)
    v, err = connect(p, "m.test", server)
    assert err is None and v.failure is None and v.certificate_requested
    peer = server.get_peer_certificate()
    assert peer is not None and peer.to_cryptography().subject == cert_of(client).subject
    v, err = connect(params(ca), "m.test", server_for(ca.issue("m.test"), require_client_from=client_ca))
    assert v.certificate_requested  # TLS 1.3: our side completes; the origin rejects us afterwards


def test_refusing_connection_fails_whatever_the_origin_presents(ca: TestCA) -> None:
    client = refusing_connection(TlsSettings(), "policy cannot be applied", "ok.test", "src")
    assert handshake(client, server_for(ca.issue("ok.test"))) is not None
    assert client.egress.failure == "policy cannot be applied"


def test_failure_causes_map_to_a_bounded_set_of_metric_labels() -> None:
    from egressproxy.upstream_tls import tls_failure_cause

    assert tls_failure_cause("certificate expired (certificate has expired): certificate 'x'") == "expired"
    assert tls_failure_cause("self-signed certificate (unknown CA): ...") == "self-signed"
    assert tls_failure_cause("unknown CA: certificate 'a'") == "unknown-ca"
    assert tls_failure_cause("hostname mismatch: certificate 'a' for b") == "hostname-mismatch"
    assert tls_failure_cause("SPKI pin mismatch: leaf has pin X") == "pin-mismatch"
    assert tls_failure_cause("certificate revoked: ...") == "revoked"
    assert tls_failure_cause("client certificate required by the origin") == "client-certificate-required"
    assert tls_failure_cause("something else entirely") == "other"


def test_a_der_crl_ending_in_whitespace_bytes_still_loads(ca: TestCA) -> None:
    """DER is binary: a signature that happens to end in 0x20 or 0x0a must not be stripped away."""
    for _ in range(400):
        der = crl(ca, encoding=serialization.Encoding.DER)
        if der[-1:].isspace():
            break
    else:
        pytest.skip("no DER CRL ending in a whitespace byte drawn")
    assert load_crls(der)[0].issuer == ca.cert.subject


def test_the_upstream_leg_gives_back_its_openssl_buffers_while_idle_and_still_carries_data(ca: TestCA) -> None:
    from egressproxy.engine.tls_buffers import releases_buffers

    p = params(ca)
    client = make_connection(build_context(p, TlsSettings()), Verification(p, "ok.test"))
    server = server_for(ca.issue("ok.test"))
    assert releases_buffers(client)
    assert handshake(client, server) is None
    for round_trip in (b"first", b"after the buffers were released"):
        client.send(round_trip)
        server.bio_write(client.bio_read(65536))
        assert server.recv(65536) == round_trip
