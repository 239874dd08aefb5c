"""Credentials compiled once per snapshot: each AI provider's `authToken` / Bedrock `auth` by its provider's
convention, each CredentialInjectionPolicy by its target, indexed by attachment scope (egressproxy/credentials.py).

Secret material that cannot be used (a service-account key that is no key, a Bedrock Secret without its key
pair) is a validation problem naming the Secret and the field, never the value. A rotated Secret (config or
`--secrets-dir`) recompiles with the next snapshot, so the next request uses it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from google.auth import crypt

from egressproxy.compiler.compilation import Compilation
from egressproxy.config.problems import ObjectRef
from egressproxy.config.resource import Resource
from egressproxy.credentials import (
    ALLOW_CLEARTEXT_ANNOTATION,
    ANTHROPIC_DEFAULT_VERSION,
    AwsSigV4,
    AzureDeployment,
    Credential,
    CredentialTable,
    GcpServiceAccount,
    SecretHeader,
    SecretQuery,
    fingerprint,
)
from egressproxy.snapshot import MOUNTED_NAMESPACE, AIProvider, SecretData

__all__ = ["compile_credentials"]

AUTH_TOKEN_KEY = "Authorization"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
# AWS key pair spellings: Apoxy's (CredentialInjectionPolicy) and kgateway's (Backend `bedrock.auth`).
_AWS_KEYS = (("access_key_id", "accessKey"), ("secret_access_key", "secretKey"), ("session_token", "sessionToken"))


class _Unusable(Exception):
    """Secret material that does not make a credential; the message names no value."""


def compile_credentials(comp: Compilation) -> CredentialTable:
    providers: dict[tuple[ObjectRef, AIProvider], Credential] = {}
    for backend in comp.backends.values():
        res = comp.find(backend.ref.kind, backend.ref.namespace, backend.ref.name)
        for group in backend.ai_groups:
            for provider in group:
                credential = _provider_credential(comp, res, backend.ref, provider)
                if credential is not None:
                    providers.setdefault((backend.ref, provider), credential)
    policies = {res.ref: c for res in comp.of_kind("CredentialInjectionPolicy") if (c := _policy_credential(comp, res))}
    scopes: dict[tuple[str, Any], Credential] = {}
    for (kind, scope, key), attached in comp.attached.items():
        if kind != "CredentialInjectionPolicy":
            continue
        for policy in attached:  # namespace/name order
            credential = policies.get(policy.ref)
            if credential is not None:
                held = scopes.get((scope, key))
                scopes[(scope, key)] = credential if held is None else held.merged(credential)
    return CredentialTable(MappingProxyType(providers), MappingProxyType(scopes), _cleartext_routes(comp))


def _cleartext_routes(comp: Compilation) -> frozenset[ObjectRef]:
    out = set()
    for ref in comp.routes:
        res = comp.find(ref.kind, ref.namespace, ref.name)
        if res is not None and str(res.annotations.get(ALLOW_CLEARTEXT_ANNOTATION, "")).lower() == "true":
            out.add(ref)
    return frozenset(out)


# --- AI providers -------------------------------------------------------------------------------------------


def _provider_credential(comp: Compilation, res: Resource | None, backend: ObjectRef, provider: AIProvider) -> Credential | None:
    source = f"{backend} provider {provider.name}"
    if provider.auth_kind == "Passthrough":
        return Credential(source, passthrough=True)
    try:
        if provider.kind == "bedrock":
            return _bedrock(comp, source, provider)
        token = _provider_token(comp, provider)
        if token is None:
            return None
        return _by_convention(source, provider, token)
    except _Unusable as e:
        if res is not None:
            comp.problem(res, "spec", f"provider {provider.name}: {e}")
        return None


def _provider_token(comp: Compilation, provider: AIProvider) -> str | None:
    """Inline, or a SecretRef's key `Authorization` (any key of a one-key Secret), a leading `Bearer ` dropped."""
    if provider.auth_kind == "Inline":
        return provider.auth_inline
    if provider.auth_secret is None:
        return None
    secret = _secret(comp, provider.auth_secret)
    if secret is None:
        return None  # a missing Secret is already a problem of the referencing object
    if AUTH_TOKEN_KEY in secret:
        raw = secret[AUTH_TOKEN_KEY]
    elif len(secret) == 1:
        raw = next(iter(secret.values()))
    else:
        return None  # the reference check reported the missing key
    value = raw.decode("utf-8", "replace").strip()
    if value.lower() == "bearer" or value.lower().startswith("bearer "):
        value = value[len("bearer") :].strip()
    if not value:
        raise _Unusable(f"{provider.auth_secret} holds an empty token")
    return value


