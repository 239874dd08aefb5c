"""How the gateway checks an upstream's TLS certificate: verification parameters built from the snapshot.

Pure (no mitmproxy, no I/O): `addons/upstream_tls.py` turns an `UpstreamTlsParams` into an OpenSSL context.

- Traffic to a Backend with a `BackendTLSPolicy` is checked against that policy: trust anchors from the Secrets
  named by `validation.caCertificateRefs` (every PEM certificate in every key) or the system bundle
  (`wellKnownCACertificates: System`), the name `validation.hostname` (also sent as SNI), or instead of it one
  of `validation.subjectAltNames`; the extensions (DESIGN.md 4.1) `validation.spkiPins` (base64 SHA-256 of the
  leaf's SubjectPublicKeyInfo, one must match), `validation.crlRefs` (Secret key `ca.crl`, PEM or DER) and
  `clientCertificateRef` (Secret with `tls.crt`, `tls.key`: the gateway's client certificate for mTLS).
- Everything else is checked against the gateway trust: the system store as OpenSSL finds it (`SSL_CERT_FILE`,
  `SSL_CERT_DIR`, the distribution bundle; certifi only where there is none: egressproxy/system_trust.py) plus
  every PEM certificate of `upstreamTLS.additionalTrustBundleSecretRef`, for the dialled name.

A policy that cannot be honoured (a CA Secret holding no certificate, an unreadable CRL or client key) never
degrades to a weaker check: its `problems` make every connection under it fail as `upstream-tls-invalid`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

__all__ = [
    "CRL_KEY",
    "CLIENT_CERT_KEY",
    "CLIENT_KEY_KEY",
    "POLICY_SOURCE_PREFIX",
    "UpstreamTlsParams",
    "PemError",
    "split_pem_certificates",
    "load_crls",
    "load_private_key",
    "spki_pin",
    "matches_subject_alt_names",
    "gateway_params",
    "policy_params",
    "backend_policy",
    "backend_ref_from_name",
    "describe_verify_error",
    "describe_alert",
    "client_certificate_required",
]

CRL_KEY = "ca.crl"  # DESIGN.md 4.1
CLIENT_CERT_KEY = "tls.crt"
CLIENT_KEY_KEY = "tls.key"

POLICY_SOURCE_PREFIX = "BackendTLSPolicy/"

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.S)


class PemError(ValueError):
    """A Secret value that should hold certificates, CRLs or a key and does not."""


# ---------------------------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True, slots=True)
class UpstreamTlsParams:
    """Everything that decides how one upstream's certificate is checked and how the gateway authenticates.

    Equal parameters (e.g. after a reload that changed nothing TLS-related) compare equal, so connections and
    OpenSSL contexts built for them can be shared.
    """

    source: str  # "BackendTLSPolicy/ns/name", or what the gateway trust is (gateway_params), for errors and logs
    system_trust: bool = True
    trust_der: tuple[bytes, ...] = ()  # extra trust anchors (DER), in the order found
    hostname: str | None = None  # verify this name and send it as SNI (None: the dialled name)
    subject_alt_names: tuple[tuple[str, str], ...] = ()  # ("Hostname" | "URI", value): replace the hostname check
    spki_pins: frozenset[str] = frozenset()  # base64 SHA-256 of the leaf's SubjectPublicKeyInfo
    crls_der: tuple[bytes, ...] = ()
    client_chain_der: tuple[bytes, ...] = ()  # the client certificate first, then its intermediates
    client_key_pem: bytes | None = field(default=None, repr=False)
    problems: tuple[str, ...] = ()  # why this policy cannot be honoured: every connection under it fails

    @property
    def from_policy(self) -> bool:
        """A BackendTLSPolicy decided these (else the gateway trust)."""
        return self.source.startswith(POLICY_SOURCE_PREFIX)

    @property
    def has_client_certificate(self) -> bool:
        return bool(self.client_chain_der) and self.client_key_pem is not None


def split_pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Every `CERTIFICATE` / `TRUSTED CERTIFICATE` PEM block in `data`; other blocks (keys, CRLs) are skipped.

    Raises PemError when a certificate block does not parse.
    """
    out: list[x509.Certificate] = []
    for match in _PEM_BLOCK.finditer(data):
        label = match.group(1)
        if label not in (b"CERTIFICATE", b"TRUSTED CERTIFICATE", b"X509 CERTIFICATE"):
            continue
        block = match.group(0)
        if label != b"CERTIFICATE":
            block = block.replace(b"BEGIN " + label, b"BEGIN CERTIFICATE").replace(b"END " + label, b"END CERTIFICATE")
        try:
            out.append(x509.load_pem_x509_certificate(block))
        except ValueError as e:
            raise PemError(f"a PEM certificate does not parse: {e}") from e
    return out


