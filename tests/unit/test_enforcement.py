"""Honest status: every field the schemas accept has an enforcement decision, and an object that sets a field
this build does not enforce is `Programmed=False` / `Unsupported`, naming the field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from egressproxy.compiler import CompileResult, compile_config
from egressproxy.compiler.enforcement import ENFORCEMENT, Enforcement, decision, unsupported_fields
from egressproxy.compiler.enforcement_doc import render, replace_in
from egressproxy.compiler.field_paths import kind_paths, set_paths
from egressproxy.config.kinds import KINDS
from egressproxy.config.loader import load_text
from egressproxy.config.problems import ObjectRef

GATEWAY = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: gw}
spec:
  listeners:
  - {name: http, protocol: HTTP}
"""

ROUTE = """\
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  hostnames: [example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-a, value: b}]}
"""


def compile_text(text: str) -> CompileResult:
    loaded = load_text(textwrap.dedent(text), "cfg.yaml")
    assert [str(p) for p in loaded.problems] == []
    result = compile_config(loaded.resources)
    assert [str(p) for p in result.problems] == []
    return result


def programmed(result: CompileResult, ref: ObjectRef) -> tuple[str, str, str]:
    (condition,) = [c for c in result.statuses[ref] if c.type == "Programmed"]
    return condition.status, condition.reason, condition.message


# --- the table covers the schemas ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_field_the_schema_accepts_has_a_decision(kind: str) -> None:
    """A field added to a schema without deciding whether this build enforces it fails here."""
    undecided = [path for path in kind_paths(KINDS[kind]) if decision(kind, path) is None]
    assert undecided == [], f"{kind}: add these paths to egressproxy/compiler/enforcement.py"


@pytest.mark.parametrize("kind", sorted(ENFORCEMENT))
def test_every_decision_names_a_field_the_schema_accepts(kind: str) -> None:
    """A renamed or removed field leaves no stale entry behind."""
    assert kind in KINDS
    accepted = set(kind_paths(KINDS[kind]))
    table = ENFORCEMENT[kind]
    stale = [e for e in (*table.enforced, *table.unsupported) if e.removesuffix(".*") not in accepted]
    assert stale == []


def test_a_field_without_a_decision_is_reported_undecided() -> None:
    """The coverage test above can fail: a path nobody decided has no decision (not silently enforced)."""
    assert decision("HTTPRoute", "spec.rules.somethingNew") is None
    assert decision("EgressGateway", "spec.newBlock") is None
    assert decision("NoSuchKind", "spec.x") is None


