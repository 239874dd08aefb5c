"""clrk.apoxy.dev/v1alpha1: EgressGateway and the companion kinds (EgressL4Route and the egress policies)."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from egressproxy.config.loader import load_text
from egressproxy.config.problems import ObjectRef
from tests.unit.test_compiler import compile_yaml, conditions


def spec_of(text: str) -> dict[str, Any]:
    result = load_text(textwrap.dedent(text), "t.yaml")
    assert [str(p) for p in result.problems] == []
    assert len(result.resources) == 1
    return result.resources[0].spec


def problems_of(text: str) -> list[str]:
    return [str(p) for p in load_text(textwrap.dedent(text), "t.yaml").problems]


def head(kind: str) -> str:
    return f"apiVersion: clrk.apoxy.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: x, namespace: ns}}\nspec:\n"


# --- EgressGateway ------------------------------------------------------------------------------------------

EGRESS_GATEWAY_EVERY_FIELD = """\
  defaultPolicy: allow-all
  listeners:
  - name: https
    protocol: HTTPS
    port: 443
    tls:
      mode: Terminate
      caCertRef: {name: egress-ca, namespace: ns, group: "", kind: Secret}
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchLabels: {egress: allowed}
          matchExpressions: [{key: team, operator: In, values: [a, b]}]
      kinds: [{group: gateway.networking.k8s.io, kind: HTTPRoute}]
  - {name: tls, protocol: TLS, tls: {mode: Passthrough}}
  - {name: http, protocol: HTTP, port: 80}
  - {name: tcp, protocol: TCP}
  - {name: dns, protocol: UDP, port: 53}
  dns: {lookupFamily: V4Only}
  otlp:
    endpoint: https://otel.example.com
    headers: {authorization: Bearer REPLACE-ME}
    captureBody:
      maxBytes: 1024
      includeContentTypes: [application/json]
  requestTimeout: 1m30s
  upstreamTLS:
    additionalTrustBundleSecretRef: {name: private-cas}
    hostAliases:
    - ip: 127.0.0.1
      hostnames: [api.openai.com, api.anthropic.com]
  ssrfGuard:
    allowCIDRs: [10.20.0.0/16]
    denyCIDRs: [192.0.2.0/24, "2001:db8::/32"]
  parentRef: {name: parent-proxy}
"""


def test_egress_gateway_with_every_field() -> None:
    spec = spec_of(head("EgressGateway") + EGRESS_GATEWAY_EVERY_FIELD)
    assert spec["defaultPolicy"] == "allow-all"
    https = spec["listeners"][0]
    assert https["tls"] == {"mode": "Terminate", "caCertRef": {"name": "egress-ca", "namespace": "ns", "group": "", "kind": "Secret"}}
    assert https["allowedRoutes"]["namespaces"]["selector"]["matchExpressions"][0]["values"] == ["a", "b"]
    assert [listener["protocol"] for listener in spec["listeners"]] == ["HTTPS", "TLS", "HTTP", "TCP", "UDP"]
    assert spec["dns"] == {"lookupFamily": "V4Only"}
    assert spec["otlp"]["captureBody"] == {"maxBytes": 1024, "includeContentTypes": ["application/json"]}
    assert spec["requestTimeout"] == 90.0
    assert spec["upstreamTLS"]["hostAliases"][0]["hostnames"] == ["api.openai.com", "api.anthropic.com"]
    assert spec["ssrfGuard"]["denyCIDRs"] == ["192.0.2.0/24", "2001:db8::/32"]
    assert spec["parentRef"] == {"name": "parent-proxy"}


def test_egress_gateway_defaults() -> None:
    spec = spec_of(head("EgressGateway") + "  listeners:\n  - {name: tls, protocol: TLS, tls: {}}\n")
    assert spec["defaultPolicy"] == "deny-all"
    assert spec["requestTimeout"] == 300.0
    assert spec["dns"] == {"lookupFamily": "V4Preferred"}
    assert spec["otlp"] == {
        "captureBody": {
            "maxBytes": 65536,
            "includeContentTypes": ["application/json", "application/x-ndjson", "text/event-stream"],
        }
    }
    assert spec["listeners"][0]["tls"] == {"mode": "Passthrough"}


def test_egress_gateway_explicit_nulls_read_as_unset_and_take_defaults() -> None:
    spec = spec_of(head("EgressGateway") + "  requestTimeout: ~\n  dns: null\n  listeners: [{name: h, protocol: HTTP}]\n")
    assert spec["requestTimeout"] == 300.0
    assert spec["dns"] == {"lookupFamily": "V4Preferred"}


# --- EgressL4Route ------------------------------------------------------------------------------------------


def test_egress_l4_route_with_every_field() -> None:
    spec = spec_of(
        head("EgressL4Route")
        + """\
  parentRefs: [{name: egress, sectionName: tcp}]
  rules:
  - matches:
    - destinationCIDRs: [10.0.0.0/8, "fd00::/8", 192.0.2.7/32]
      destinationHostnames: [db.example.com, "*.cache.example.com"]
      ports: [{port: 5432}, {startPort: 6379, endPort: 6380}]
      protocol: TCP
      sourceAgents:
        matchLabels: {app: worker}
        matchExpressions: [{key: tier, operator: Exists}]
    filters:
    - type: ExtensionRef
      extensionRef: {group: clrk.apoxy.dev, kind: RateLimitPolicy, name: per-agent}
    - type: ExtensionRef
      extensionRef: {kind: LoggingPolicy, name: audit}
    backendRefs: [{name: pgbouncer, port: 6432}]
  - matches: [{protocol: UDP, ports: [{port: 123}]}]
