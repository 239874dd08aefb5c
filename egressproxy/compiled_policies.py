"""Policies in the ready-to-use form the data plane reads: built once per snapshot by the compiler.

Before, four consumers compiled their policy lazily on the first request of each generation (DNS settings and
the SSRF guard in the destination check, htpasswd tables in proxy auth, parent credentials, BackendTLSPolicy
material in upstream TLS), so a Secret that did not parse passed `validate` and failed later as a 502. Now the
compiler (`egressproxy/compiler/compiled_forms.py`) parses everything once, reports what does not parse as a
validation problem, and hangs one `CompiledPolicies` on the `Snapshot`. The hot path only looks things up here.

Key material (client keys, htpasswd hashes, parent passwords) never appears in a repr or in `to_dump()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from cryptography import x509
from passlib.context import CryptContext

from egressproxy.config.problems import ObjectRef
from egressproxy.credentials import CredentialTable
from egressproxy.ext_auth import ExtAuthTable
from egressproxy.prompt_guard import AiPolicyTable
from egressproxy.rate_limit_precedence import RateLimitTable
from egressproxy.observability_settings import AccessLogs, TracingSettings
from egressproxy.regions import RegionPolicy, merge_region_policies
from egressproxy.request_policies import RequestPolicyTable
from egressproxy.resolver import DnsSettings
from egressproxy.ssrf import SsrfGuard
from egressproxy.traffic_retries import TrafficSettings
from egressproxy.upstream_tls import UpstreamTlsParams, gateway_params

if TYPE_CHECKING:
    from egressproxy.snapshot import PolicyIndex

__all__ = [
    "HTPASSWD_SCHEMES",
    "HTPASSWD_CONTEXT",
    "BackendTls",
    "BasicAuth",
    "ParentCredentials",
    "CompiledPolicies",
]

# The htpasswd hash schemes the gateway verifies (Apache's `htpasswd -B`, `-s`, `-m`, `-2`, `-5`). Deliberately
# not passlib's default htpasswd context: that ends in `plaintext`, which would take any line of an unknown
# scheme as a clear-text password. DES crypt (`-d`) is left out: 8 significant characters, no salt worth the name.
HTPASSWD_SCHEMES = ("bcrypt", "ldap_sha1", "apr_md5_crypt", "sha256_crypt", "sha512_crypt")
HTPASSWD_CONTEXT = CryptContext(schemes=list(HTPASSWD_SCHEMES))


@dataclass(frozen=True, slots=True)
class BackendTls:
    """One BackendTLSPolicy (or the gateway trust), parsed: certificates, CRLs and the client key as objects.

    `params` is the same `UpstreamTlsParams` that `egressproxy.upstream_tls.policy_params` / `gateway_params`
    build from the Secrets, ready for the upstream TLS context builder.
    """

    source: str  # "BackendTLSPolicy/ns/name", or what the gateway trust is (upstream_tls.gateway_params)
    params: UpstreamTlsParams
    ca_certificates: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    client_chain: tuple[x509.Certificate, ...] = ()
    client_key: Any = field(default=None, repr=False)  # a cryptography private key object, or None
    policy: ObjectRef | None = None

    @property
    def hostname(self) -> str | None:
        return self.params.hostname

    @property
    def subject_alt_names(self) -> tuple[tuple[str, str], ...]:
        return self.params.subject_alt_names

    @property
    def spki_pins(self) -> frozenset[str]:
        return self.params.spki_pins

    def to_dump(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "systemTrust": self.params.system_trust,
            "caCertificates": [c.subject.rfc4514_string() for c in self.ca_certificates],
            "hostname": self.params.hostname,
            "subjectAltNames": [list(s) for s in self.params.subject_alt_names],
            "spkiPins": len(self.params.spki_pins),
            "crls": [c.issuer.rfc4514_string() for c in self.crls],
            "clientCertificate": self.client_chain[0].subject.rfc4514_string() if self.client_chain else None,
        }


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """An `HTTPListenerPolicy.basicAuth`: the deciding policy and its htpasswd table (user -> hash)."""

    policy: str  # "HTTPListenerPolicy/ns/name", the `policy` of a 407
    entries: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)

    def check(self, user: str, password: str) -> bool:
        """True when `user` is in the table and `password` matches its hash. Slow on purpose (bcrypt): call it
        off the event loop."""
        stored = self.entries.get(user)
        if stored is None:
            return False
        try:
            return bool(HTPASSWD_CONTEXT.verify(password, stored))
        except ValueError:  # the compiler refuses malformed hashes; a wrong credential is a 407, never an error
            return False

    def to_dump(self) -> dict[str, Any]:
        return {"policy": self.policy, "users": len(self.entries)}


@dataclass(frozen=True, slots=True)
class ParentCredentials:
    """The `Proxy-Authorization` header value the gateway sends on its CONNECT to one parent proxy (None: the
    parent Backend has no authSecretRef)."""

    backend: ObjectRef
    proxy_authorization: str | None = field(default=None, repr=False)


DEFAULT_REPLAY_BUFFER = 1 << 20  # DESIGN.md 4.1: the replay buffer holds 1 MiB unless buffer.maxRequestBytes says


def _gateway_tls() -> BackendTls:
    params = gateway_params(None)
    return BackendTls(params.source, params)


@dataclass(frozen=True, slots=True)
class CompiledPolicies:
    """Every compiled policy of one snapshot, with the lookups the data plane makes."""

    ssrf_guard: SsrfGuard = field(default_factory=SsrfGuard, compare=False)
    gateway_dns: DnsSettings = field(default_factory=DnsSettings)
    backend_dns: Mapping[ObjectRef, DnsSettings] = field(default_factory=lambda: MappingProxyType({}))
    gateway_tls: BackendTls = field(default_factory=_gateway_tls)
    backend_tls: Mapping[ObjectRef, BackendTls] = field(default_factory=lambda: MappingProxyType({}))
    # FlowRecord naming (`ns/name` and `Kind/ns/name`) -> the Backend ref, as upstream_tls.backend_ref_from_name
    backend_names: Mapping[str, ObjectRef] = field(default_factory=lambda: MappingProxyType({}))
    gateway_basic_auth: BasicAuth | None = None
    listener_basic_auth: Mapping[str, BasicAuth | None] = field(default_factory=lambda: MappingProxyType({}))
    parents: Mapping[tuple[str, int], ParentCredentials] = field(
        default_factory=lambda: MappingProxyType({}), repr=False
    )
    # Every RateLimitPolicy as written, and each request's merged budget (the Redis password hidden from repr
    # and dump)
    rate_limits: RateLimitTable = field(default_factory=RateLimitTable)
    # Injected credentials (egressproxy/credentials.py): by AI provider and by CredentialInjectionPolicy scope.
    credentials: CredentialTable = field(default_factory=CredentialTable, repr=False)
    # HTTPListenerPolicy accessLog and tracing: the gateway's, and per listener (listener-scoped policy first)
    gateway_access_logs: AccessLogs | None = None
    listener_access_logs: Mapping[str, AccessLogs | None] = field(default_factory=lambda: MappingProxyType({}))
    gateway_tracing: TracingSettings | None = None
    listener_tracing: Mapping[str, TracingSettings | None] = field(default_factory=lambda: MappingProxyType({}))
    # header names printed redacted (access logs, span tags): credential headers and every injected one
    redacted_headers: frozenset[str] = frozenset()

    def access_logs_for(self, listener: str | None) -> AccessLogs | None:
        if listener is None:
            return self.gateway_access_logs
        return self.listener_access_logs.get(listener, self.gateway_access_logs)

    def tracing_for(self, listener: str | None) -> TracingSettings | None:
        if listener is None:
            return self.gateway_tracing
        return self.listener_tracing.get(listener, self.gateway_tracing)

    # TrafficPolicy `ai`: prompt guards, enrichment, defaults, model lists (egressproxy/prompt_guard.py).
    ai: AiPolicyTable = field(default_factory=AiPolicyTable)
    # The failover replay buffer per listener (HTTPListenerPolicy buffer.maxRequestBytes, default 1 MiB): a
    # request body larger than this goes to its first candidate only (docs/failover.md).
    replay_buffer: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    gateway_replay_buffer: int = DEFAULT_REPLAY_BUFFER
    # TrafficPolicy ref -> its retry and timeout settings (egressproxy/traffic_retries.py)
    traffic: Mapping[ObjectRef, TrafficSettings] = field(default_factory=lambda: MappingProxyType({}))

    def replay_buffer_for(self, listener: str | None) -> int:
        if listener is None:
            return self.gateway_replay_buffer
        return self.replay_buffer.get(listener, self.gateway_replay_buffer)
    # RegionAllowListPolicy by ref (egressproxy/regions.py); CEL programs and body limits (request_policies.py)
    regions: Mapping[ObjectRef, RegionPolicy] = field(default_factory=lambda: MappingProxyType({}))
    request_policies: RequestPolicyTable = field(default_factory=RequestPolicyTable)
    # TrafficPolicy extAuth and the GatewayExtension service each calls (egressproxy/ext_auth.py)
    ext_auth: ExtAuthTable = field(default_factory=ExtAuthTable)
    _merged_regions: dict[tuple[ObjectRef, ...], RegionPolicy] = field(default_factory=dict, repr=False, compare=False)

    def dns_for(self, backend: ObjectRef | None) -> DnsSettings:
        """The effective DNSPolicy for a dial to `backend` (Backend > Gateway); None: the gateway's."""
        if backend is None:
            return self.gateway_dns
        return self.backend_dns.get(backend, self.gateway_dns)

    def tls_for(self, backend: ObjectRef | None) -> BackendTls:
        """The BackendTLSPolicy attached to `backend`, else the gateway trust."""
        if backend is None:
            return self.gateway_tls
        return self.backend_tls.get(backend, self.gateway_tls)

    def tls_for_name(self, name: str | None) -> BackendTls:
        """`tls_for` by the name a FlowRecord/ConnectionRecord gives a backend (`ns/name` or `Kind/ns/name`)."""
        if not name:
            return self.gateway_tls
        ref = self.backend_names.get(name)
        if ref is None and name.count("/") == 2:  # `Kind/ns/name` of a backend that is no Backend (a Service)
            kind, namespace, short = name.split("/")
            ref = ObjectRef(kind, namespace, short)
        return self.tls_for(ref)

    def basic_auth_for(self, listener: str | None) -> BasicAuth | None:
        """The basicAuth that applies on `listener` (listener-scoped policy first, then the gateway's)."""
        if listener is None:
            return self.gateway_basic_auth
        return self.listener_basic_auth.get(listener, self.gateway_basic_auth)

    def region_policy(
        self,
        policies: PolicyIndex,
        route: ObjectRef | None = None,
        backend: ObjectRef | None = None,
        listener: str | None = None,
        rule: int | None = None,
    ) -> RegionPolicy | None:
        """The RegionAllowListPolicies that apply to a destination (Rule > Route > Backend > Listener > Gateway),
        merged field by field; named by the most specific. The merge of compiled forms (GeoIP readers opened at
        compile time) is remembered per combination: a dict lookup after the first request."""
        if not self.regions:
            return None
        attached = policies.policies("RegionAllowListPolicy", route, backend, listener, rule)
        found = tuple(self.regions[p.ref] for p in attached if p.ref in self.regions)
        if len(found) <= 1:
            return found[0] if found else None
        key = tuple(p.ref for p in found)
        merged = self._merged_regions.get(key)
        if merged is None:
            merged = self._merged_regions[key] = merge_region_policies(found)
        return merged

    def parent_authorization(self, host: str, port: int) -> str | None:
        """The `Proxy-Authorization` value for a CONNECT to the parent proxy at host:port, if it has credentials."""
        parent = self.parents.get((host, port))
        return parent.proxy_authorization if parent is not None else None

    def to_dump(self) -> dict[str, Any]:
        """What was compiled, without key material: no hashes, keys, passwords or pins."""
        return {
            "ssrfGuard": {
                "allowCIDRs": [str(n) for n in self.ssrf_guard.allow],
                "denyCIDRs": [str(n) for n in self.ssrf_guard.deny],
            },
            "dns": {
                "gateway": _dns_dump(self.gateway_dns),
                "backends": {str(ref): _dns_dump(s) for ref, s in sorted(self.backend_dns.items())},
            },
            "upstreamTLS": {
                "gateway": self.gateway_tls.to_dump(),
                "backends": {str(ref): t.to_dump() for ref, t in sorted(self.backend_tls.items())},
            },
            "basicAuth": {
                "gateway": self.gateway_basic_auth.to_dump() if self.gateway_basic_auth else None,
                "listeners": {
                    name: auth.to_dump() if auth else None for name, auth in sorted(self.listener_basic_auth.items())
                },
            },
            "parents": sorted(f"{host}:{port}" for host, port in self.parents),
            "rateLimits": self.rate_limits.to_dump(),
            "credentials": self.credentials.to_dump(),
            "accessLogs": {
                "gateway": self.gateway_access_logs.to_dump() if self.gateway_access_logs else None,
                "listeners": {n: a.to_dump() if a else None for n, a in sorted(self.listener_access_logs.items())},
            },
            "tracing": {
                "gateway": self.gateway_tracing.to_dump() if self.gateway_tracing else None,
                "listeners": {n: t.to_dump() if t else None for n, t in sorted(self.listener_tracing.items())},
            },
            "ai": self.ai.to_dump(),
            "trafficPolicies": {str(ref): t.to_dump() for ref, t in sorted(self.traffic.items())},
            "regions": {str(ref): policy.to_dump() for ref, policy in sorted(self.regions.items())},
            "requestPolicies": self.request_policies.to_dump(),
            "extAuth": self.ext_auth.to_dump(),
        }


def _dns_dump(settings: DnsSettings) -> dict[str, Any]:
    return {
        "policy": settings.policy or None,
        "resolvers": [f"{host}:{port}" for host, port in settings.resolvers],
        "minTTL": settings.min_ttl,
        "maxTTL": settings.max_ttl,
        "reverseLookup": {"enforce": settings.reverse_enforce, "allowedSuffixes": list(settings.reverse_suffixes)},
    }
