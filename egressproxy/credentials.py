"""Credentials the gateway injects, in compiled form, and which one applies to a request.

Workloads call providers and APIs without holding a secret; the gateway adds it on the way out (DESIGN.md 4.1,
docs/credentials.md). Two sources compile into the same `Credential` form:

- an AI provider's own `authToken` (or Bedrock's `auth`), each provider by its convention (`for_provider`);
- Apoxy's CredentialInjectionPolicy (Header, QueryParam, ProviderAuth AWSv4 / GCPServiceAccount), attached to
  the EgressGateway, a listener, a route (or one of its rules) or a Backend.

Which applies (`CredentialTable.for_request`): the candidate's provider credential when its provider has one;
else the CredentialInjectionPolicies of the most specific scope that has any, Backend > route rule > route >
listener > gateway (all policies of that one scope apply, in name order). Nothing here touches mitmproxy.

Every value is held in fields with `repr=False`, and `to_dump()` names sources and header names, never values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from egressproxy.config.problems import ObjectRef

if TYPE_CHECKING:  # the snapshot holds this table: import its types for annotations only
    from egressproxy.snapshot import AIProvider
    from egressproxy.upstreams import Upstream

__all__ = [
    "ALLOW_CLEARTEXT_ANNOTATION",
    "WORKLOAD_CREDENTIAL_HEADERS",
    "WORKLOAD_CREDENTIAL_QUERY",
    "ANTHROPIC_DEFAULT_VERSION",
    "AZURE_DEFAULT_API_VERSION",
    "GCP_SCOPE",
    "SecretHeader",
    "SecretQuery",
    "AwsSigV4",
    "GcpServiceAccount",
    "AzureDeployment",
    "Credential",
    "CredentialTable",
]

# The extension that lets a route send a credential over cleartext HTTP (off unless set to "true").
ALLOW_CLEARTEXT_ANNOTATION = "egressproxy.io/allow-cleartext-credentials"
# What a workload may have sent as its own credential: removed before the gateway's is added (DESIGN.md 4.1).
WORKLOAD_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
WORKLOAD_CREDENTIAL_QUERY = ("key",)
# A SigV4 signature covers these; a workload's own would contradict the gateway's.
AWS_SIGNING_HEADERS = ("x-amz-date", "x-amz-security-token", "x-amz-content-sha256")
ANTHROPIC_DEFAULT_VERSION = "2023-06-01"
AZURE_DEFAULT_API_VERSION = "2024-10-21"  # Azure OpenAI's GA data-plane API version
GCP_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


@dataclass(frozen=True, slots=True)
class SecretHeader:
    """A header to set: `name: value` (the value already carries any prefix)."""

    name: str  # lower-case
    value: str = field(repr=False)
    only_if_absent: bool = False  # a default (anthropic-version): the client's own value wins


@dataclass(frozen=True, slots=True)
class SecretQuery:
    name: str
    value: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AwsSigV4:
    """AWS Signature V4 signing with a static key pair; `region`/`service` None: read from the host."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    service: str | None = None


@dataclass(frozen=True, slots=True)
class GcpServiceAccount:
    """A Google service account: its signer (google-auth's, built from the key at compile time), the token
    endpoint, and `cache_key` (a hash of the whole key file, so a rotated Secret mints a fresh token)."""

    client_email: str
    token_uri: str
    signer: Any = field(repr=False, compare=False)  # google.auth.crypt.Signer
    cache_key: str = ""
    scopes: tuple[str, ...] = (GCP_SCOPE,)


@dataclass(frozen=True, slots=True)
class AzureDeployment:
    """Azure OpenAI's deployment path and `api-version` (configured wins, else the client's, else the default)."""

    deployment: str
    api_version: str | None = None


