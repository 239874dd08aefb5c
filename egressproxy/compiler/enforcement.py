"""Which fields this build enforces: the honest-status table (DESIGN.md section 6, "Honest status").

The rule: an object is `Programmed=True` only when the data plane enforces every field set on it. A field the
schema accepts and validates but the data plane does not act on makes its object `Programmed=False` with reason
`Unsupported`, and the message names the field paths. An operator who writes a rate limit must never believe it
is in force when it is not.

The table below is the decision for every field path a kind's schema accepts (paths as `field_paths` spells
them: `spec.` then field names, list items transparent). Each kind lists

- `enforced`: fields the data plane acts on (listeners, routes, matches, filters, DNSPolicy, BackendTLSPolicy,
  ...); references such as `targetRefs` and `parentRefs` count as enforced by being resolved;
- `unsupported`: fields validated but not acted on, each with the reason an operator reads in the docs.

An entry ending in `.*` decides that field and everything below it (used for references and selectors the
data plane reads whole, and for blocks not enforced at all); any other entry decides exactly one path, so a
field added to a schema later has no decision until someone writes one (`tests/unit/test_enforcement.py`
walks every schema path and fails on a missing one). When a capability lands, move its paths from
`unsupported` to `enforced` in the same change.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from egressproxy.compiler.field_paths import kind_paths, set_paths
from egressproxy.config.kinds import KINDS
from egressproxy.config.kinds.kgateway import LATER_GATEWAY_PARAMETERS_FIELDS, LATER_TRAFFIC_POLICY_FIELDS
from egressproxy.outlier_detection import OUTLIER_FIELDS

__all__ = [
    "Enforcement",
    "KindEnforcement",
    "ENFORCEMENT",
    "decision",
    "unsupported_fields",
    "unsupported_message",
]


class Enforcement(enum.Enum):
    ENFORCED = "enforced"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class KindEnforcement:
    """One kind's decisions: the enforced entries, and the unsupported ones with why."""

    enforced: tuple[str, ...]
    unsupported: Mapping[str, str]

    def __post_init__(self) -> None:
        both = set(self.enforced) & set(self.unsupported)
        assert not both, f"decided both ways: {sorted(both)}"

    def entry(self, key: str) -> Enforcement | None:
        if key in self.unsupported:
            return Enforcement.UNSUPPORTED
        if key in self.enforced:
            return Enforcement.ENFORCED
        return None


def _under(prefix: str, entries: Iterable[str]) -> tuple[str, ...]:
    return tuple(f"{prefix}.{e}" for e in entries)


# --- shared pieces ----------------------------------------------------------------------------------------------

# HTTPListenerPolicy access logs (docs/observability.md): file and OTLP sinks with their formats.
_ACCESS_LOG_ENFORCED = (
    "spec.accessLog",
    "spec.accessLog.fileSink",
    "spec.accessLog.fileSink.path",
    "spec.accessLog.fileSink.stringFormat",
    "spec.accessLog.fileSink.jsonFormat",
    "spec.accessLog.otel",
    "spec.accessLog.otel.endpoint",
    "spec.accessLog.otel.protocol",
)
_OTEL_TRACING = "spec.tracing.provider.openTelemetry"
_TRACING_ENFORCED = (
    "spec.tracing",
    "spec.tracing.provider",
    "spec.tracing.provider.otel.*",
    _OTEL_TRACING,
    f"{_OTEL_TRACING}.grpcService",
    f"{_OTEL_TRACING}.grpcService.backendRef",
    f"{_OTEL_TRACING}.grpcService.backendRef.name",
    f"{_OTEL_TRACING}.grpcService.backendRef.namespace",
    f"{_OTEL_TRACING}.grpcService.backendRef.port",
    f"{_OTEL_TRACING}.serviceName",
    f"{_OTEL_TRACING}.sampler.*",  # alwaysOnConfig: the sampling rate decides, 100% unless set
    "spec.tracing.randomSampling",
    "spec.tracing.overallSampling",
    "spec.tracing.samplingRate",
    "spec.tracing.propagators",
    "spec.tracing.customTags.*",
    "spec.tracing.attributes",
    "spec.tracing.attributes.name",
    "spec.tracing.attributes.literal.*",
    "spec.tracing.attributes.environment.*",
    "spec.tracing.attributes.requestHeader.*",
)
_TRACING_SERVICE_ONLY = "the collector is dialled as a Kubernetes Service (name.namespace.svc.cluster.local:port)"
_TRACING_UNSUPPORTED = {
    f"{_OTEL_TRACING}.grpcService.backendRef.group": _TRACING_SERVICE_ONLY,
    f"{_OTEL_TRACING}.grpcService.backendRef.kind": _TRACING_SERVICE_ONLY,
    f"{_OTEL_TRACING}.grpcService.backendRef.weight": "one collector is called; weight is not read",
    **{
        f"{_OTEL_TRACING}.grpcService.{f}.*": "gRPC call options of the span exporter are not configurable here"
        for f in ("authority", "maxReceiveMessageLength", "skipEnvoyHeaders", "timeout", "initialMetadata",
                  "retryPolicy")
    },
    f"{_OTEL_TRACING}.resourceDetectors.*": "resource detectors are not run (the resource is service.name)",
    "spec.tracing.clientSampling": "client-forced sampling (x-client-trace-id) is not implemented",
    "spec.tracing.verbose": "there are no per-filter spans to add",
    "spec.tracing.maxPathTagLength": "the path attribute is not cut",
    "spec.tracing.spawnUpstreamSpan": "one span per request; no separate upstream span",
    "spec.tracing.attributes.metadata.*": "metadata-valued span attributes are not implemented",
}