def load_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    """The CRLs in a `ca.crl` value: one or more PEM `X509 CRL` blocks, or one DER CRL. PemError otherwise."""
    stripped = data.strip()
    if not stripped:
        raise PemError("the CRL is empty")
    if b"-----BEGIN" in stripped:
        crls = []
        for match in _PEM_BLOCK.finditer(stripped):
            if match.group(1) != b"X509 CRL":
                continue
            try:
                crls.append(x509.load_pem_x509_crl(match.group(0)))
            except ValueError as e:
                raise PemError(f"a PEM CRL does not parse: {e}") from e
        if not crls:
            raise PemError("no PEM 'X509 CRL' block found")
        return crls
    try:
        # DER is binary: its last bytes may be whitespace values, so it is parsed unstripped.
        return [x509.load_der_x509_crl(data)]
    except ValueError as e:
        raise PemError(f"neither a PEM nor a DER CRL: {e}") from e


# The key types an OpenSSL context takes for a client certificate (pyOpenSSL's `use_privatekey`); cryptography
# parses more (X25519, ML-DSA, ...), which would only fail later, inside the handshake set-up.
TlsPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey | dsa.DSAPrivateKey
_TLS_KEY_TYPES = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey, dsa.DSAPrivateKey)


def load_private_key(data: bytes) -> TlsPrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise PemError(f"the private key does not parse (PEM, unencrypted): {e}") from e
    if not isinstance(key, _TLS_KEY_TYPES):
        raise PemError(f"the private key is a {type(key).__name__}, which TLS cannot use: use RSA, ECDSA or Ed25519")
    return key


def spki_pin(cert: x509.Certificate) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)): the pin format of HPKP (RFC 7469) and `validation.spkiPins`."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def _dns_name_matches(cert_name: str, wanted: str) -> bool:
    """A certificate DNS name against a configured name: equal, or a `*.` wildcard covering exactly one label."""
    cert_name, wanted = cert_name.lower().rstrip("."), wanted.lower().rstrip(".")
    if cert_name == wanted:
        return True
    if cert_name.startswith("*.") and not wanted.startswith("*."):
        head, sep, rest = wanted.partition(".")
        return bool(sep and head) and rest == cert_name[2:]
    return False