@dataclass(frozen=True, slots=True)
class Credential:
    """What the gateway does to a request's credentials, in order: remove the workload's (unless passthrough),
    rewrite the path (Azure), set headers and query parameters, add a minted Google token, sign (SigV4) last."""

    source: str  # "Backend/ns/name provider openai" or "CredentialInjectionPolicy/ns/name": names, never values
    passthrough: bool = False  # authToken kind Passthrough: the workload's own credential goes upstream untouched
    headers: tuple[SecretHeader, ...] = ()
    query: tuple[SecretQuery, ...] = ()
    gcp: GcpServiceAccount | None = None
    sigv4: AwsSigV4 | None = None
    azure: AzureDeployment | None = None

    # Header names removed first: the usual credential headers, every one this credential sets, and the SigV4
    # headers when it signs; then the query parameters. Computed once here, not for every request (issue 16).
    removes: tuple[str, ...] = field(init=False, repr=False, compare=False)
    removes_query: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = list(WORKLOAD_CREDENTIAL_HEADERS)
        names += [h.name for h in self.headers if not h.only_if_absent and h.name not in names]
        if self.sigv4 is not None:
            names += AWS_SIGNING_HEADERS
        object.__setattr__(self, "removes", tuple(names))
        query = tuple(dict.fromkeys((*WORKLOAD_CREDENTIAL_QUERY, *(q.name for q in self.query))))
        object.__setattr__(self, "removes_query", query)

    def merged(self, other: "Credential") -> "Credential":
        """Two policies of one scope together (headers and query of both; one signer of each kind, first wins)."""
        return Credential(
            f"{self.source}, {other.source}",
            self.passthrough and other.passthrough,
            self.headers + other.headers,
            self.query + other.query,
            self.gcp or other.gcp,
            self.sigv4 or other.sigv4,
            self.azure or other.azure,
        )

    def to_dump(self) -> dict[str, Any]:
        """What `/config_dump` shows: where the credential comes from and where it goes, never a value."""
        return {
            "source": self.source,
            "passthrough": self.passthrough,
            "headers": [h.name for h in self.headers],
            "query": [q.name for q in self.query],
            "gcpServiceAccount": self.gcp.client_email if self.gcp else None,
            "awsSigV4": {"region": self.sigv4.region, "service": self.sigv4.service} if self.sigv4 else None,
            "azureDeployment": self.azure.deployment if self.azure else None,
        }


def _scope_name(scope: str, key: Any) -> str:
    if scope == "rule":
        return f"rule {key[0]}#{key[1]}"
    return scope if key is None else f"{scope} {key}"


@dataclass(frozen=True, slots=True)
class CredentialTable:
    """Every credential of one snapshot, ready to apply: by provider, and by CredentialInjectionPolicy scope."""

    # (Backend ref, provider) -> its own credential (the same provider block in two Backends is two entries)
    providers: Mapping[tuple[ObjectRef, AIProvider], Credential] = field(default_factory=lambda: MappingProxyType({}))
    # (scope, key) -> the merged credential of the policies attached there: ("backend", ref), ("rule", (route,
    # index)), ("route", ref), ("listener", name), ("gateway", None)
    scopes: Mapping[tuple[str, Any], Credential] = field(default_factory=lambda: MappingProxyType({}))
    cleartext_routes: frozenset[ObjectRef] = frozenset()

    def for_request(
        self, upstream: Upstream, route: ObjectRef | None, rule: int | None, listener: str | None
    ) -> Credential | None:
        """The credential for a request sent to `upstream`, or None: the provider's own first, then the most
        specific CredentialInjectionPolicy scope, Backend > rule > route > listener > gateway."""
        if upstream.provider is not None and upstream.backend is not None:
            own = self.providers.get((upstream.backend.ref, upstream.provider))
            if own is not None:
                return own
        keys: list[tuple[str, Any]] = []
        if upstream.backend is not None:
            keys.append(("backend", upstream.backend.ref))
        if route is not None:
            if rule is not None:
                keys.append(("rule", (route, rule)))
            keys.append(("route", route))
        if listener is not None:
            keys.append(("listener", listener))
        keys.append(("gateway", None))
        for key in keys:
            found = self.scopes.get(key)
            if found is not None:
                return found
        return None

    def cleartext_allowed(self, route: ObjectRef | None) -> bool:
        return route is not None and route in self.cleartext_routes

    def to_dump(self) -> dict[str, Any]:
        return {
            "providers": sorted((c.to_dump() for c in self.providers.values()), key=lambda d: str(d["source"])),
            "policies": {_scope_name(s, k): c.to_dump() for (s, k), c in sorted(self.scopes.items(), key=repr)},
            "cleartextRoutes": sorted(str(r) for r in self.cleartext_routes),
        }


def fingerprint(data: bytes) -> str:
    """A cache key for key material that changes when the material does (never the material itself)."""
    return hashlib.sha256(data).hexdigest()