def test_a_subtree_entry_decides_everything_below_it() -> None:
    assert decision("EgressL4Route", "spec.rules.backendRefs") is Enforcement.UNSUPPORTED
    assert decision("EgressL4Route", "spec.rules.backendRefs.name") is Enforcement.UNSUPPORTED
    assert decision("HTTPRoute", "spec.parentRefs.sectionName") is Enforcement.ENFORCED
    assert decision("HTTPRoute", "spec.rules.filters.cors.maxAge") is Enforcement.UNSUPPORTED


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("LoggingPolicy", "spec.sinkRef"),
        ("TrafficPolicy", "spec.extAuth.withRequestBody.maxRequestBytes"),
        ("TrafficPolicy", "spec.buffer.maxRequestSize"),
        ("TrafficPolicy", "spec.ai.promptGuard.request.webhook.host.host"),
        ("TrafficPolicy", "spec.ai.promptGuard.request.moderation.openAIModeration.model"),
        ("TrafficPolicy", "spec.ai.routeType"),
        ("GatewayExtension", "spec.extAuth.httpService"),
        ("GatewayExtension", "spec.extAuth.withRequestBody.maxRequestBytes"),
        ("GatewayExtension", "spec.extProc.grpcService.backendRef.name"),
        ("HTTPListenerPolicy", "spec.accessLog.grpcService.logName"),
        ("Backend", "spec.ai.llm.openai.authHeaderOverride.headerName"),
        ("Backend", "spec.ai.llm.vertexAi.model"),
        ("Backend", "spec.ai.llm.gemini.apiVersion"),
        ("Backend", "spec.ai.priorityGroups.providers.openai.authHeaderOverride.prefix"),
        ("Backend", "spec.outlierDetection.successRateStdevFactor"),
        ("TrafficPolicy", "spec.timeouts.streamIdle"),
        ("HTTPRoute", "spec.rules.filters.requestMirror"),
    ],
)
def test_what_the_data_plane_does_not_do_is_unsupported(kind: str, path: str) -> None:
    assert decision(kind, path) is Enforcement.UNSUPPORTED


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("EgressGateway", "spec.listeners.tls.caCertRef.name"),
        ("EgressGateway", "spec.ssrfGuard.denyCIDRs"),
        ("EgressGateway", "spec.upstreamTLS.hostAliases.hostnames"),
        ("HTTPRoute", "spec.rules.matches.headers.value"),
        ("HTTPRoute", "spec.rules.filters.urlRewrite.path.replacePrefixMatch"),
        ("DNSPolicy", "spec.reverseLookup.enforce"),
        ("BackendTLSPolicy", "spec.validation.spkiPins"),
        ("HTTPListenerPolicy", "spec.basicAuth.credentialsSecretRef.name"),
        ("HTTPListenerPolicy", "spec.accessLog.fileSink.jsonFormat"),
        ("EgressDenyPolicy", "spec.denyResponse.statusCode"),
        ("EgressDenyPolicy", "spec.enforcementMode"),
        ("RegionAllowListPolicy", "spec.allowedRegions"),
        ("RegionAllowListPolicy", "spec.geoIP.databasePath"),
        ("RegionAllowListPolicy", "spec.enforcementMode"),
        ("TrafficPolicy", "spec.rbac.policy.matchExpressions"),
        ("TrafficPolicy", "spec.enforcementMode"),
        ("TrafficPolicy", "spec.extAuth.extensionRef.name"),
        ("TrafficPolicy", "spec.extAuth.disable"),
        ("TrafficPolicy", "spec.extAuth.enablement"),
        ("GatewayExtension", "spec.extAuth.grpcService.backendRef.name"),
        ("GatewayExtension", "spec.extAuth.failOpen"),
        ("GatewayExtension", "spec.extAuth.timeout"),
        ("HTTPListenerPolicy", "spec.celValidation.rules.expression"),
        ("HTTPListenerPolicy", "spec.buffer.maxRequestBytes"),
        ("Backend", "spec.parent.authSecretRef.name"),
        ("DirectResponse", "spec.body"),
        ("RateLimitPolicy", "spec.targetRefs.name"),
        ("RateLimitPolicy", "spec.requests"),
        ("RateLimitPolicy", "spec.tokens"),
        ("RateLimitPolicy", "spec.store.redis.address"),
        ("RateLimitPolicy", "spec.store.redis.passwordSecretRef.name"),
        ("RateLimitPolicy", "spec.failureMode"),
        ("RateLimitPolicy", "spec.enforcementMode"),
        ("TrafficPolicy", "spec.enforcementMode"),
        ("TrafficPolicy", "spec.ai.promptGuard.request.regex.builtins"),
        ("TrafficPolicy", "spec.ai.promptGuard.request.customResponse.message"),
        ("TrafficPolicy", "spec.ai.promptGuard.response.regex.matches.pattern"),
        ("TrafficPolicy", "spec.ai.promptEnrichment.prepend.content"),
        ("TrafficPolicy", "spec.ai.fieldDefaults.override"),
        ("TrafficPolicy", "spec.ai.models.denied"),
        ("CredentialInjectionPolicy", "spec.headerName"),
        ("CredentialInjectionPolicy", "spec.providerAuth.region"),
        ("CredentialInjectionPolicy", "spec.valuePrefix"),
        ("Backend", "spec.ai.llm.openai.authToken.secretRef.name"),
        ("Backend", "spec.ai.llm.openai.model"),
        ("Backend", "spec.ai.llm.anthropic.apiVersion"),
        ("Backend", "spec.ai.llm.azureOpenai.deploymentName"),
        ("Backend", "spec.ai.llm.bedrock.auth.secretRef.name"),
        ("AIBackend", "spec.provider.azure.apiVersion"),
        ("EgressGateway", "spec.otlp.endpoint"),
        ("EgressGateway", "spec.otlp.headers"),
        ("EgressGateway", "spec.otlp.captureBody.maxBytes"),
        ("EgressGateway", "spec.otlp.captureBody.includeContentTypes"),
        ("EgressGateway", "spec.extProc.enabled"),
        ("EgressGateway", "spec.extProc.captureBody.maxBytes"),
        ("LoggingPolicy", "spec.captureRequest"),
        ("LoggingPolicy", "spec.captureResponse"),
        ("LoggingPolicy", "spec.redactHeaders"),
        ("LoggingPolicy", "spec.targetRefs.name"),
        ("Backend", "spec.ai.priorityGroups.providers.name"),
        ("Backend", "spec.ai.priorityGroups.providers.openai.pathOverride.fullPath"),
        ("Backend", "spec.ai.multipool.priorities.pool.hostOverride.host"),
        ("AIBackend", "spec.priorityGroups.providers.anthropic.model"),
        ("AIBackend", "spec.groups.priority"),
        ("AIBackend", "spec.groups.backends.weight"),
        ("AIBackend", "spec.groups.backends.backendRef.name"),
        ("Backend", "spec.outlierDetection.consecutive5xx"),
        ("TrafficPolicy", "spec.retry.retryOn"),
        ("TrafficPolicy", "spec.retries.perTryTimeout"),
        ("TrafficPolicy", "spec.timeout.request"),
    ],
)
def test_what_the_data_plane_does_is_enforced(kind: str, path: str) -> None:
    assert decision(kind, path) is Enforcement.ENFORCED


