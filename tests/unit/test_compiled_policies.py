"""Compiled policies: what the snapshot hands the data plane ready-made, and the Secrets that do not parse.

Each compiled form is checked against what its consumer computed per request before (`policy_params`,
`gateway_params`, `DnsSettings.from_spec` over the effective DNSPolicy), so swapping a consumer over changes
nothing it decides. Problems are asserted as whole lines: file, line, object, field path and message.
"""

from __future__ import annotations

import base64
import datetime
import json
import textwrap

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from passlib.hash import apr_md5_crypt, bcrypt, ldap_sha1

from egressproxy.compiled_policies import BasicAuth, CompiledPolicies
from egressproxy.compiler import CompileResult, compile_config
from egressproxy.compiler.htpasswd_tables import parse_htpasswd
from egressproxy.config.loader import load_text
from egressproxy.config.problems import ObjectRef
from egressproxy.resolver import DnsSettings
from egressproxy.snapshot import Snapshot
from egressproxy.system_trust import system_store
from egressproxy.upstream_tls import backend_policy, gateway_params, policy_params, spki_pin
from tests.support.pki import TestCA

FILE = "cfg.yaml"
NOW = datetime.datetime.now(datetime.timezone.utc)
API = ObjectRef("Backend", "team", "api")
PLAIN = ObjectRef("Backend", "team", "plain")


@pytest.fixture(scope="module")
def pki() -> dict[str, bytes]:
    root, other = TestCA("compiled root"), TestCA("compiled other")
    client = root.issue("gateway-client", client=True)
    revocations = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(root.cert.subject)
        .last_update(NOW)
        .next_update(NOW + datetime.timedelta(days=1))
        .sign(root.key, hashes.SHA256())
    )
    return {
        "ca": root.cert_pem,
        "other_ca": other.cert_pem,
        "client_crt": client.cert_pem,
        "client_key": client.key_pem,
        "other_key": other.key_pem,
        "crl": revocations.public_bytes(serialization.Encoding.PEM),
    }


def yaml_string(value: bytes | str) -> str:
    """A PEM (or any text) as one YAML flow scalar (JSON strings are YAML)."""
    return json.dumps(value.decode() if isinstance(value, bytes) else value)