_TARGET_REFS = ("spec.targetRefs.*",)
_PARENT_REFS = ("spec.parentRefs.*",)

_NOT_MIRRORED = "request mirroring is not implemented"
_NO_CORS = "CORS handling is not implemented"
_NO_BACKEND_FILTERS = "filters on a single backendRef are not applied (rule filters are)"
_NO_L4_BACKENDS = (
    "TLS, TCP and UDP connections go to the requested destination (a parent-proxy Backend excepted); "
    "other backendRefs are resolved but not dialled"
)


def _http_filters(prefix: str, *, http: bool) -> tuple[tuple[str, ...], dict[str, str]]:
    """Gateway API route filters under `prefix` (HTTPRoute has redirects, rewrites and CORS; GRPCRoute not)."""
    enforced = [
        "",
        ".type",
        ".requestHeaderModifier.*",
        ".responseHeaderModifier.*",
        ".extensionRef.*",
    ]
    unsupported = {".requestMirror.*": _NOT_MIRRORED}
    if http:
        enforced += [".requestRedirect.*", ".urlRewrite.*"]
        unsupported[".cors.*"] = _NO_CORS
        unsupported[".externalAuth.*"] = _NO_EXTERNAL_AUTH_FILTER
    return tuple(prefix + e for e in enforced), {prefix + k: v for k, v in unsupported.items()}


_NO_DEFAULT_GATEWAYS = "default Gateways are not modelled: name the EgressGateway in parentRefs"
_NO_EXTERNAL_AUTH_FILTER = "the experimental ExternalAuth filter is not implemented"


def _route_kind(*, http: bool) -> KindEnforcement:
    rule_filters, rule_filters_unsupported = _http_filters("spec.rules.filters", http=http)
    matches: tuple[str, ...] = (
        ("spec.rules.matches", "spec.rules.matches.path.*", "spec.rules.matches.headers.*",
         "spec.rules.matches.queryParams.*", "spec.rules.matches.method")
        if http
        else ("spec.rules.matches", "spec.rules.matches.method.*", "spec.rules.matches.headers.*")
    )
    backend_refs = _under("spec.rules.backendRefs", ("group", "kind", "name", "namespace", "port", "weight"))
    unsupported = {
        **rule_filters_unsupported,
        "spec.rules.backendRefs.filters.*": _NO_BACKEND_FILTERS,
        "spec.rules.sessionPersistence": "session persistence is not implemented",
        "spec.useDefaultGateways": _NO_DEFAULT_GATEWAYS,
    }
    enforced = (*_PARENT_REFS, "spec.hostnames", "spec.rules", "spec.rules.name", *matches, *rule_filters,
                "spec.rules.backendRefs", *backend_refs)
    if http:
        enforced += ("spec.rules.timeouts", "spec.rules.timeouts.request", "spec.rules.timeouts.backendRequest")
        enforced += ("spec.rules.retry.*",)
    return KindEnforcement(enforced, MappingProxyType(unsupported))


def _l4_route_kind(*, hostnames: bool) -> KindEnforcement:
    enforced = (*_PARENT_REFS, "spec.rules", "spec.rules.name") + (("spec.hostnames",) if hostnames else ())
    unsupported = {"spec.rules.backendRefs.*": _NO_L4_BACKENDS, "spec.useDefaultGateways": _NO_DEFAULT_GATEWAYS}
    return KindEnforcement(enforced, MappingProxyType(unsupported))


