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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from egressproxy.compiler.field_paths import kind_paths, set_paths
from egressproxy.config.kinds import KINDS
from egressproxy.config.kinds.kgateway import LATER_GATEWAY_PARAMETERS_FIELDS, LATER_TRAFFIC_POLICY_FIELDS

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
        enforced += ("spec.rules.timeouts", "spec.rules.timeouts.request")
        unsupported["spec.rules.timeouts.backendRequest"] = "a per-backend-request timeout is not applied"
        unsupported["spec.rules.retry.*"] = "retries are not implemented"
    return KindEnforcement(enforced, MappingProxyType(unsupported))


def _l4_route_kind(*, hostnames: bool) -> KindEnforcement:
    enforced = (*_PARENT_REFS, "spec.rules", "spec.rules.name") + (("spec.hostnames",) if hostnames else ())
    unsupported = {"spec.rules.backendRefs.*": _NO_L4_BACKENDS, "spec.useDefaultGateways": _NO_DEFAULT_GATEWAYS}
    return KindEnforcement(enforced, MappingProxyType(unsupported))


# --- AI providers (Backend `ai`, AIBackend) ---------------------------------------------------------------------

# Routing fields: the first provider of the highest priority group is the request's dial target (its
# hostOverride, else its well-known endpoint from endpoint/region/location: egressproxy/provider_endpoints.py).
_PROVIDER_ROUTING = ("hostOverride.*", "endpoint", "region", "location")
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
        "pathOverride.*": _NO_REWRITE,
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
    `hostOverride`/`pathOverride`/`authHeaderOverride`): the host and port are dialled, the rest is not applied."""
    accepted = set(kind_paths(KINDS[kind]))
    direct, direct_unsupported = _providers(kind, prefix, _LLM_PROVIDERS)
    nested, nested_unsupported = _providers(kind, f"{prefix}.provider", _LLM_PROVIDERS)
    level_enforced = [f"{prefix}.{f}" for f in ("host", "port", "provider", "hostOverride.*")]
    level_unsupported = {
        f"{prefix}.path.*": _NO_REWRITE,
        f"{prefix}.pathOverride.*": _NO_REWRITE,
        f"{prefix}.authHeader.*": _NO_AUTH_HEADER,
        f"{prefix}.authHeaderOverride.*": _NO_AUTH_HEADER,
    }
    enforced = (prefix, *direct, *nested, *(p for p in level_enforced if p.removesuffix(".*") in accepted))
    unsupported = {**direct_unsupported, **nested_unsupported}
    unsupported.update({p: why for p, why in level_unsupported.items() if p.removesuffix(".*") in accepted})
    return tuple(enforced), unsupported


_BACKEND_LLM = _llm("Backend", "spec.ai.llm")
_AIBACKEND_LLM = _llm("AIBackend", "spec.llm")
_BACKEND_OPENAPI = _providers("Backend", "spec.ai.provider", _OPENAPI_PROVIDERS)
_AIBACKEND_PROVIDERS = _providers("AIBackend", "spec.provider", _OPENAPI_PROVIDERS)


_AI_PRIORITY_GROUPS = (
    "failover across priority groups is not implemented (the first provider of the first group is dialled)"
)

# --- the table --------------------------------------------------------------------------------------------------

_NO_CAPTURE = "no capture store or OTLP export in this build"
_NO_LOGGING_POLICY = "capture and header redaction are not implemented"
_NO_REGIONS = "region allow-lists are not implemented"
_NO_POLICY_HEADERS = "TrafficPolicy header modifiers are not applied (route filters are)"
_NO_SELECTORS = "attachment by label selector (targetSelectors) is not implemented; use targetRefs"
_NO_POLICY_TIMEOUTS = "TrafficPolicy timeouts are not applied (the gateway's and the route's are)"
_NO_XFF = "X-Forwarded-For is not read or written; identity comes from proxy credentials (DESIGN.md 5)"
_NO_LISTENER_TIMEOUTS = "listener idle timeouts are the gateway's client limits (DESIGN.md 4.2), not this policy's"
_LATER_KGATEWAY = "a kgateway 2.2+ field, accepted as written and not implemented"
_NO_EXT = "external services (ext_authz, ext_proc, rate limit service) are not called"

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
                # Read by `egressproxy render-k8s` (the manifests), not by the running data plane.
                "spec.infrastructure",
                "spec.infrastructure.parametersRef.*",
            ),
            MappingProxyType({"spec.otlp.*": _NO_CAPTURE, "spec.extProc.*": _NO_CAPTURE}),
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
            ("spec.targetRef.*", *_TARGET_REFS, "spec.denyResponse.*"),
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
            (),
            MappingProxyType(
                {f"spec.{f}": _NO_LOGGING_POLICY for f in ("captureRequest", "captureResponse", "redactHeaders", "sinkRef")}
            ),
        ),
        "RegionAllowListPolicy": KindEnforcement(
            _TARGET_REFS,
            MappingProxyType({f"spec.{f}": _NO_REGIONS for f in ("allowedRegions", "unknownRegion", "geoIP.*")}),
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
            ),
            MappingProxyType(
                {
                    "spec.static.hosts.tls.*": "a per-host SNI is not applied",
                    **_BACKEND_LLM[1],
                    **_BACKEND_OPENAPI[1],
                    "spec.ai.priorityGroups.*": _AI_PRIORITY_GROUPS,
                    "spec.ai.multipool.*": _AI_PRIORITY_GROUPS,
                    "spec.static.appProtocol": "the application protocol is not applied (HTTP/1.1 or as negotiated)",
                    "spec.aws.*": "AWS Lambda backends are not implemented",
                    "spec.mcp.*": "MCP backends are not implemented",
                    "spec.dynamicForwardProxy.enableTls": "TLS origination for dynamic forwarding is not implemented",
                }
            ),
        ),
        "AIBackend": KindEnforcement(
            ("spec.provider", "spec.provider.type", *_AIBACKEND_PROVIDERS[0], *_AIBACKEND_LLM[0]),
            MappingProxyType(
                {
                    **_AIBACKEND_PROVIDERS[1],
                    **_AIBACKEND_LLM[1],
                    "spec.groups.*": _AI_PRIORITY_GROUPS,
                    "spec.priorityGroups.*": _AI_PRIORITY_GROUPS,
                    "spec.multipool.*": _AI_PRIORITY_GROUPS,
                }
            ),
        ),
        "TrafficPolicy": KindEnforcement(
            _TARGET_REFS,
            MappingProxyType(
                {
                    "spec.targetSelectors.*": _NO_SELECTORS,
                    **{f"spec.{f}": _LATER_KGATEWAY for f in LATER_TRAFFIC_POLICY_FIELDS},
                    "spec.cors.*": _NO_CORS,
                    "spec.csrf.*": "CSRF checks are not implemented",
                    "spec.timeouts.*": _NO_POLICY_TIMEOUTS,
                    "spec.timeout.*": _NO_POLICY_TIMEOUTS,
                    "spec.retry.*": "retries are not implemented",
                    "spec.retries.*": "retries are not implemented",
                    "spec.headerModifiers.*": _NO_POLICY_HEADERS,
                    "spec.requestHeaderModifier.*": _NO_POLICY_HEADERS,
                    "spec.responseHeaderModifier.*": _NO_POLICY_HEADERS,
                    "spec.transformation.*": "header and body transformations are not implemented",
                    "spec.autoHostRewrite": "host rewriting to the backend's hostname is not implemented",
                    "spec.buffer.*": "the request size limit is not applied",
                    "spec.rbac.*": "CEL authorization (rbac) is not implemented",
                    "spec.basicAuth.*": (
                        "request Basic authentication is not implemented (proxy authentication is "
                        "HTTPListenerPolicy basicAuth)"
                    ),
                    "spec.ai.*": "AI prompt guards, enrichment, field defaults and route types are not implemented",
                    **{f"spec.{f}.*": _NO_EXT for f in ("extAuth", "extProc", "rateLimit")},
                }
            ),
        ),
        "HTTPListenerPolicy": KindEnforcement(
            (*_TARGET_REFS, "spec.basicAuth.*"),
            MappingProxyType(
                {
                    "spec.targetSelectors.*": _NO_SELECTORS,
                    "spec.accessLogging": "access logs are not written",
                    "spec.accessLog.*": "access logs are not written",
                    "spec.tracing.*": "tracing is not implemented",
                    "spec.buffer.*": "the request buffer limit is not applied",
                    "spec.celValidation.*": "CEL validation is not implemented",
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
            (),
            MappingProxyType(
                {
                    # No extension of any type is called by this build, so even a bare `type` is not in force.
                    "spec.type": _NO_EXT,
                    **{f"spec.{f}.*": _NO_EXT for f in ("extAuth", "extProc", "rateLimit", "jwt", "oauth2")},
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


def unsupported_fields(kind: str, raw_spec: Any) -> tuple[str, ...]:
    """The field paths an object sets that this build does not enforce (the outermost of nested ones)."""
    out: list[str] = []
    for path in set_paths(kind, raw_spec) if kind in ENFORCEMENT else ():
        if decision(kind, path) is not Enforcement.UNSUPPORTED:
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