def config(pki: dict[str, bytes], **override: str) -> str:
    """Gateway, two Backends (one a parent proxy's neighbour), every policy kind the compiled forms cover."""
    values = {
        "ca": yaml_string(pki["ca"]),
        "crl": yaml_string(pki["crl"]),
        "client_crt": yaml_string(pki["client_crt"]),
        "client_key": yaml_string(pki["client_key"]),
        "bundle": yaml_string(pki["other_ca"]),
        "htpasswd": yaml_string("team-a/bot:" + bcrypt.using(rounds=4).hash("pw") + "\n"),
        "listener_htpasswd": yaml_string("ops:" + ldap_sha1.hash("ops-pw") + "\n"),
    }
    values.update(override)
    pin = spki_pin(x509.load_pem_x509_certificate(pki["ca"]))
    return textwrap.dedent(
        f"""\
        apiVersion: clrk.apoxy.dev/v1alpha1
        kind: EgressGateway
        metadata: {{name: gw, namespace: team}}
        spec:
          listeners:
          - {{name: http, protocol: HTTP}}
          - {{name: admin, protocol: HTTP, port: 8081}}
          upstreamTLS:
            additionalTrustBundleSecretRef: {{name: bundle}}
          ssrfGuard: {{allowCIDRs: [10.1.0.0/16], denyCIDRs: [192.0.2.0/24]}}
          parentRef: {{name: corp-proxy}}
        ---
        apiVersion: gateway.kgateway.dev/v1alpha1
        kind: Backend
        metadata: {{name: api, namespace: team}}
        spec: {{type: Static, static: {{hosts: [{{host: api.internal, port: 443}}]}}}}
        ---
        apiVersion: gateway.kgateway.dev/v1alpha1
        kind: Backend
        metadata: {{name: plain, namespace: team}}
        spec: {{type: Static, static: {{hosts: [{{host: plain.internal, port: 443}}]}}}}
        ---
        apiVersion: gateway.kgateway.dev/v1alpha1
        kind: Backend
        metadata: {{name: corp-proxy, namespace: team}}
        spec:
          type: Static
          static: {{hosts: [{{host: proxy.corp, port: 3128}}]}}
          parent: {{authSecretRef: {{name: corp-creds}}}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: corp-creds, namespace: team}}
        stringData: {{username: corp-user, password: corp-password-secret}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: bundle, namespace: team}}
        stringData:
          bundle.pem: {values["bundle"]}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: api-ca, namespace: team}}
        stringData:
          ca.crt: {values["ca"]}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: api-crl, namespace: team}}
        stringData:
          ca.crl: {values["crl"]}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: api-client, namespace: team}}
        stringData:
          tls.crt: {values["client_crt"]}
          tls.key: {values["client_key"]}
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: BackendTLSPolicy
        metadata: {{name: api-tls, namespace: team}}
        spec:
          targetRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: api}}]
          validation:
            caCertificateRefs: [{{name: api-ca}}]
            hostname: api.example.com
            subjectAltNames: [{{type: Hostname, hostname: api.example.com}}]
            spkiPins: ["{pin}"]
            crlRefs: [{{name: api-crl}}]
          clientCertificateRef: {{name: api-client}}
        ---
        apiVersion: policy.egressproxy.io/v1alpha1
        kind: DNSPolicy
        metadata: {{name: gateway-dns, namespace: team}}
        spec:
          targetRefs: [{{group: clrk.apoxy.dev, kind: EgressGateway, name: gw}}]
          resolvers: ["10.0.0.10:53"]
          minTTL: 5s
        ---
        apiVersion: policy.egressproxy.io/v1alpha1
        kind: DNSPolicy
        metadata: {{name: api-dns, namespace: team}}
        spec:
          targetRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: api}}]
          maxTTL: 60s
          reverseLookup: {{enforce: true}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: htpasswd, namespace: team}}
        stringData:
          .htpasswd: {values["htpasswd"]}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: admin-htpasswd, namespace: team}}
        stringData:
          .htpasswd: {values["listener_htpasswd"]}
        ---
        apiVersion: gateway.kgateway.dev/v1alpha1
        kind: HTTPListenerPolicy
        metadata: {{name: auth, namespace: team}}
        spec:
          targetRefs: [{{group: clrk.apoxy.dev, kind: EgressGateway, name: gw}}]
          basicAuth: {{credentialsSecretRef: {{name: htpasswd}}}}
        ---
        apiVersion: gateway.kgateway.dev/v1alpha1
        kind: HTTPListenerPolicy
        metadata: {{name: admin-auth, namespace: team}}
        spec:
          targetRefs: [{{group: clrk.apoxy.dev, kind: EgressGateway, name: gw, sectionName: admin}}]
          basicAuth: {{credentialsSecretRef: {{name: admin-htpasswd}}}}
        """
    )


def compile_text(text: str) -> CompileResult:
    loaded = load_text(text, FILE)
    assert [str(p) for p in loaded.problems] == []
    return compile_config(loaded.resources)


def snapshot_of(text: str) -> Snapshot:
    result = compile_text(text)
    assert [str(p) for p in result.problems] == []
    assert result.snapshot is not None
    return result.snapshot


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if needle in line)


# --- the compiled forms ------------------------------------------------------------------------------------------


def test_backend_tls_is_what_policy_params_builds_with_the_material_parsed(pki: dict[str, bytes]) -> None:
    snapshot = snapshot_of(config(pki))
    tls = snapshot.compiled.tls_for(API)
    policy = backend_policy(snapshot, API)
    assert policy is not None
    assert tls.params == policy_params(policy.ref, policy.spec, snapshot.secret)
    assert tls.params.problems == () and tls.params.has_client_certificate
    assert tls.source == "BackendTLSPolicy/team/api-tls" and tls.policy == policy.ref
    assert [c.public_bytes(serialization.Encoding.PEM) for c in tls.ca_certificates] == [pki["ca"]]
    assert [c.public_bytes(serialization.Encoding.PEM) for c in tls.crls] == [pki["crl"]]
    assert tls.client_chain[0].public_bytes(serialization.Encoding.PEM) == pki["client_crt"]
    assert tls.client_key is not None and tls.params.client_key_pem == pki["client_key"]
    assert tls.hostname == "api.example.com"
    assert tls.subject_alt_names == (("Hostname", "api.example.com"),)
    assert tls.spki_pins == frozenset({spki_pin(tls.ca_certificates[0])})
    assert snapshot.compiled.tls_for_name("team/api") is tls
    assert snapshot.compiled.tls_for_name("Backend/team/api") is tls