"""
    )
    first, second = spec["rules"]
    assert spec["parentRefs"] == [{"name": "egress", "sectionName": "tcp", "kind": "EgressGateway"}]
    assert first["matches"][0]["ports"] == [{"port": 5432}, {"startPort": 6379, "endPort": 6380}]
    assert first["matches"][0]["destinationHostnames"] == ["db.example.com", "*.cache.example.com"]
    assert first["filters"][1]["extensionRef"] == {"group": "clrk.apoxy.dev", "kind": "LoggingPolicy", "name": "audit"}
    assert first["backendRefs"] == [{"name": "pgbouncer", "port": 6432}]
    assert "backendRefs" not in second  # empty: the original destination


L4_HEAD = head("EgressL4Route") + "  parentRefs: [{name: egress}]\n  rules:\n  - matches:\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "    - ports: [{port: 80, startPort: 1, endPort: 2}]\n",
            "t.yaml:8: EgressL4Route/ns/x: spec.rules[0].matches[0].ports[0].port: set either port or startPort and endPort, not both",
        ),
        (
            "    - ports: [{startPort: 10}]\n",
            "t.yaml:8: EgressL4Route/ns/x: spec.rules[0].matches[0].ports[0].endPort: startPort and endPort must be set together",
        ),
        (
            "    - ports: [{startPort: 10, endPort: 9}]\n",
            "t.yaml:8: EgressL4Route/ns/x: spec.rules[0].matches[0].ports[0].endPort: must not be less than startPort (10)",
        ),
        (
            "    - ports: [{}]\n",
            "t.yaml:8: EgressL4Route/ns/x: spec.rules[0].matches[0].ports[0].port: set port, or startPort and endPort",
        ),
        (
            "    - destinationCIDRs: [10.0.0.0/33]\n",
            "t.yaml:8: EgressL4Route/ns/x: spec.rules[0].matches[0].destinationCIDRs[0]: invalid CIDR '10.0.0.0/33'",
        ),
        (
            "    - protocol: SCTP\n",
            "t.yaml:8: EgressL4Route/ns/x: spec.rules[0].matches[0].protocol: unsupported value 'SCTP': must be one of TCP, UDP",
        ),
        (
            "    - {}\n    filters: [{type: ExtensionRef}]\n",
            "t.yaml:9: EgressL4Route/ns/x: spec.rules[0].filters[0].extensionRef: extensionRef is required when type is ExtensionRef",
        ),
        (
            "    - {}\n    filters: [{type: ExtensionRef, extensionRef: {kind: EgressDenyPolicy, name: d}}]\n",
            "t.yaml:9: EgressL4Route/ns/x: spec.rules[0].filters[0].extensionRef.kind: unsupported value 'EgressDenyPolicy': "
            "must be one of RateLimitPolicy, LoggingPolicy",
        ),
    ],
)
def test_egress_l4_route_problems(body: str, expected: str) -> None:
    assert "\n".join(problems_of(L4_HEAD + body)) == expected


def test_egress_l4_route_needs_parent_refs_and_rules() -> None:
    assert problems_of(head("EgressL4Route") + "  {}\n") == [
        "t.yaml:5: EgressL4Route/ns/x: spec.parentRefs: required field is missing",
        "t.yaml:5: EgressL4Route/ns/x: spec.rules: required field is missing",
    ]


# --- CredentialInjectionPolicy ------------------------------------------------------------------------------


def test_credential_injection_policy_with_every_field() -> None:
    spec = spec_of(
        head("CredentialInjectionPolicy")
        + """\
  parentRefs: [{name: egress}]
  targetRefs:
  - {group: gateway.kgateway.dev, kind: Backend, name: openai}
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: openai-route, sectionName: chat}
  secretRef: {name: openai-key, namespace: ns, group: "", kind: Secret}
  secretKey: api-key
  target: Header
  headerName: Authorization
  valuePrefix: "Bearer "
