"""The CA an intercepting listener mints certificates with, read from its caCertRef Secret and checked here, so
a bad CA fails validation, not a TLS handshake at 3 a.m. Without a caCertRef, the gateway's own CA minted under
--data-dir (DESIGN.md 4.2), read or minted by the run's `gateway_cas`."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.secret_refs import resolve_secret
from egressproxy.config.problems import ObjectRef
from egressproxy.config.resource import Resource
from egressproxy.snapshot import CAMaterial

__all__ = ["CA_KEY_PAIRS", "ca_material", "minted_ca_material", "MINTED", "MINTED_AT_RUN"]

CA_KEY_PAIRS = (("tls.crt", "tls.key"), ("ca.crt", "ca.key"))
MINTED = "no caCertRef: certificates are minted from the gateway's CA under --data-dir (egressproxy ca show)"
MINTED_AT_RUN = "no caCertRef: the gateway's CA is minted under --data-dir at run (egressproxy ca show prints it)"


def minted_ca_material(comp: Compilation, gw: Resource, path: str) -> CAMaterial | None:
    """The gateway's minted CA, or None: at validate (nothing is written; minted at run) or when it is unusable
    (a problem at `path`)."""
    if comp.gateway_cas is None:
        return None
    from egressproxy.ca import GatewayCAError

    try:
        ca = comp.gateway_cas(gw.namespace, gw.name)
    except (GatewayCAError, OSError) as e:
        comp.problem(gw, path, f"cannot read or mint the gateway's CA: {e}")
        return None
    message = _ca_error(ca.cert_pem, ca.key_pem, "ca.crt", "ca.key")
    if message is not None:
        comp.problem(gw, path, f"the gateway's CA at {ca.cert_path.parent}: {message}")
        return None
    return CAMaterial(ca.cert_pem, ca.key_pem, None, minted=str(ca.cert_path))


def ca_material(comp: Compilation, gw: Resource, path: str, ref: Mapping[str, Any]) -> CAMaterial | None:
    secret = resolve_secret(comp, gw, path, ref)
    if secret is None:
        return None
    ns = ref.get("namespace") or gw.namespace
    for cert_key, key_key in CA_KEY_PAIRS:
        if cert_key in secret and key_key in secret:
            message = _ca_error(secret[cert_key], secret[key_key], cert_key, key_key)
            if message is not None:
                comp.problem(gw, f"{path}.name", f'Secret "{ns}/{ref["name"]}": {message}')
                comp.status.set(gw.ref, "ResolvedRefs", False, "InvalidCertificateRef", message)
                return None
            return CAMaterial(secret[cert_key], secret[key_key], ObjectRef("Secret", ns, ref["name"]))
    message = f'Secret "{ns}/{ref["name"]}" has neither tls.crt/tls.key nor ca.crt/ca.key'
    comp.problem(gw, f"{path}.name", message)
    comp.status.set(gw.ref, "ResolvedRefs", False, "InvalidCertificateRef", message)
    return None


@functools.lru_cache(maxsize=64)  # a key parse costs ~0.1 s; reloads and per-gateway validation repeat it
def _ca_error(cert_pem: bytes, key_pem: bytes, cert_key: str, key_key: str) -> str | None:
    """Why the CA pair cannot mint certificates, or None."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return f"{cert_key} is not a PEM certificate"
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return f"{key_key} is not an unencrypted PEM private key"
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if cert.public_key().public_bytes(encoding, public) != key.public_key().public_bytes(encoding, public):
        return f"{key_key} is not the key of {cert_key}"
    return None