# --- AI providers (Backend `ai`, AIBackend) ---------------------------------------------------------------------

# Routing fields: each provider of the priority groups is a candidate the failover walk dials (its hostOverride,
# else its well-known endpoint from endpoint/region/location: egressproxy/provider_endpoints.py), at its
# pathOverride when it has one (egressproxy/candidate_request.py).
_PROVIDER_ROUTING = ("hostOverride.*", "pathOverride.*", "endpoint", "region", "location")
_NO_AUTH_HEADER = "a custom auth header name or prefix is not applied (each provider's own convention is)"
_NO_REWRITE = "the request is not rewritten for the provider yet"
_MODEL_IN_PATH = (
    "Gemini, Vertex AI and Bedrock name the model (Vertex AI also the project and publisher) in the URL path, which "
    "the gateway does not rewrite; OpenAI's, Anthropic's and Mistral's `model` is applied (it replaces the body's)"
)

# Fields each provider's credential injection and request rewriting enforce (docs/credentials.md):
# authToken (Inline, SecretRef, Passthrough) by the provider's convention, Bedrock's `auth` as SigV4 signing,
# Anthropic's `apiVersion` as anthropic-version, Azure's deployment path and api-version, and the `model` that
# replaces the body's (egressproxy/model_rewrite.py) where the body carries it.
_PROVIDER_ENFORCED: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "openai": ("authToken.*", "model"),
        "anthropic": ("authToken.*", "model", "apiVersion"),
        "mistral": ("authToken.*", "model"),
        "gemini": ("authToken.*",),
        "vertexAi": ("authToken.*",),
        "vertexai": ("authToken.*",),
        "azureOpenai": ("authToken.*", "deploymentName", "apiVersion"),
        "azureopenai": ("authToken.*", "deploymentName", "apiVersion"),
        "azure": ("authToken.*", "deploymentName", "apiVersion"),
        "bedrock": ("auth.*",),
    }
)

# Every other field of a provider block, whatever the provider: why it is not enforced yet.
_PROVIDER_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "authHeaderOverride.*": _NO_AUTH_HEADER,
        "project": _MODEL_IN_PATH,
        "model": _MODEL_IN_PATH,
        "publisher": _MODEL_IN_PATH,
        "apiVersion": (
            "Gemini's and Vertex AI's API version is in the URL path, which the gateway does not rewrite; Anthropic's "
            "and Azure OpenAI's `apiVersion` is applied"
        ),
        "projectId": _MODEL_IN_PATH,
        "modelPath": _MODEL_IN_PATH,
        "guardrail.*": "Bedrock guardrails are not applied",
    }
)
# The seeds' spellings and kgateway's lower-case `azureopenai` / `vertexai`.
_LLM_PROVIDERS = ("openai", "anthropic", "gemini", "bedrock", "azureOpenai", "vertexAi", "azureopenai", "vertexai")
_OPENAPI_PROVIDERS = ("openai", "azure", "gemini", "mistral")


def _providers(kind: str, prefix: str, providers: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, str]]:
    """For each provider block under `prefix`: the routing entries it has (enforced), and `_PROVIDER_FIELDS`
    limited to the fields that block has (unsupported)."""
    accepted = set(kind_paths(KINDS[kind]))
    enforced: list[str] = []
    unsupported: dict[str, str] = {}
    for provider in providers:
        enforced.append(f"{prefix}.{provider}")
        own = _PROVIDER_ENFORCED.get(provider, ())
        for name in (*_PROVIDER_ROUTING, *own):
            path = f"{prefix}.{provider}.{name}"
            if path.removesuffix(".*") in accepted:
                enforced.append(path)
        for name, why in _PROVIDER_FIELDS.items():
            path = f"{prefix}.{provider}.{name}"
            if name not in own and path.removesuffix(".*") in accepted:
                unsupported[path] = why
    return tuple(enforced), unsupported