# --- which fields an object sets -----------------------------------------------------------------------------


def test_set_paths_are_the_fields_as_written_not_the_defaults() -> None:
    """EgressGateway fills `spec.otlp.captureBody` in by default; only what the user wrote counts."""
    (gw,) = load_text(GATEWAY, "gw.yaml").resources
    assert "otlp" in gw.spec
    assert set_paths("EgressGateway", gw.raw["spec"]) == ("spec.listeners", "spec.listeners.name", "spec.listeners.protocol")
    assert unsupported_fields("EgressGateway", gw.raw["spec"]) == ()


def test_an_explicit_null_is_unset() -> None:
    assert unsupported_fields("EgressGateway", {"listeners": [], "otlp": None}) == ()


def test_only_the_outermost_unsupported_field_is_named() -> None:
    spec = {"rules": [{"sessionPersistence": {"sessionName": "a", "type": "Cookie"}, "timeouts": {"request": "1m"}}]}
    assert unsupported_fields("HTTPRoute", spec) == ("spec.rules.sessionPersistence",)


def test_unsupported_fields_inside_lists_are_named_once() -> None:
    spec = {
        "rules": [
            {"sessionPersistence": {"sessionName": "a"}, "filters": [{"type": "CORS", "cors": {"maxAge": 5}}]},
            {"sessionPersistence": {"sessionName": "b"}, "retry": {"attempts": 3}},
        ]
    }
    assert unsupported_fields("HTTPRoute", spec) == ("spec.rules.sessionPersistence", "spec.rules.filters.cors")


# --- statuses ------------------------------------------------------------------------------------------------


REGIONS = """\
---
apiVersion: policy.egressproxy.io/v1alpha1
kind: RegionAllowListPolicy
metadata: {name: eu}
spec:
  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: gw}]
  allowedRegions: [eu-west-1]
  enforcementMode: Report
"""


def test_a_region_allow_list_is_programmed() -> None:
    result = compile_text(GATEWAY + REGIONS)
    ref = ObjectRef("RegionAllowListPolicy", "default", "eu")
    assert programmed(result, ref)[:2] == ("True", "Programmed")
    assert result.ok and result.snapshot is not None
    assert dict(result.snapshot.unsupported) == {}


def test_a_policy_the_data_plane_does_not_enforce_is_not_reported_as_in_force() -> None:
    policy = """\
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: slow}
spec:
  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: gw}]
  csrf: {percentageEnabled: 100}
"""
    result = compile_text(GATEWAY + policy)
    ref = ObjectRef("TrafficPolicy", "default", "slow")
    assert programmed(result, ref) == (
        "False",
        "Unsupported",
        "spec.csrf is validated but not enforced by this build",
    )
    assert result.ok  # Unsupported is no problem: the configuration is still served
    assert result.snapshot is not None
    assert dict(result.snapshot.unsupported) == {ref: ("spec.csrf",)}


RATE_LIMIT = """\
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: budget}
spec:
  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: gw}]
  requests: 10
  tokens: 5000
  window: 1m
  store: {type: Local}
  failureMode: Deny
  enforcementMode: Report
"""


def test_a_rate_limit_with_every_field_is_programmed() -> None:
    result = compile_text(GATEWAY + RATE_LIMIT)
    assert programmed(result, ObjectRef("RateLimitPolicy", "default", "budget"))[:2] == ("True", "Programmed")
    assert result.snapshot is not None and dict(result.snapshot.unsupported) == {}