def _by_convention(source: str, provider: AIProvider, token: str) -> Credential:
    kind = provider.kind
    if kind == "anthropic":
        version = SecretHeader("anthropic-version", provider.api_version or ANTHROPIC_DEFAULT_VERSION, not provider.api_version)
        return Credential(source, headers=(SecretHeader("x-api-key", token), version))
    if kind == "azureOpenai":
        deployment = provider.config.get("deploymentName") or provider.model or ""
        return Credential(
            source, headers=(SecretHeader("api-key", token),), azure=AzureDeployment(deployment, provider.api_version)
        )
    if kind == "gemini":
        return Credential(source, headers=(SecretHeader("x-goog-api-key", token),))
    if kind == "vertexAi" and token.lstrip().startswith("{"):
        return Credential(source, gcp=_service_account(token.encode()))
    # OpenAI, Mistral, Vertex AI with an access token, OpenAI-compatible local servers: a bearer token.
    return Credential(source, headers=(SecretHeader("authorization", f"Bearer {token}"),))


def _bedrock(comp: Compilation, source: str, provider: AIProvider) -> Credential | None:
    if provider.auth_secret is None:
        return None  # ambient AWS credentials (IRSA) are not supported: enforcement.py says so
    secret = _secret(comp, provider.auth_secret)
    if secret is None:
        return None
    return Credential(source, sigv4=_aws_keys(secret, provider.auth_secret, provider.region or "us-east-1", "bedrock"))


# --- CredentialInjectionPolicy ------------------------------------------------------------------------------


def _policy_credential(comp: Compilation, res: Resource) -> Credential | None:
    spec = res.spec
    ref = spec.get("secretRef") or {}
    secret_ref = ObjectRef("Secret", ref.get("namespace") or res.namespace, ref.get("name", ""))
    secret = _secret(comp, secret_ref)
    if secret is None:
        return None  # reported by the reference check
    source = str(res.ref)
    key = spec.get("secretKey", "token")
    prefix = spec.get("valuePrefix") or ""
    target = spec.get("target")
    auth = spec.get("providerAuth") or {}
    if target == "ProviderAuth" and auth.get("type") == "AWSv4":
        if not _has_aws_keys(secret):
            return None  # the reference check reported the missing keys
        return Credential(source, sigv4=_aws_keys(secret, secret_ref, auth.get("region"), auth.get("service")))
    if key not in secret:
        return None  # the reference check reported the missing key
    if target == "ProviderAuth":
        try:
            return Credential(source, gcp=_service_account(secret[key]))
        except _Unusable as e:
            comp.problem(res, "spec.secretRef", f'{secret_ref} key "{key}": {e}')
            return None
    material = secret[key].decode("utf-8", "replace").strip()
    if not material:  # a rotation caught half-way (the file emptied): never inject "" (nor the bare prefix)
        comp.problem(res, "spec.secretRef", f'{secret_ref} key "{key}" is empty')
        return None
    value = prefix + material
    if target == "QueryParam":
        return Credential(source, query=(SecretQuery(spec["queryParamName"], value),))
    return Credential(source, headers=(SecretHeader(spec["headerName"].lower(), value),))


# --- Secret material ----------------------------------------------------------------------------------------


def _secret(comp: Compilation, ref: ObjectRef) -> SecretData | None:
    mounted = comp.secrets.get(ObjectRef("Secret", MOUNTED_NAMESPACE, ref.name))
    return mounted if mounted is not None else comp.secrets.get(ref)


def _has_aws_keys(secret: SecretData) -> bool:
    return all(any(k in secret for k in spellings) for spellings in _AWS_KEYS[:2])


def _aws_keys(secret: SecretData, ref: ObjectRef, region: str | None, service: str | None) -> AwsSigV4:
    values: list[str | None] = []
    for spellings in _AWS_KEYS:
        found = next((secret[k] for k in spellings if k in secret), None)
        values.append(found.decode("utf-8", "replace").strip() if found is not None else None)
    access, secret_key, session = values
    if not access or not secret_key:
        raise _Unusable(f"{ref} needs keys access_key_id and secret_access_key (or accessKey and secretKey)")
    import botocore.auth  # noqa: F401  (loaded here, at compile time, so the first signature does not import it)

    return AwsSigV4(access, secret_key, session or None, region, service)


def _service_account(data: bytes) -> GcpServiceAccount:
    """google-auth's signer from a service-account key file (JSON), built now so a bad key fails validation."""
    try:
        info: Mapping[str, Any] = json.loads(data)
        if not isinstance(info, dict) or info.get("type", "service_account") != "service_account":
            raise ValueError("not a service account")
        signer = crypt.RSASigner.from_service_account_info(info)
        email = str(info["client_email"])
    except Exception:  # json, key or signer errors: their text could quote the material, so it is dropped
        raise _Unusable("not a Google service-account key (JSON with client_email and private_key)") from None
    return GcpServiceAccount(email, str(info.get("token_uri") or GOOGLE_TOKEN_URI), signer, fingerprint(data))
