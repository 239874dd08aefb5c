"""BackendTLSPolicy Secrets (and ConfigMap CAs, key `ca.crt`) and the gateway trust bundle, parsed at compile time.

A CA certificate that is no PEM certificate, a CRL that is no CRL, or a client key that is no key or not the key
of its certificate used to pass `validate` and fail the first request as a 502 `upstream-tls-invalid`. Here each
is a problem at the referencing field (DESIGN.md 4.2), and what parses becomes a `BackendTls`: certificate,
CRL and key objects plus the `UpstreamTlsParams` the upstream TLS context is built from, equal to what
`egressproxy.upstream_tls.policy_params` / `gateway_params` compute from the same Secrets.

A missing Secret or key is reported by the reference pass (`policy_refs`, `gateway`); this pass only judges the
material that is there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from egressproxy.compiled_policies import BackendTls
from egressproxy.compiler.ca_certificate_refs import config_map_ca, is_config_map_ref
from egressproxy.compiler.compilation import Compilation
from egressproxy.config.kinds.core import CONFIG_MAP_CA_KEY
from egressproxy.config.problems import ObjectRef
from egressproxy.config.resource import Resource
from egressproxy.snapshot import MOUNTED_NAMESPACE, SecretData
from egressproxy.system_trust import system_store
from egressproxy.upstream_tls import (
    CLIENT_CERT_KEY,
    CLIENT_KEY_KEY,
    CRL_KEY,
    PemError,
    UpstreamTlsParams,
    gateway_params,
    load_crls,
    load_private_key,
    split_pem_certificates,
)

__all__ = ["compile_backend_tls_policies", "compile_trust_bundle", "gateway_tls"]

_REASON = "InvalidCertificateRef"


def compile_backend_tls_policies(comp: Compilation) -> dict[ObjectRef, BackendTls]:
    """Every BackendTLSPolicy, parsed (attached or not: the config must be valid whole)."""
    return {res.ref: _compile_policy(comp, res) for res in comp.of_kind("BackendTLSPolicy")}


def compile_trust_bundle(comp: Compilation, gw: Resource) -> tuple[x509.Certificate, ...]:
    """The certificates of an EgressGateway's `upstreamTLS.additionalTrustBundleSecretRef` (every key, in key
    order, as the gateway joins them); a key holding a broken certificate, or a Secret with none, is a problem."""
    ref = (gw.spec.get("upstreamTLS") or {}).get("additionalTrustBundleSecretRef")
    secret = _secret(comp, gw, ref)
    if secret is None or ref is None:
        return ()
    path = "spec.upstreamTLS.additionalTrustBundleSecretRef.name"
    return _certificates(comp, gw, path, _secret_name(gw, ref), secret, sorted(secret))


def gateway_tls(certificates: tuple[x509.Certificate, ...], secret: ObjectRef | None = None) -> BackendTls:
    """The gateway trust: the system store (as OpenSSL finds it) plus the trust bundle's certificates, named for
    error messages as `upstream_tls.gateway_params` names it (what the system store is, and the Secret)."""
    described = gateway_params(None, secret, system_store().describe())
    params = UpstreamTlsParams(described.source, system_trust=True, trust_der=tuple(_der(c) for c in certificates))
    return BackendTls(params.source, params, ca_certificates=certificates)


def _compile_policy(comp: Compilation, res: Resource) -> BackendTls:
    spec = res.spec
    validation = spec.get("validation") or {}
    trust: list[x509.Certificate] = []
    for i, ref in enumerate(validation.get("caCertificateRefs") or ()):
        path = f"spec.validation.caCertificateRefs[{i}].name"
        if is_config_map_ref(ref):
            pem = config_map_ca(comp, res, ref)
            if pem is not None:  # a missing ConfigMap or key is the reference pass's problem
                name = f"{res.namespace}/{ref['name']}"
                cas = {CONFIG_MAP_CA_KEY: pem}
                trust.extend(_certificates(comp, res, path, name, cas, [CONFIG_MAP_CA_KEY], kind="ConfigMap"))
            continue
        secret = _secret(comp, res, ref)
        if secret is not None:
            trust.extend(_certificates(comp, res, path, _secret_name(res, ref), secret, sorted(secret)))
    crls: list[x509.CertificateRevocationList] = []
    for i, ref in enumerate(validation.get("crlRefs") or ()):
        secret = _secret(comp, res, ref)
        if secret is not None and CRL_KEY in secret:
            try:
                crls.extend(load_crls(secret[CRL_KEY]))
            except PemError:
                message = f'Secret "{_secret_name(res, ref)}" key {CRL_KEY!r} is no CRL (PEM "X509 CRL" or DER)'
                _problem(comp, res, f"spec.validation.crlRefs[{i}].name", message)
    chain, key, key_pem = _client_certificate(comp, res, spec.get("clientCertificateRef"))
    hostname = validation.get("hostname")
    source = f"BackendTLSPolicy/{res.namespace}/{res.name}"
    params = UpstreamTlsParams(
        source,
        system_trust=validation.get("wellKnownCACertificates") == "System",
        trust_der=tuple(_der(c) for c in trust),
        hostname=str(hostname) if hostname else None,
        subject_alt_names=tuple(
            (str(san.get("type")), str(san.get("hostname") if san.get("type") == "Hostname" else san.get("uri")))
            for san in validation.get("subjectAltNames") or ()
        ),
        spki_pins=frozenset(str(p) for p in validation.get("spkiPins") or ()),
        crls_der=tuple(c.public_bytes(serialization.Encoding.DER) for c in crls),
        client_chain_der=tuple(_der(c) for c in chain),
        client_key_pem=key_pem,
    )
    return BackendTls(source, params, tuple(trust), tuple(crls), chain, key, res.ref)


def _client_certificate(
    comp: Compilation, res: Resource, ref: Mapping[str, Any] | None
) -> tuple[tuple[x509.Certificate, ...], Any, bytes | None]:
    """(the client chain, its private key object, the key's PEM), or ((), None, None) when there is none or it
    does not parse."""
    none: tuple[tuple[x509.Certificate, ...], Any, bytes | None] = ((), None, None)
    secret = _secret(comp, res, ref)
    if secret is None or ref is None or CLIENT_CERT_KEY not in secret or CLIENT_KEY_KEY not in secret:
        return none
    path, name = "spec.clientCertificateRef.name", _secret_name(res, ref)
    chain = _certificates(comp, res, path, name, secret, [CLIENT_CERT_KEY])
    try:
        key = load_private_key(secret[CLIENT_KEY_KEY])
    except PemError:
        _problem(comp, res, path, f'Secret "{name}" key {CLIENT_KEY_KEY!r} is no unencrypted PEM private key')
        return none
    if not chain:
        return none
    if _spki(key.public_key()) != _spki(chain[0].public_key()):
        _problem(comp, res, path, f'Secret "{name}": tls.key is not the key of the first certificate in tls.crt')
        return none
    return chain, key, secret[CLIENT_KEY_KEY]


def _certificates(
    comp: Compilation,
    res: Resource,
    path: str,
    name: str,
    secret: Mapping[str, bytes],
    keys: list[str],
    kind: str = "Secret",
) -> tuple[x509.Certificate, ...]:
    """The certificates under `keys` of a Secret (or a ConfigMap's `ca.crt`); a problem for what does not parse."""
    found: list[x509.Certificate] = []
    broken = False
    for key in keys:
        try:
            found.extend(split_pem_certificates(secret[key]))
        except PemError:
            broken = True
            _problem(comp, res, path, f'{kind} "{name}" key {key!r}: a PEM certificate does not parse')
    if not found and not broken:
        where = f" key {keys[0]!r}" if len(keys) == 1 else ""
        _problem(comp, res, path, f'{kind} "{name}"{where} holds no PEM certificate')
    return tuple(found)


def _problem(comp: Compilation, res: Resource, path: str, message: str) -> None:
    comp.problem(res, path, message)
    comp.status.set(res.ref, "ResolvedRefs", False, _REASON, f"{path}: {message}")


def _secret(comp: Compilation, res: Resource, ref: Mapping[str, Any] | None) -> SecretData | None:
    """The Secret a reference names (a mounted one first, as at run time); None when missing or not a Secret."""
    if not ref or "name" not in ref or (ref.get("kind") or "Secret") != "Secret":
        return None
    mounted = comp.secrets.get(ObjectRef("Secret", MOUNTED_NAMESPACE, ref["name"]))
    if mounted is not None:
        return mounted
    return comp.secrets.get(ObjectRef("Secret", ref.get("namespace") or res.namespace, ref["name"]))


def _secret_name(res: Resource, ref: Mapping[str, Any]) -> str:
    return f"{ref.get('namespace') or res.namespace}/{ref['name']}"


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _spki(public_key: Any) -> bytes:
    return bytes(
        public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