def test_a_rate_limit_on_a_connection_route_is_unsupported_there() -> None:
    """Rate limits count HTTP requests: attached to a TCP route, whose connections carry none, it says so."""
    tcp_route = """\
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db}
spec:
  parentRefs: [{name: gw, sectionName: tcp}]
  rules: [{}]
"""
    gateway = GATEWAY + "  - {name: tcp, protocol: TCP, port: 5432}\n"
    policy = RATE_LIMIT.replace(
        "{group: clrk.apoxy.dev, kind: EgressGateway, name: gw}", "{group: gateway.networking.k8s.io, kind: TCPRoute, name: db}"
    )
    result = compile_text(gateway + tcp_route + policy)
    assert programmed(result, ObjectRef("RateLimitPolicy", "default", "budget")) == (
        "False",
        "Unsupported",
        "attachment to TCPRoute/default/db is validated but not enforced by this build",
    )


def test_objects_with_only_enforced_fields_stay_programmed() -> None:
    result = compile_text(
        GATEWAY
        + ROUTE
        + """\
---
apiVersion: policy.egressproxy.io/v1alpha1
kind: DNSPolicy
metadata: {name: dns}
spec:
  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: gw}]
  minTTL: 5s
  reverseLookup: {enforce: true}
"""
    )
    for ref in (
        ObjectRef("EgressGateway", "default", "gw"),
        ObjectRef("HTTPRoute", "default", "r"),
        ObjectRef("DNSPolicy", "default", "dns"),
    ):
        assert programmed(result, ref) == ("True", "Programmed", "in the served snapshot")
    assert result.snapshot is not None and dict(result.snapshot.unsupported) == {}


def test_an_unsupported_field_on_a_route_beside_an_enforced_otlp_export() -> None:
    result = compile_text(
        GATEWAY
        + "  otlp: {endpoint: 'collector:4317'}\n"
        + ROUTE
        + "    sessionPersistence: {sessionName: s}\n"
    )
    assert programmed(result, ObjectRef("EgressGateway", "default", "gw")) == (
        "True", "Programmed", "in the served snapshot"
    )
    assert programmed(result, ObjectRef("HTTPRoute", "default", "r"))[1:] == (
        "Unsupported",
        "spec.rules.sessionPersistence is validated but not enforced by this build",
    )


def test_a_gateway_extension_reports_its_status() -> None:
    result = compile_text(
        GATEWAY
        + """\
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: GatewayExtension
metadata: {name: authz}
spec:
  type: ExtAuth
  extAuth: {grpcService: {backendRef: {name: opa, port: 9191}}}
"""
    )
    ref = ObjectRef("GatewayExtension", "default", "authz")
    assert [c.type for c in result.statuses[ref]] == ["Accepted", "Programmed"]
    assert programmed(result, ref)[:2] == ("True", "Programmed")


def test_an_ext_auth_extension_that_is_not_called_over_grpc_is_unsupported() -> None:
    result = compile_text(
        GATEWAY
        + """\
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: GatewayExtension
metadata: {name: authz}
spec:
  type: ExtAuth
  extAuth: {httpService: {backendRef: {name: opa, port: 8181}}}
"""
    )
    ref = ObjectRef("GatewayExtension", "default", "authz")
    assert programmed(result, ref)[1:] == ("Unsupported", "spec.extAuth.httpService is validated but not enforced by this build")


def test_a_configuration_with_problems_is_invalid_before_unsupported() -> None:
    loaded = load_text(
        GATEWAY
        + """\
---
apiVersion: policy.egressproxy.io/v1alpha1
kind: RegionAllowListPolicy
metadata: {name: budget}
spec:
  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: gw}]
  allowedRegions: [eu-west-1]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: nope}]}]
""",
        "cfg.yaml",
    )
    result = compile_config(loaded.resources)
    assert result.problems
    assert programmed(result, ObjectRef("RegionAllowListPolicy", "default", "budget"))[:2] == ("False", "Invalid")


# --- the documentation --------------------------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_configuration_doc_lists_what_this_build_does_not_enforce() -> None:
    """Regenerate with `python -m egressproxy.compiler.enforcement_doc docs/configuration.md`."""
    text = DOC.read_text()
    assert replace_in(text) == text
    assert "| LoggingPolicy | `spec.sinkRef` | named log sinks are not implemented" in render()
    assert "| RateLimitPolicy |" not in render()