def test_without_a_policy_the_gateway_trust_applies(pki: dict[str, bytes]) -> None:
    snapshot = snapshot_of(config(pki))
    compiled = snapshot.compiled
    assert compiled.tls_for(PLAIN) is compiled.gateway_tls
    assert compiled.tls_for(None) is compiled.gateway_tls
    assert compiled.tls_for_name("team/plain") is compiled.gateway_tls
    assert compiled.tls_for_name("team/missing") is compiled.gateway_tls
    assert compiled.tls_for_name(None) is compiled.gateway_tls
    expected = gateway_params(snapshot.gateway.trust_bundle_pem, snapshot.gateway.trust_bundle_secret, system_store().describe())
    assert compiled.gateway_tls.source == expected.source  # names the system store and the bundle's Secret
    assert compiled.gateway_tls.params == expected
    assert [c.public_bytes(serialization.Encoding.PEM) for c in compiled.gateway_tls.ca_certificates] == [
        pki["other_ca"]
    ]


def test_dns_settings_per_backend_then_the_gateway(pki: dict[str, bytes]) -> None:
    compiled = snapshot_of(config(pki)).compiled
    gateway = DnsSettings(resolvers=(("10.0.0.10", 53),), min_ttl=5.0, policy="DNSPolicy/team/gateway-dns")
    assert compiled.dns_for(None) == gateway
    assert compiled.dns_for(PLAIN) == gateway
    assert compiled.dns_for(ObjectRef("Backend", "team", "not-there")) == gateway
    # Backend > Gateway, field by field: the Backend's policy names the decision, the gateway's resolvers stay.
    assert compiled.dns_for(API) == DnsSettings(
        resolvers=(("10.0.0.10", 53),), min_ttl=5.0, max_ttl=60.0, reverse_enforce=True, policy="DNSPolicy/team/api-dns"
    )


def test_the_ssrf_guard_is_built_from_the_gateway(pki: dict[str, bytes]) -> None:
    guard = snapshot_of(config(pki)).compiled.ssrf_guard
    assert guard.check("10.1.2.3").allowed  # allowCIDRs opens a private range
    assert not guard.check("10.2.0.1").allowed  # the rest of 10/8 stays refused
    assert not guard.check("192.0.2.7").allowed  # denyCIDRs
    assert guard.check("93.184.216.34").allowed


def test_basic_auth_per_listener_then_the_gateway(pki: dict[str, bytes]) -> None:
    compiled = snapshot_of(config(pki)).compiled
    gateway_auth = compiled.basic_auth_for("http")
    assert gateway_auth is not None and gateway_auth is compiled.basic_auth_for(None)
    assert gateway_auth.policy == "HTTPListenerPolicy/team/auth"
    assert gateway_auth.check("team-a/bot", "pw")
    assert not gateway_auth.check("team-a/bot", "wrong")
    assert not gateway_auth.check("nobody", "pw")
    admin = compiled.basic_auth_for("admin")
    assert admin is not None and admin.policy == "HTTPListenerPolicy/team/admin-auth"
    assert admin.check("ops", "ops-pw") and not admin.check("team-a/bot", "pw")
    assert compiled.basic_auth_for("unknown-listener") is gateway_auth


def test_no_basic_auth_without_a_policy() -> None:
    assert CompiledPolicies().basic_auth_for("http") is None


def test_parent_credentials_by_address(pki: dict[str, bytes]) -> None:
    compiled = snapshot_of(config(pki)).compiled
    expected = "Basic " + base64.b64encode(b"corp-user:corp-password-secret").decode()
    assert compiled.parent_authorization("proxy.corp", 3128) == expected
    assert compiled.parent_authorization("proxy.corp", 3129) is None
    assert compiled.parent_authorization("api.internal", 443) is None


