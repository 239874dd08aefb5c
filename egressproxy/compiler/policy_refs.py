"""References inside a policy's own spec: the Secrets it reads (with the keys it needs) and the
GatewayExtensions a TrafficPolicy calls out to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from egressproxy.compiler.ca_certificate_refs import check_ca_certificate_ref
from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.secret_refs import require_keys, resolve_secret
from egressproxy.config.resource import Resource

# Secret keys each ProviderAuth type reads (Apoxy's convention); other targets read `secretKey`.
PROVIDER_AUTH_KEYS = {"AWSv4": ("access_key_id", "secret_access_key"), "GCPServiceAccount": ()}


def check_policy_refs(comp: Compilation, res: Resource) -> None:
    """Secrets and extension references inside a policy's own spec."""
    spec = res.spec
    if res.kind == "CredentialInjectionPolicy":
        secret = resolve_secret(comp, res, "spec.secretRef", spec.get("secretRef"))
        if secret is not None:
            require_keys(comp, res, "spec.secretRef", spec["secretRef"], secret, _credential_keys(spec))
    elif res.kind == "HTTPListenerPolicy" and spec.get("basicAuth"):
        ref = spec["basicAuth"].get("credentialsSecretRef")
        secret = resolve_secret(comp, res, "spec.basicAuth.credentialsSecretRef", ref)
        if secret is not None and ref is not None:
            require_keys(comp, res, "spec.basicAuth.credentialsSecretRef", ref, secret, (".htpasswd",))
    elif res.kind == "BackendTLSPolicy":
        _check_backend_tls_refs(comp, res)
    elif res.kind == "TrafficPolicy":
        for member in ("extAuth", "extProc", "rateLimit"):
            ref = (spec.get(member) or {}).get("extensionRef")
            if ref:
                _check_exists(comp, res, f"spec.{member}.extensionRef.name", "GatewayExtension", ref)
        ref = ((spec.get("rateLimit") or {}).get("global") or {}).get("extensionRef")
        if ref:  # kgateway's global rate limit names its RateLimit service here
            _check_exists(comp, res, "spec.rateLimit.global.extensionRef.name", "GatewayExtension", ref)
    if not comp.status.has(res.ref, "ResolvedRefs"):
        comp.status.set(res.ref, "ResolvedRefs", True, "ResolvedRefs")


def _credential_keys(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The Secret keys a CredentialInjectionPolicy needs: the AWS key pair for AWSv4, else `secretKey`."""
    if spec.get("target") == "ProviderAuth":
        auth_type = (spec.get("providerAuth") or {}).get("type")
        keys = PROVIDER_AUTH_KEYS.get(auth_type or "")
        if keys is not None:
            return keys or (spec.get("secretKey", "token"),)
    return (spec.get("secretKey", "token"),)


def _check_backend_tls_refs(comp: Compilation, res: Resource) -> None:
    validation = res.spec.get("validation", {})
    for i, ref in enumerate(validation.get("caCertificateRefs", [])):
        check_ca_certificate_ref(comp, res, f"spec.validation.caCertificateRefs[{i}]", ref)
    for i, ref in enumerate(validation.get("crlRefs", [])):
        secret = resolve_secret(comp, res, f"spec.validation.crlRefs[{i}]", ref)
        if secret is not None:
            require_keys(comp, res, f"spec.validation.crlRefs[{i}]", ref, secret, ("ca.crl",))
    ref = res.spec.get("clientCertificateRef")
    secret = resolve_secret(comp, res, "spec.clientCertificateRef", ref)
    if secret is not None and ref is not None:
        require_keys(comp, res, "spec.clientCertificateRef", ref, secret, ("tls.crt", "tls.key"))


def _check_exists(comp: Compilation, res: Resource, path: str, kind: str, ref: Mapping[str, Any]) -> Resource | None:
    ns = ref.get("namespace") or res.namespace
    found = comp.find(kind, ns, ref["name"])
    if found is None:
        message = f'{kind} "{ns}/{ref["name"]}" not found'
        comp.problem(res, path, message)
        comp.status.set(res.ref, "ResolvedRefs", False, f"{kind}NotFound", f"{path}: {message}")
    return found