"""
    )
    assert spec["parentRefs"] == [{"name": "egress", "kind": "EgressGateway"}]
    assert spec["targetRefs"][1]["sectionName"] == "chat"
    assert spec["secretKey"] == "api-key"
    assert spec["headerName"] == "Authorization"
    assert spec["valuePrefix"] == "Bearer "


def test_credential_injection_policy_defaults_and_the_other_targets() -> None:
    query = spec_of(
        head("CredentialInjectionPolicy")
        + "  targetRefs: [{kind: Backend, name: gemini}]\n  secretRef: {name: k}\n  target: QueryParam\n  queryParamName: key\n"
    )
    assert query["secretKey"] == "token"
    provider = spec_of(
        head("CredentialInjectionPolicy")
        + "  targetRefs: [{kind: Backend, name: bedrock}]\n  secretRef: {name: aws}\n  target: ProviderAuth\n"
        "  providerAuth: {type: AWSv4, region: eu-west-1, service: bedrock}\n"
    )
    assert provider["providerAuth"] == {"type": "AWSv4", "region": "eu-west-1", "service": "bedrock"}
    gcp = spec_of(
        head("CredentialInjectionPolicy")
        + "  targetRefs: [{kind: Backend, name: vertex}]\n  secretRef: {name: sa}\n  target: ProviderAuth\n"
        "  providerAuth: {type: GCPServiceAccount}\n"
    )
    assert gcp["providerAuth"] == {"type": "GCPServiceAccount"}


CIP_HEAD = head("CredentialInjectionPolicy") + "  secretRef: {name: k}\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "  target: Header\n  headerName: x-api-key\n",
            "t.yaml:5: CredentialInjectionPolicy/ns/x: spec.parentRefs: required field is missing (set parentRefs or targetRefs)",
        ),
        (
            "  targetRefs: [{kind: Backend, name: b}]\n  target: Header\n",
            "t.yaml:5: CredentialInjectionPolicy/ns/x: spec.headerName: headerName is required when target is Header",
        ),
        (
            "  targetRefs: [{kind: Backend, name: b}]\n  target: QueryParam\n  queryParamName: key\n  headerName: x\n",
            "t.yaml:9: CredentialInjectionPolicy/ns/x: spec.headerName: headerName is only valid when target is Header",
        ),
        (
            "  targetRefs: [{kind: Backend, name: b}]\n  target: Cookie\n",
            "t.yaml:7: CredentialInjectionPolicy/ns/x: spec.target: unsupported value 'Cookie': "
            "must be one of Header, QueryParam, ProviderAuth",
        ),
        (
            "  targetRefs: [{kind: Backend, name: b}]\n  target: ProviderAuth\n  providerAuth: {type: AzureAD}\n",
            "t.yaml:8: CredentialInjectionPolicy/ns/x: spec.providerAuth.type: unsupported value 'AzureAD': "
            "must be one of AWSv4, GCPServiceAccount",
        ),
        (
            "  targetRefs: [{kind: Backend, name: b}]\n  headerName: x\n",
            "t.yaml:5: CredentialInjectionPolicy/ns/x: spec.target: required field is missing",
        ),
    ],
)
def test_credential_injection_policy_problems(body: str, expected: str) -> None:
    assert "\n".join(problems_of(CIP_HEAD + body)) == expected


# --- RateLimitPolicy, LoggingPolicy, EgressDenyPolicy -------------------------------------------------------


def test_rate_limit_policy_with_every_field_and_its_default_scope() -> None:
    spec = spec_of(
        head("RateLimitPolicy")
        + "  requests: 100\n  window: 1m\n  scope: PerRoute\n  targetRefs: [{group: gateway.kgateway.dev, kind: Backend, name: openai}]\n"
    )
    assert spec == {
        "requests": 100,
        "window": 60.0,
        "scope": "PerRoute",
        "targetRefs": [{"group": "gateway.kgateway.dev", "kind": "Backend", "name": "openai"}],
    }
    # No schema default: an unset scope stays unset, so a less specific policy can supply it in a merge.
    assert "scope" not in spec_of(head("RateLimitPolicy") + "  requests: 5\n  window: 1s\n")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("  requests: 0\n  window: 1m\n", "t.yaml:5: RateLimitPolicy/ns/x: spec.requests: must be at least 1, got 0"),
        ("  requests: 10\n  window: 0s\n", "t.yaml:6: RateLimitPolicy/ns/x: spec.window: must be longer than 0s"),
        (
            "  requests: 10\n  window: 1 minute\n",
            "t.yaml:6: RateLimitPolicy/ns/x: spec.window: unknown unit ' minute' in duration '1 minute' (use ns, us, ms, s, m or h)",
        ),
        (
            "  requests: 10\n  window: 1m\n  scope: PerTenant\n",
            "t.yaml:7: RateLimitPolicy/ns/x: spec.scope: unsupported value 'PerTenant': must be one of PerAgent, PerExecution, PerRoute",
        ),
        ("  requests: 10\n", "t.yaml:5: RateLimitPolicy/ns/x: spec.window: required field is missing"),
    ],
)
def test_rate_limit_policy_problems(body: str, expected: str) -> None:
    assert "\n".join(problems_of(head("RateLimitPolicy") + body)) == expected


def test_logging_policy_with_every_field_and_defaults() -> None:
    spec = spec_of(
        head("LoggingPolicy")
        + "  captureRequest: true\n  captureResponse: true\n  redactHeaders: [authorization, x-api-key]\n  sinkRef: otlp\n"
    )
    assert spec == {
        "captureRequest": True,
        "captureResponse": True,
        "redactHeaders": ["authorization", "x-api-key"],
        "sinkRef": "otlp",
    }
    assert spec_of(head("LoggingPolicy") + "  {}\n") == {"captureRequest": False, "captureResponse": False}


def test_egress_deny_policy_with_every_field() -> None:
    spec = spec_of(
        head("EgressDenyPolicy")
        + """\
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: uploads}
  targetRefs: [{group: clrk.apoxy.dev, kind: EgressL4Route, name: smtp, sectionName: r}]
  denyResponse: {statusCode: 451, message: blocked by policy}