def test_the_dump_shows_what_was_compiled_and_no_key_material(pki: dict[str, bytes]) -> None:
    snapshot = snapshot_of(config(pki))
    dump = snapshot.to_dump()["compiled"]
    text = json.dumps(snapshot.to_dump())
    key_body = pki["client_key"].decode().splitlines()[1]
    for secret in ("corp-password-secret", "PRIVATE KEY", key_body, "$2b$", "{SHA}", "Basic "):
        assert secret not in text
    assert repr(snapshot.compiled).count("Basic ") == 0 and "corp-password" not in repr(snapshot.compiled)
    api = dump["upstreamTLS"]["backends"]["Backend/team/api"]
    assert api["source"] == "BackendTLSPolicy/team/api-tls"
    assert api["caCertificates"] == ["CN=compiled root"]
    assert api["clientCertificate"] == "CN=gateway-client"
    assert api["spkiPins"] == 1
    assert dump["basicAuth"]["listeners"] == {
        "admin": {"policy": "HTTPListenerPolicy/team/admin-auth", "users": 1},
        "http": {"policy": "HTTPListenerPolicy/team/auth", "users": 1},
    }
    assert dump["parents"] == ["proxy.corp:3128"]
    assert dump["ssrfGuard"] == {"allowCIDRs": ["10.1.0.0/16"], "denyCIDRs": ["192.0.2.0/24"]}


# --- Secrets that do not parse: problems at the referencing field ------------------------------------------------

BROKEN_PEM = yaml_string("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")


@pytest.mark.parametrize(
    ("override", "needle", "expected"),
    [
        (
            {"ca": yaml_string("just text")},
            "caCertificateRefs: [{name: api-ca}]",
            'BackendTLSPolicy/team/api-tls: spec.validation.caCertificateRefs[0].name: '
            "Secret \"team/api-ca\" key 'ca.crt' holds no PEM certificate",
        ),
        (
            {"ca": BROKEN_PEM},
            "caCertificateRefs: [{name: api-ca}]",
            'BackendTLSPolicy/team/api-tls: spec.validation.caCertificateRefs[0].name: '
            "Secret \"team/api-ca\" key 'ca.crt': a PEM certificate does not parse",
        ),
        (
            {"crl": yaml_string("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")},
            "crlRefs: [{name: api-crl}]",
            'BackendTLSPolicy/team/api-tls: spec.validation.crlRefs[0].name: '
            "Secret \"team/api-crl\" key 'ca.crl' is no CRL (PEM \"X509 CRL\" or DER)",
        ),
        (
            {"crl": yaml_string("garbage")},
            "crlRefs: [{name: api-crl}]",
            'BackendTLSPolicy/team/api-tls: spec.validation.crlRefs[0].name: '
            "Secret \"team/api-crl\" key 'ca.crl' is no CRL (PEM \"X509 CRL\" or DER)",
        ),
        (
            {"client_key": yaml_string("not a key")},
            "clientCertificateRef: {name: api-client}",
            'BackendTLSPolicy/team/api-tls: spec.clientCertificateRef.name: '
            "Secret \"team/api-client\" key 'tls.key' is no unencrypted PEM private key",
        ),
        (
            {"client_crt": yaml_string("not a certificate")},
            "clientCertificateRef: {name: api-client}",
            'BackendTLSPolicy/team/api-tls: spec.clientCertificateRef.name: '
            "Secret \"team/api-client\" key 'tls.crt' holds no PEM certificate",
        ),
        (
            {"bundle": BROKEN_PEM},
            "additionalTrustBundleSecretRef: {name: bundle}",
            'EgressGateway/team/gw: spec.upstreamTLS.additionalTrustBundleSecretRef.name: '
            "Secret \"team/bundle\" key 'bundle.pem': a PEM certificate does not parse",
        ),
        (
            {"bundle": yaml_string("nothing here")},
            "additionalTrustBundleSecretRef: {name: bundle}",
            'EgressGateway/team/gw: spec.upstreamTLS.additionalTrustBundleSecretRef.name: '
            "Secret \"team/bundle\" key 'bundle.pem' holds no PEM certificate",
        ),
        (
            {"htpasswd": yaml_string("# team A\n\nteam-a/bot:clear-text-password\n")},
            "basicAuth: {credentialsSecretRef: {name: htpasswd}}",
            "HTTPListenerPolicy/team/auth: spec.basicAuth.credentialsSecretRef.name: "
            "Secret \"team/htpasswd\" key '.htpasswd' line 3: the hash of user \"team-a/bot\" is of an unknown "
            "scheme (use bcrypt, {SHA}, $apr1$, $5$ or $6$)",
        ),
        (
            {"htpasswd": yaml_string("team-a/bot\n")},
            "basicAuth: {credentialsSecretRef: {name: htpasswd}}",
            "HTTPListenerPolicy/team/auth: spec.basicAuth.credentialsSecretRef.name: "
            "Secret \"team/htpasswd\" key '.htpasswd' line 1 is not user:hash",
        ),
    ],
)
def test_secret_material_that_does_not_parse_is_a_problem(
    pki: dict[str, bytes], override: dict[str, str], needle: str, expected: str
) -> None:
    text = config(pki, **override)
    result = compile_text(text)
    assert [str(p) for p in result.problems] == [f"{FILE}:{line_of(text, needle)}: {expected}"]
    assert not result.ok
    policy_or_gateway = expected.split(":")[0].split("/")
    conditions = {c.type: c for c in result.statuses[ObjectRef(*policy_or_gateway)]}
    assert conditions["ResolvedRefs"].status == "False"