def _llm(kind: str, prefix: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """An `llm` block in every spelling: the provider blocks in it (seeds, kgateway v2.1) or under its `provider`
    (kgateway v2.0), and where the provider is said at the llm level (v2.1 `host`/`port`/`path`/`authHeader`, v2.0
    `hostOverride`/`pathOverride`/`authHeaderOverride`): the host, port and path are applied, the auth header
    override is not."""
    accepted = set(kind_paths(KINDS[kind]))
    direct, direct_unsupported = _providers(kind, prefix, _LLM_PROVIDERS)
    nested, nested_unsupported = _providers(kind, f"{prefix}.provider", _LLM_PROVIDERS)
    level_enforced = [
        f"{prefix}.{f}" for f in ("name", "host", "port", "provider", "hostOverride.*", "path.*", "pathOverride.*")
    ]
    level_unsupported = {
        f"{prefix}.authHeader.*": _NO_AUTH_HEADER,
        f"{prefix}.authHeaderOverride.*": _NO_AUTH_HEADER,
    }
    enforced = (prefix, *direct, *nested, *(p for p in level_enforced if p.removesuffix(".*") in accepted))
    unsupported = {**direct_unsupported, **nested_unsupported}
    unsupported.update({p: why for p, why in level_unsupported.items() if p.removesuffix(".*") in accepted})
    return tuple(enforced), unsupported


_BACKEND_LLM = _llm("Backend", "spec.ai.llm")
_AIBACKEND_LLM = _llm("AIBackend", "spec.llm")


def _groups(kind: str, prefix: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """Priority groups (seeds/v2.1 `priorityGroups[].providers[]`, v2.0 `multipool.priorities[].pool[]`): walked
    in order by the failover hop (docs/failover.md); each entry is a provider block like `llm`'s."""
    seeds = _llm(kind, f"{prefix}.priorityGroups.providers")
    pools = _llm(kind, f"{prefix}.multipool.priorities.pool")
    accepted = set(kind_paths(KINDS[kind]))
    enforced = (
        f"{prefix}.priorityGroups", *seeds[0], f"{prefix}.multipool", f"{prefix}.multipool.priorities", *pools[0]
    )
    return tuple(e for e in enforced if e.removesuffix(".*") in accepted), {**seeds[1], **pools[1]}


_BACKEND_GROUPS = _groups("Backend", "spec.ai")
_AIBACKEND_GROUPS = _groups("AIBackend", "spec")
_BACKEND_OPENAPI = _providers("Backend", "spec.ai.provider", _OPENAPI_PROVIDERS)
_AIBACKEND_PROVIDERS = _providers("AIBackend", "spec.provider", _OPENAPI_PROVIDERS)


_OUTLIER_SUCCESS_RATE = "success-rate ejection and enforcing percentages are not implemented (consecutive5xx is)"

# --- the table --------------------------------------------------------------------------------------------------

_NO_LOGGING_SINKS = (
    "named log sinks are not implemented: captures go to the embedded store and the EgressGateway's OTLP export"
)
_NO_POLICY_HEADERS = "TrafficPolicy header modifiers are not applied (route filters are)"
_NO_SELECTORS = "attachment by label selector (targetSelectors) is not implemented; use targetRefs"
_NO_STREAM_IDLE = "a stream idle timeout is not applied (timeouts.request is)"
_NO_XFF = "X-Forwarded-For is not read or written; identity comes from proxy credentials (DESIGN.md 5)"
_NO_LISTENER_TIMEOUTS = "listener idle timeouts are the gateway's client limits (DESIGN.md 4.2), not this policy's"
_LATER_KGATEWAY = "a kgateway 2.2+ field, accepted as written and not implemented"
_NO_EXT = "external services (ext_proc, rate limit services, JWT and OAuth2 providers) are not called"

# External auth (docs/ext-auth.md): the ext_authz gRPC service of a GatewayExtension, attached by a TrafficPolicy.
_NO_EXT_AUTH_BODY = "the request body is not sent to the ext_authz service (headers only)"
_EXT_AUTH_POLICY_ENFORCED = (
    "spec.extAuth",
    "spec.extAuth.extensionRef.*",
    "spec.extAuth.disable",
    "spec.extAuth.enablement",
    "spec.extAuth.contextExtensions",
)
_EXT_AUTH_SERVICE_ENFORCED = (
    "spec.extAuth",
    "spec.extAuth.grpcService",
    "spec.extAuth.grpcService.backendRef",
    *_under("spec.extAuth.grpcService.backendRef", ("group", "kind", "name", "namespace", "port")),
    "spec.extAuth.grpcService.authority",
    "spec.extAuth.grpcService.requestTimeout",
    "spec.extAuth.headersToForward",
    "spec.extAuth.failOpen",
    "spec.extAuth.statusOnError",
    "spec.extAuth.timeout",
)
_EXT_AUTH_SERVICE_UNSUPPORTED = {
    "spec.extAuth.grpcService.backendRef.weight": "one ext_authz service is called; a weight has no effect",
    "spec.extAuth.httpService": "HTTP ext_authz services (kgateway 2.2+) are not called: requests fail closed",
    "spec.extAuth.clearRouteCache": "the route is chosen before ext auth runs and is not recomputed",
    "spec.extAuth.withRequestBody.*": _NO_EXT_AUTH_BODY,
    "spec.extAuth.statPrefix": "no per-extension statistics are kept",
}

# TrafficPolicy `ai` (docs/guardrails.md): regex prompt guards, enrichment, defaults and the model lists.
_AI_ENFORCED = (
    "spec.ai",
    "spec.ai.promptGuard",
    "spec.ai.promptGuard.request",
    "spec.ai.promptGuard.request.customResponse.*",
    "spec.ai.promptGuard.request.regex.*",
    "spec.ai.promptGuard.response",
    "spec.ai.promptGuard.response.regex.*",
    "spec.ai.promptEnrichment.*",
    "spec.ai.defaults.*",
    "spec.ai.fieldDefaults.*",
    "spec.ai.models.*",
)
_NO_GUARD_WEBHOOK = "prompt guard webhooks are not called"
_AI_UNSUPPORTED = {
    "spec.ai.promptGuard.request.webhook.*": _NO_GUARD_WEBHOOK,
    "spec.ai.promptGuard.response.webhook.*": _NO_GUARD_WEBHOOK,
    "spec.ai.promptGuard.request.moderation.*": "the OpenAI moderation endpoint is not called",
    "spec.ai.routeType": "not read: a streamed answer is recognised by its content type (text/event-stream)",
}

ENFORCEMENT: Mapping[str, KindEnforcement] = MappingProxyType(
    {
        "EgressGateway": KindEnforcement(
            (
                "spec.defaultPolicy",
                "spec.listeners",
                *_under(
                    "spec.listeners",
                    ("name", "protocol", "port", "tls", "tls.mode", "tls.caCertRef.*", "allowedRoutes",
                     "allowedRoutes.namespaces.*", "allowedRoutes.kinds.*"),
                ),
                "spec.dns",
                "spec.dns.lookupFamily",
                "spec.requestTimeout",
                "spec.connectTimeout",
                "spec.upstreamTLS",
                "spec.upstreamTLS.additionalTrustBundleSecretRef.*",
                "spec.upstreamTLS.hostAliases.*",
                "spec.ssrfGuard",
                "spec.ssrfGuard.allowCIDRs",
                "spec.ssrfGuard.denyCIDRs",
                "spec.parentRef.*",
                # Client limits (docs/reliability.md): head size and header count (431), idle and head timeouts,
                # connections per client address; enforced on HTTP/1 request heads and at accept.
                "spec.clientLimits",
                *_under("spec.clientLimits", ("maxRequestHeadBytes", "maxRequestHeaders", "requestHeadTimeout",
                                              "idleTimeout", "maxConnectionsPerClient")),
                # Capture (docs/captures.md): bodies copied by the tap chain into the embedded store, re-exported
                # over OTLP/HTTP when `otlp.endpoint` is set; `extProc` is clrk's later spelling of the same switch.
                "spec.otlp",
                *_under("spec.otlp", ("endpoint", "headers", "captureBody", "captureBody.maxBytes",
                                      "captureBody.includeContentTypes")),
                "spec.extProc",
                *_under("spec.extProc", ("enabled", "captureBody", "captureBody.maxBytes",
                                         "captureBody.includeContentTypes")),
                # Read by `egressproxy render-k8s` (the manifests), not by the running data plane.
                "spec.infrastructure",
                "spec.infrastructure.parametersRef.*",
            ),
            MappingProxyType({}),
        ),
        "HTTPRoute": _route_kind(http=True),
        "GRPCRoute": _route_kind(http=False),
        "TLSRoute": _l4_route_kind(hostnames=True),
        "TCPRoute": _l4_route_kind(hostnames=False),
        "UDPRoute": _l4_route_kind(hostnames=False),
        "EgressL4Route": KindEnforcement(
            (
                *_PARENT_REFS,
                "spec.rules",
                "spec.rules.matches",
                *_under("spec.rules.matches", ("destinationCIDRs", "destinationHostnames", "ports.*", "protocol")),
                "spec.rules.filters.*",  # ExtensionRefs attach their policy, which reports its own status
            ),
            MappingProxyType(
                {
                    "spec.rules.matches.sourceAgents.*": "matching on the source workload is not implemented",
                    "spec.rules.backendRefs.*": _NO_L4_BACKENDS,
                }
            ),
        ),
        "BackendTLSPolicy": KindEnforcement(
            (
                *_TARGET_REFS,
                "spec.validation",
                *_under(
                    "spec.validation",
                    ("caCertificateRefs.*", "wellKnownCACertificates", "hostname", "subjectAltNames.*", "spkiPins",
                     "crlRefs.*"),
                ),
                "spec.clientCertificateRef.*",
            ),
            MappingProxyType({"spec.options": "TLS options (cipher suites, versions) are not applied"}),
        ),
        "DNSPolicy": KindEnforcement(
            (*_TARGET_REFS, "spec.resolvers", "spec.minTTL", "spec.maxTTL", "spec.reverseLookup.*"),
            MappingProxyType({}),
        ),
        "EgressDenyPolicy": KindEnforcement(
            ("spec.targetRef.*", *_TARGET_REFS, "spec.denyResponse.*", "spec.enforcementMode"),
            MappingProxyType({}),
        ),
        "CredentialInjectionPolicy": KindEnforcement(
            (
                *_PARENT_REFS,
                *_TARGET_REFS,
                *(f"spec.{f}" for f in ("secretRef.*", "secretKey", "target", "headerName", "queryParamName",
                                        "providerAuth.*", "valuePrefix")),
            ),
            MappingProxyType({}),
        ),
        "RateLimitPolicy": KindEnforcement(
            (
                *_TARGET_REFS,
                "spec.requests",
                "spec.tokens",
                "spec.window",
                "spec.scope",
                "spec.store",
                "spec.store.type",
                "spec.store.redis",
                "spec.store.redis.address",
                "spec.store.redis.passwordSecretRef.*",
                "spec.failureMode",
                "spec.enforcementMode",
            ),
            MappingProxyType({}),
        ),
        "LoggingPolicy": KindEnforcement(
            (*_TARGET_REFS, "spec.captureRequest", "spec.captureResponse", "spec.redactHeaders"),
            MappingProxyType({"spec.sinkRef": _NO_LOGGING_SINKS}),
        ),
        "RegionAllowListPolicy": KindEnforcement(
            (*_TARGET_REFS, "spec.allowedRegions", "spec.unknownRegion", "spec.geoIP.*", "spec.enforcementMode"),
            MappingProxyType({}),
        ),
        "Backend": KindEnforcement(
            (
                "spec.type",
                "spec.static",
                "spec.static.hosts",
                "spec.static.hosts.host",
                "spec.static.hosts.port",
                "spec.ai",
                "spec.ai.provider",
                "spec.ai.provider.type",
                "spec.dynamicForwardProxy",
                "spec.parent.*",
                *_BACKEND_LLM[0],
                *_BACKEND_OPENAPI[0],
                *_BACKEND_GROUPS[0],
                "spec.outlierDetection",
                *(f"spec.outlierDetection.{f}" for f in OUTLIER_FIELDS),
            ),
            MappingProxyType(
                {
                    "spec.static.hosts.tls.*": "a per-host SNI is not applied",
                    **_BACKEND_LLM[1],
                    **_BACKEND_OPENAPI[1],
                    **_BACKEND_GROUPS[1],
                    **{
                        f"spec.outlierDetection.{f}": _OUTLIER_SUCCESS_RATE
                        for f in ("enforcingConsecutive5xx", "enforcingSuccessRate", "successRateMinimumHosts",
                                  "successRateRequestVolume", "successRateStdevFactor")
                    },
                    "spec.static.appProtocol": "the application protocol is not applied (HTTP/1.1 or as negotiated)",
                    "spec.aws.*": "AWS Lambda backends are not implemented",
                    "spec.mcp.*": "MCP backends are not implemented",
                    "spec.dynamicForwardProxy.enableTls": "TLS origination for dynamic forwarding is not implemented",
                }
            ),
        ),
        "AIBackend": KindEnforcement(
            # groups: the named Backends' candidates by priority, weighted within a group (decisions._member_candidates)
            ("spec.provider", "spec.provider.type", *_AIBACKEND_PROVIDERS[0], *_AIBACKEND_LLM[0], *_AIBACKEND_GROUPS[0],
             "spec.groups", "spec.groups.*"),
            MappingProxyType(
                {
                    **_AIBACKEND_PROVIDERS[1],
                    **_AIBACKEND_LLM[1],
                    **_AIBACKEND_GROUPS[1],
                }
            ),
        ),
        "TrafficPolicy": KindEnforcement(
            # enforcementMode: Report applies to the deny-type parts this build enforces (ai.promptGuard REJECT,
            # ai.models, rbac, extAuth).
            (*_TARGET_REFS, *_AI_ENFORCED, "spec.enforcementMode", "spec.rbac.*", "spec.timeouts", "spec.timeouts.request",
             "spec.timeout", "spec.timeout.request", "spec.retry.*", "spec.retries.*", *_EXT_AUTH_POLICY_ENFORCED),
            MappingProxyType(
                {
                    "spec.targetSelectors.*": _NO_SELECTORS,
                    **{f"spec.{f}": _LATER_KGATEWAY for f in LATER_TRAFFIC_POLICY_FIELDS},
                    "spec.cors.*": _NO_CORS,
                    "spec.csrf.*": "CSRF checks are not implemented",
                    "spec.timeouts.streamIdle": _NO_STREAM_IDLE,
                    "spec.timeout.idle": _NO_STREAM_IDLE,
                    "spec.headerModifiers.*": _NO_POLICY_HEADERS,
                    "spec.requestHeaderModifier.*": _NO_POLICY_HEADERS,
                    "spec.responseHeaderModifier.*": _NO_POLICY_HEADERS,
                    "spec.transformation.*": "header and body transformations are not implemented",
                    "spec.autoHostRewrite": "host rewriting to the backend's hostname is not implemented",
                    "spec.buffer.*": "the request size limit is not applied",
                    "spec.basicAuth.*": (
                        "request Basic authentication is not implemented (proxy authentication is "
                        "HTTPListenerPolicy basicAuth)"
                    ),
                    **_AI_UNSUPPORTED,
                    "spec.extAuth.withRequestBody.*": _NO_EXT_AUTH_BODY,
                    **{f"spec.{f}.*": _NO_EXT for f in ("extProc", "rateLimit")},
                }
            ),
        ),
        "HTTPListenerPolicy": KindEnforcement(
            (*_TARGET_REFS, "spec.basicAuth.*", *_ACCESS_LOG_ENFORCED, *_TRACING_ENFORCED, "spec.buffer.*",
             "spec.celValidation.*", "spec.enforcementMode"),
            MappingProxyType(
                {
                    "spec.targetSelectors.*": _NO_SELECTORS,
                    "spec.accessLogging": "the open accessLogging block is not read (use accessLog)",
                    "spec.accessLog.grpcService.*": "gRPC access-log services (Envoy ALS) are not called",
                    "spec.accessLog.openTelemetry.*": (
                        "the openTelemetry ALS sink is not written (the otel sink exports OTLP log records)"
                    ),
                    "spec.accessLog.filter.*": "access-log filters are not applied (every request is logged)",
                    **_TRACING_UNSUPPORTED,
                    "spec.upgradeConfig.*": "the enabledUpgrades list is not applied",
                    "spec.useRemoteAddress": _NO_XFF,
                    "spec.xffNumTrustedHops": _NO_XFF,
                    "spec.preserveExternalRequestId": "request ids are not generated or rewritten",
                    "spec.serverHeaderTransformation": "Server header transformation is not applied",
                    "spec.streamIdleTimeout": _NO_LISTENER_TIMEOUTS,
                    "spec.idleTimeout": _NO_LISTENER_TIMEOUTS,
                    "spec.healthCheck.*": "a health-check path on the listener is not served",
                    "spec.preserveHttp1HeaderCase": "HTTP/1 header case preservation is not configurable here",
                    "spec.acceptHttp10": "HTTP/1.0 handling is not configurable here",
                    "spec.defaultHostForHttp10": "HTTP/1.0 handling is not configurable here",
                }
            ),
        ),
        "DirectResponse": KindEnforcement(("spec.status", "spec.statusCode", "spec.body"), MappingProxyType({})),
        "GatewayExtension": KindEnforcement(
            # ExtAuth over gRPC is called (docs/ext-auth.md); the other types' blocks stay unsupported, so an
            # ExtProc or RateLimit extension is still Programmed=False whatever its `type` says.
            ("spec.type", *_EXT_AUTH_SERVICE_ENFORCED),
            MappingProxyType(
                {
                    **_EXT_AUTH_SERVICE_UNSUPPORTED,
                    **{f"spec.{f}.*": _NO_EXT for f in ("extProc", "rateLimit", "jwt", "oauth2")},
                }
            ),
        ),
        # GatewayParameters shape the manifests `egressproxy render-k8s` writes (egressproxy/k8s_manifests.py);
        # the running data plane reads none of it. Enforced = rendered into the Deployment or Service.
        "GatewayParameters": KindEnforcement(
            (
                "spec.kube",
                "spec.kube.deployment",
                *_under(
                    "spec.kube.deployment",
                    ("replicas", "omitReplicas", "strategy", "container", "container.resources.*",
                     "container.securityContext.*"),
                ),
                "spec.kube.podTemplate",
                *_under(
                    "spec.kube.podTemplate",
                    ("extraLabels", "extraAnnotations", "securityContext", "imagePullSecrets.*", "nodeSelector",
                     "affinity", "tolerations.*", "terminationGracePeriodSeconds", "startupProbe", "readinessProbe",
                     "livenessProbe", "topologySpreadConstraints", "extraVolumes"),
                ),
                "spec.kube.envoyContainer",
                *_under(
                    "spec.kube.envoyContainer", ("image.*", "securityContext", "resources.*", "env", "extraVolumeMounts")
                ),
                "spec.kube.service",
                *_under(
                    "spec.kube.service",
                    ("type", "clusterIP", "extraLabels", "extraAnnotations", "externalTrafficPolicy",
                     "loadBalancerSourceRanges"),
                ),
                "spec.kube.floatingUserId",
                "spec.kube.omitDefaultSecurityContext",
            ),
            MappingProxyType(
                {
                    **{
                        f"spec.kube.{f}.*": "render-k8s writes no overlays, autoscalers or disruption budgets"
                        for f in LATER_GATEWAY_PARAMETERS_FIELDS
                    },
                    **{
                        f"spec.kube.{f}.*": "this data plane runs no such container (one egressproxy container)"
                        for f in ("agentgateway", "agentGateway", "aiExtension", "sdsContainer", "istio")
                    },
                    "spec.kube.envoyContainer.bootstrap.*": "Envoy bootstrap settings; use `run --log-level`",
                    "spec.kube.podTemplate.gracefulShutdown.*": "render-k8s writes no preStop sleep",
                    "spec.kube.podTemplate.spec.*": "render-k8s reads podTemplate's own affinity, nodeSelector, "
                    "tolerations",
                    "spec.kube.service.ports": "the Service's ports are the gateway's (8080); not configurable",
                    "spec.kube.serviceAccount.*": "render-k8s writes no ServiceAccount",
                    "spec.kube.stats.*": "Envoy stats settings; metrics are always on 9091",
                    "spec.selfManaged.*": "render-k8s always writes the Deployment and Service",
                }
            ),
        ),
        "Secret": KindEnforcement((), MappingProxyType({})),  # no spec: read whole by what references it
        "ConfigMap": KindEnforcement((), MappingProxyType({})),  # no spec: key ca.crt read by a BackendTLSPolicy
    }
)


def decision(kind: str, path: str) -> Enforcement | None:
    """The decision for one field path: its own entry, else the nearest `prefix.*` entry above it."""
    table = ENFORCEMENT.get(kind)
    if table is None:
        return None
    found = table.entry(path) or table.entry(f"{path}.*")
    if found is not None:
        return found
    parts = path.split(".")
    for end in range(len(parts) - 1, 0, -1):
        found = table.entry(".".join(parts[:end]) + ".*")
        if found is not None:
            return found
    return None


@functools.cache
def _is_unsupported(kind: str, path: str) -> bool:
    """`decision` per (kind, schema path), remembered: ENFORCEMENT is immutable and the paths are the schemas'
    (a finite set), while every object asks again for each field it sets (10,000 routes: ~130,000 asks)."""
    return decision(kind, path) is Enforcement.UNSUPPORTED


def unsupported_fields(kind: str, raw_spec: Any) -> tuple[str, ...]:
    """The field paths an object sets that this build does not enforce (the outermost of nested ones)."""
    out: list[str] = []
    for path in set_paths(kind, raw_spec) if kind in ENFORCEMENT else ():
        if not _is_unsupported(kind, path):
            continue
        if any(path.startswith(f"{outer}.") for outer in out):
            continue
        out.append(path)
    return tuple(out)


def unsupported_message(paths: Iterable[str]) -> str:
    """The `Programmed=False` / `Unsupported` condition message: which fields, and what that means."""
    listed = list(paths)
    verb = "is" if len(listed) == 1 else "are"
    return f"{', '.join(listed)} {verb} validated but not enforced by this build"