"""
    )
    assert spec["targetRef"] == {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "uploads"}
    assert spec["targetRefs"][0]["kind"] == "EgressL4Route"
    assert spec["denyResponse"] == {"statusCode": 451, "message": "blocked by policy"}


def test_egress_deny_policy_status_defaults_to_403() -> None:
    bare = spec_of(head("EgressDenyPolicy") + "  targetRef: {kind: HTTPRoute, name: r}\n")
    assert bare["denyResponse"] == {"statusCode": 403}
    with_message = spec_of(head("EgressDenyPolicy") + "  targetRef: {kind: HTTPRoute, name: r}\n  denyResponse: {message: no}\n")
    assert with_message["denyResponse"] == {"statusCode": 403, "message": "no"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "  denyResponse: {statusCode: 403}\n",
            "t.yaml:5: EgressDenyPolicy/ns/x: spec.targetRef: required field is missing (set targetRef or targetRefs)",
        ),
        (
            "  targetRef: {name: r}\n",
            "t.yaml:5: EgressDenyPolicy/ns/x: spec.targetRef.kind: required field is missing",
        ),
        (
            "  targetRef: {kind: HTTPRoute, name: r}\n  denyResponse: {statusCode: 200}\n",
            "t.yaml:6: EgressDenyPolicy/ns/x: spec.denyResponse.statusCode: must be at least 400, got 200",
        ),
    ],
)
def test_egress_deny_policy_problems(body: str, expected: str) -> None:
    assert "\n".join(problems_of(head("EgressDenyPolicy") + body)) == expected


# --- Apoxy clrk's own examples (github:apoxy-dev/clrk `_examples/*/manifests`), rewritten here ----------------

# _examples/echo-bot/manifests/egressgateway.yaml: a TLS Terminate listener without caCertRef, the ext_proc
# capture switch, an OTLP endpoint.
CLRK_ECHO_BOT_GATEWAY = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: echo-bot}
spec:
  defaultPolicy: allow-all
  listeners:
  - name: egress
    protocol: TLS
    tls: {mode: Terminate}
  extProc:
    enabled: true
    captureBody: {maxBytes: 65536}
  otlp: {endpoint: "http://otel-collector.observability.svc:4318"}
"""