def test_a_client_key_that_is_not_the_certificates_key_is_a_problem(pki: dict[str, bytes]) -> None:
    text = config(pki, client_key=yaml_string(pki["other_key"]))
    assert [str(p) for p in compile_text(text).problems] == [
        f"{FILE}:{line_of(text, 'clientCertificateRef: {name: api-client}')}: BackendTLSPolicy/team/api-tls: "
        'spec.clientCertificateRef.name: Secret "team/api-client": tls.key is not the key of the first certificate '
        "in tls.crt"
    ]


def test_an_unattached_policy_is_checked_too(pki: dict[str, bytes]) -> None:
    text = config(pki, ca=yaml_string("just text")).replace("name: api}]\n  validation", "name: gone}]\n  validation")
    problems = [p.message for p in compile_text(text).problems]
    assert "Secret \"team/api-ca\" key 'ca.crt' holds no PEM certificate" in problems


# --- htpasswd ----------------------------------------------------------------------------------------------------


def test_htpasswd_accepts_the_apache_schemes_and_keeps_a_users_first_line() -> None:
    text = "\n".join(
        [
            "a:" + bcrypt.using(rounds=4).hash("pa"),
            "b:" + ldap_sha1.hash("pb"),
            "c:" + apr_md5_crypt.hash("pc"),
            "  # a comment",
            "",
            "a:" + ldap_sha1.hash("other"),
        ]
    )
    entries, problems = parse_htpasswd(text)
    assert problems == []
    auth = BasicAuth("HTTPListenerPolicy/ns/p", entries)
    assert [auth.check(u, p) for u, p in (("a", "pa"), ("b", "pb"), ("c", "pc"), ("a", "other"))] == [
        True,
        True,
        True,
        False,
    ]


def test_htpasswd_refuses_a_malformed_hash_of_a_known_scheme() -> None:
    entries, problems = parse_htpasswd("a:{SHA}not*base64\nb:$2y$05$short\nc:$apr1$abc$def\n")
    assert entries == {}
    assert problems == [
        'line 1: the hash of user "a" is no valid {SHA} hash',
        'line 2: the hash of user "b" is no valid bcrypt hash',
        'line 3: the hash of user "c" is no valid $apr1$ hash',
    ]


def test_a_stored_hash_that_cannot_be_verified_is_a_wrong_credential() -> None:
    assert not BasicAuth("HTTPListenerPolicy/ns/p", {"a": "{SHA}not*base64"}).check("a", "x")


def test_htpasswd_never_takes_an_unknown_scheme_as_clear_text() -> None:
    entries, problems = parse_htpasswd("bob:secret\ncarol:abcdefghijklm\n")
    assert entries == {}
    assert problems == [
        'line 1: the hash of user "bob" is of an unknown scheme (use bcrypt, {SHA}, $apr1$, $5$ or $6$)',
        'line 2: the hash of user "carol" is of an unknown scheme (use bcrypt, {SHA}, $apr1$, $5$ or $6$)',
    ]


def test_a_ca_secret_of_several_keys_without_any_certificate_is_named_whole(pki: dict[str, bytes]) -> None:
    text = config(pki).replace(
        f"  ca.crt: {yaml_string(pki['ca'])}\n", '  ca.crt: "not a certificate"\n  notes: "nor this"\n'
    )
    assert [str(p) for p in compile_text(text).problems] == [
        f"{FILE}:{line_of(text, 'caCertificateRefs: [{name: api-ca}]')}: BackendTLSPolicy/team/api-tls: "
        'spec.validation.caCertificateRefs[0].name: Secret "team/api-ca" holds no PEM certificate'
    ]