def matches_subject_alt_names(cert: x509.Certificate, wanted: Iterable[tuple[str, str]]) -> bool:
    """Gateway API `validation.subjectAltNames`: the certificate carries at least one of them."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    dns_names = san.get_values_for_type(x509.DNSName)
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    for kind, value in wanted:
        if kind == "Hostname" and any(_dns_name_matches(name, value) for name in dns_names):
            return True
        if kind == "URI" and value in uris:
            return True
    return False


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------------------------------------------------------
# From the snapshot


def gateway_params(trust_bundle_pem: bytes | None, secret: Any = None, system: str | None = None) -> UpstreamTlsParams:
    """The gateway trust: the system store plus the certificates of additionalTrustBundleSecretRef.

    `secret` is that Secret's ObjectRef and `system` what the system store is (SystemStore.describe()), so an
    error names what was trusted: `the system store /etc/ssl/certs/ca-certificates.crt + Secret ns/name`.
    """
    problems: list[str] = []
    trust: list[bytes] = []
    if trust_bundle_pem:
        try:
            trust = [_der(c) for c in split_pem_certificates(trust_bundle_pem)]
        except PemError as e:
            problems.append(f"upstreamTLS.additionalTrustBundleSecretRef: {e}")
    source = system or "the system store"
    if secret is not None:
        source += f" + Secret {secret.namespace}/{secret.name}"
    elif trust_bundle_pem:
        source += " + upstreamTLS.additionalTrustBundleSecretRef"
    return UpstreamTlsParams(source, system_trust=True, trust_der=tuple(trust), problems=tuple(problems))


def _ref_namespace(ref: Mapping[str, Any], default: str) -> str:
    return str(ref.get("namespace") or default)


def policy_params(policy_ref: Any, spec: Mapping[str, Any], secret: Any) -> UpstreamTlsParams:
    """Verification parameters of one BackendTLSPolicy.

    `policy_ref` is its ObjectRef (Kind/namespace/name), `spec` its spec (targetRefs removed), and
    `secret(namespace, name)` looks a Secret up (None when missing; the compiler already refuses such configs,
    so a missing Secret here only happens for a Secret that vanished, and is a problem, never a weaker check).
    """
    source = f"BackendTLSPolicy/{policy_ref.namespace}/{policy_ref.name}"
    ns = policy_ref.namespace
    validation = spec.get("validation") or {}
    problems: list[str] = []

    trust: list[bytes] = []
    for i, ref in enumerate(validation.get("caCertificateRefs") or ()):
        where = f"validation.caCertificateRefs[{i}]"
        data = secret(_ref_namespace(ref, ns), ref["name"])
        if data is None:
            problems.append(f'{where}: Secret "{_ref_namespace(ref, ns)}/{ref["name"]}" not found')
            continue
        found = 0
        for key in sorted(data):
            try:
                certs = split_pem_certificates(data[key])
            except PemError as e:
                problems.append(f"{where} key {key!r}: {e}")
                continue
            found += len(certs)
            trust.extend(_der(c) for c in certs)
        if not found:
            problems.append(f'{where}: Secret "{_ref_namespace(ref, ns)}/{ref["name"]}" holds no PEM certificate')
    system_trust = validation.get("wellKnownCACertificates") == "System"
    if not system_trust and not trust and not problems:
        problems.append("validation: no trust anchors (set caCertificateRefs or wellKnownCACertificates: System)")

    hostname = validation.get("hostname")
    sans = tuple(
        (str(san.get("type")), str(san.get("hostname") if san.get("type") == "Hostname" else san.get("uri")))
        for san in validation.get("subjectAltNames") or ()
    )
    pins = frozenset(str(p) for p in validation.get("spkiPins") or ())

    crls: list[bytes] = []
    for i, ref in enumerate(validation.get("crlRefs") or ()):
        where = f"validation.crlRefs[{i}]"
        data = secret(_ref_namespace(ref, ns), ref["name"])
        if data is None or CRL_KEY not in data:
            problems.append(f'{where}: Secret "{_ref_namespace(ref, ns)}/{ref["name"]}" has no key {CRL_KEY!r}')
            continue
        try:
            crls.extend(c.public_bytes(serialization.Encoding.DER) for c in load_crls(data[CRL_KEY]))
        except PemError as e:
            problems.append(f"{where}: {e}")

    chain: list[bytes] = []
    key_pem: bytes | None = None
    client_ref = spec.get("clientCertificateRef")
    if client_ref:
        where = "clientCertificateRef"
        data = secret(_ref_namespace(client_ref, ns), client_ref["name"])
        if data is None or CLIENT_CERT_KEY not in data or CLIENT_KEY_KEY not in data:
            secret_name = f'{_ref_namespace(client_ref, ns)}/{client_ref["name"]}'
            problems.append(f'{where}: Secret "{secret_name}" needs keys tls.crt and tls.key')
        else:
            try:
                certs = split_pem_certificates(data[CLIENT_CERT_KEY])
                if not certs:
                    raise PemError("tls.crt holds no PEM certificate")
                key = load_private_key(data[CLIENT_KEY_KEY])
                if _public_der(key) != certs[0].public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                ):
                    raise PemError("tls.key is not the key of the first certificate in tls.crt")
            except PemError as e:
                problems.append(f"{where}: {e}")
            else:
                chain = [_der(c) for c in certs]
                key_pem = data[CLIENT_KEY_KEY]

    return UpstreamTlsParams(
        source,
        system_trust=system_trust,
        trust_der=tuple(trust),
        hostname=str(hostname) if hostname else None,
        subject_alt_names=sans,
        spki_pins=pins,
        crls_der=tuple(crls),
        client_chain_der=tuple(chain),
        client_key_pem=key_pem,
        problems=tuple(problems),
    )


def _public_der(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def backend_ref_from_name(snapshot: Any, name: str | None) -> Any:
    """The ObjectRef of the backend a FlowRecord/ConnectionRecord names (`ns/name`, or `Kind/ns/name`)."""
    if not name:
        return None
    parts = name.split("/")
    if len(parts) == 3:
        from egressproxy.config.problems import ObjectRef

        return ObjectRef(parts[0], parts[1], parts[2])
    if len(parts) != 2:
        return None
    for ref in snapshot.backends:
        if ref.namespace == parts[0] and ref.name == parts[1] and ref.kind == "Backend":
            return ref
    for ref in snapshot.backends:
        if ref.namespace == parts[0] and ref.name == parts[1]:
            return ref
    return None


def backend_policy(snapshot: Any, backend_ref: Any) -> Any:
    """The BackendTLSPolicy attached to a backend (the first by namespace/name when several target it)."""
    if backend_ref is None:
        return None
    for policy in snapshot.policies.policies("BackendTLSPolicy", backend=backend_ref):
        if policy.scope == "backend":
            return policy
    return None


# ---------------------------------------------------------------------------------------------------------------
# Naming the cause of a failure

# OpenSSL X509_V_ERR_* codes (stable across OpenSSL 1.1 and 3.x).
_CAUSES: dict[int, str] = {
    2: "unknown CA",  # unable to get issuer certificate
    3: "no CRL for the issuer (validation.crlRefs)",  # unable to get certificate CRL
    7: "invalid certificate signature",
    8: "invalid CRL signature",
    9: "certificate not yet valid",
    10: "certificate expired",
    11: "CRL not yet valid",
    12: "CRL expired",
    18: "self-signed certificate (unknown CA)",
    19: "self-signed certificate in the chain (unknown CA)",
    20: "unknown CA",  # unable to get local issuer certificate
    21: "unknown CA",  # unable to verify the first certificate
    23: "certificate revoked",
    24: "invalid CA certificate",
    26: "certificate not valid for TLS server authentication",
    62: "hostname mismatch",
    64: "IP address mismatch",
}


# Metric label for a failure's cause text (`egress_upstream_tls_failures_total{cause}`), first match wins.
_CAUSE_LABELS: tuple[tuple[str, str], ...] = (
    ("self-signed", "self-signed"),
    ("unknown ca", "unknown-ca"),
    ("unable to get local issuer", "unknown-ca"),
    ("expired", "expired"),
    ("not yet valid", "not-yet-valid"),
    ("hostname mismatch", "hostname-mismatch"),
    ("ip address mismatch", "hostname-mismatch"),
    ("pin mismatch", "pin-mismatch"),
    ("revoked", "revoked"),
    ("crl", "crl"),
    ("client certificate", "client-certificate-required"),
)


def tls_failure_cause(detail: str) -> str:
    """A small fixed set of causes for the metric label (never the free text: labels must stay bounded)."""
    lower = detail.lower()
    for needle, label in _CAUSE_LABELS:
        if needle in lower:
            return label
    return "other"


def describe_verify_error(code: int, openssl_text: str, depth: int, subject: str, name: str, source: str) -> str:
    """A one-line cause for a failed certificate check, e.g. `certificate expired (certificate has expired)`."""
    cause = _CAUSES.get(code, "certificate verify failed")
    if openssl_text and openssl_text.lower() not in cause.lower():
        cause = f"{cause} ({openssl_text})"
    which = f"certificate {subject!r}" if depth == 0 else f"chain certificate {subject!r} (depth {depth})"
    return f"{cause}: {which} for {name}, checked against {source}"


def client_certificate_required(name: str) -> str:
    return (
        f"client certificate required: {name} asked for a client certificate in the handshake and none is "
        f"configured (BackendTLSPolicy clientCertificateRef), then closed the connection without answering"
    )


def describe_alert(
    alert: str, *, sent_client_certificate: bool, certificate_requested: bool, name: str, source: str
) -> str:
    """A TLS alert the origin sent (during or right after the handshake), in terms of what to fix."""
    if certificate_requested and not sent_client_certificate:
        return (
            f"client certificate required: {name} asked for a client certificate and none is configured "
            f"(BackendTLSPolicy clientCertificateRef) [{alert}]"
        )
    if "certificate required" in alert.lower():
        return f"client certificate required: {name} requires a client certificate [{alert}]"
    if sent_client_certificate and certificate_requested:
        return f"client certificate rejected: {name} refused the gateway's client certificate from {source} [{alert}]"
    return f"the origin {name} aborted the TLS handshake [{alert}]"