def test_a_gateway_that_is_not_served_is_not_reported_unsupported() -> None:
    other = GATEWAY.replace("name: gw", "name: other") + "  otlp: {endpoint: 'collector:4317'}\n"
    loaded = load_text(GATEWAY + "---\n" + other, "cfg.yaml")
    result = compile_config(loaded.resources, gateway_name="default/gw")
    assert result.ok and result.snapshot is not None
    assert dict(result.snapshot.unsupported) == {}
    assert programmed(result, ObjectRef("EgressGateway", "default", "other"))[:2] == ("False", "NotSelected")
    served = compile_config(loaded.resources, gateway_name="default/other")
    assert served.snapshot is not None
    # Since capture landed the EgressGateway has no unsupported field left: `otlp` is enforced when served.
    assert dict(served.snapshot.unsupported) == {}


def test_fields_inside_maps_are_walked_too() -> None:
    """A tracing custom tag is an object under a free key: its fields are paths of their own."""
    paths = kind_paths(KINDS["HTTPListenerPolicy"])
    assert "spec.tracing.customTags.literal" in paths
    spec = {"tracing": {"customTags": {"team": {"literal": "a"}}}}
    assert set_paths("HTTPListenerPolicy", spec) == (
        "spec.tracing",
        "spec.tracing.customTags",
        "spec.tracing.customTags.literal",
    )


L4_ROUTE_TO = """\
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: t}}
spec:
  parentRefs: [{{name: gw, sectionName: tcp}}]
  rules: [{{backendRefs: [{{name: {backend}, port: 443}}]}}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: {backend}}}
spec:
  type: Static
  static: {{hosts: [{{host: proxy.internal, port: 3128}}]}}
"""


@pytest.mark.parametrize(
    ("backend_extra", "status"),
    [
        ("  parent: {}\n", ("True", "Programmed")),  # parent mode: the connection goes through the parent
        ("", ("False", "Unsupported")),  # any other Backend: the connection goes to the requested destination
    ],
)
def test_l4_backend_refs_are_enforced_only_for_parent_proxies(backend_extra: str, status: tuple[str, str]) -> None:
    gateway = GATEWAY + "  - {name: tcp, protocol: TCP}\n"
    result = compile_text(gateway + L4_ROUTE_TO.format(backend="up") + backend_extra)
    assert programmed(result, ObjectRef("TCPRoute", "default", "t"))[:2] == status


def test_experimental_gateway_api_fields_are_accepted_and_reported() -> None:
    """A route written with Gateway API's experimental ExternalAuth filter and useDefaultGateways validates and is
    served, and its status names both fields (DESIGN.md 4.2, "Configs people already have")."""
    result = compile_text(
        GATEWAY
        + ROUTE.replace("  hostnames:", "  useDefaultGateways: None\n  hostnames:")
        + "    - type: ExternalAuth\n"
        + "      externalAuth: {protocol: GRPC, backendRef: {name: authz, port: 9001}, grpc: {}}\n"
    )
    assert result.ok
    assert programmed(result, ObjectRef("HTTPRoute", "default", "r"))[1:] == (
        "Unsupported",
        "spec.useDefaultGateways, spec.rules.filters.externalAuth are validated but not enforced by this build",
    )


def _mixed_backend(anthropic: str, third: str = "") -> str:
    return f"""\
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: mixed}}
spec:
  type: AI
  ai:
    priorityGroups:
    - providers:
      - name: gpt
        openai: {{model: gpt-4o, authToken: {{kind: Inline, inline: k}}}}
    - providers:
      - name: claude
        anthropic: {{{anthropic}authToken: {{kind: Inline, inline: k}}}}{third}
"""


def test_a_backend_mixing_openai_and_anthropic_is_programmed_now_that_failover_translates() -> None:
    result = compile_text(GATEWAY + _mixed_backend("model: claude-x, "))
    assert programmed(result, ObjectRef("Backend", "default", "mixed"))[:2] == ("True", "Programmed")


@pytest.mark.parametrize(
    ("anthropic", "third", "says"),
    [
        ("", "", "mixing the OpenAI and Anthropic APIs, claude sets no model to translate to"),
        ("model: c, ", "\n    - providers:\n      - name: g\n        gemini: {model: g, authToken: {kind: Inline, inline: k}}",
         "mixing the anthropic and gemini and openai APIs: only OpenAI <-> Anthropic is translated"),
    ],
)
def test_a_mix_failover_cannot_translate_is_unsupported(anthropic: str, third: str, says: str) -> None:
    result = compile_text(GATEWAY + _mixed_backend(anthropic, third))
    status = programmed(result, ObjectRef("Backend", "default", "mixed"))
    assert status[:2] == ("False", "Unsupported") and says in status[2]