# _examples/multi-listener-egress/manifests/egressgateway.yaml: a catch-all MITM listener and a TCP one on a port;
# `otlp` with captureBody and no endpoint.
CLRK_MULTI_LISTENER_GATEWAY = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: multi-listener-egress}
spec:
  defaultPolicy: allow-all
  listeners:
  - {name: egress-mitm, protocol: TLS, tls: {mode: Terminate}}
  - {name: egress-tcp, protocol: TCP, port: 30099}
  otlp:
    captureBody: {maxBytes: 65536}
"""

# _examples/echo-bot/manifests/credentialinjectionpolicy.yaml: attached to an AIProviderRoute (a kind of clrk's
# that this gateway does not model), the key read from `secretKey`, sent in the provider's header.
CLRK_CREDENTIAL_POLICY = """\
---
apiVersion: v1
kind: Secret
metadata: {name: anthropic-credentials}
stringData: {api-key: sk-ant-dummy}
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {name: anthropic}
spec:
  parentRefs: [{group: clrk.apoxy.dev, kind: AIProviderRoute, name: anthropic}]
  secretRef: {name: anthropic-credentials}
  secretKey: api-key
  target: Header
  headerName: x-api-key
"""


@pytest.mark.parametrize("gateway", [CLRK_ECHO_BOT_GATEWAY, CLRK_MULTI_LISTENER_GATEWAY], ids=["echo-bot", "multi-listener"])
def test_clrk_example_gateways_validate(gateway: str) -> None:
    assert problems_of(gateway) == []


def test_clrk_credential_policy_on_an_ai_provider_route_is_valid_and_applies_nowhere() -> None:
    result = compile_yaml(CLRK_ECHO_BOT_GATEWAY + CLRK_CREDENTIAL_POLICY, with_ca=False)
    assert [str(p) for p in result.problems] == []
    ref = ObjectRef("CredentialInjectionPolicy", "default", "anthropic")
    assert conditions(result, ref)["Accepted"] == ("False", "InvalidKind")


def test_a_deny_policy_on_a_kind_we_do_not_model_is_still_an_error() -> None:
    """Inert, an EgressDenyPolicy would let through what it was written to stop: it stays a problem."""
    deny = """\
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressDenyPolicy
metadata: {name: no-anthropic}
spec:
  targetRefs: [{group: clrk.apoxy.dev, kind: AIProviderRoute, name: anthropic}]
"""
    [problem] = compile_yaml(CLRK_ECHO_BOT_GATEWAY + deny, with_ca=False).problems
    assert "cannot target a AIProviderRoute" in str(problem)
