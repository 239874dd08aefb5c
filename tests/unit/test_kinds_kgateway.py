"""gateway.kgateway.dev/v1alpha1 kinds, from the kgateway OpenAPI and the agentgateway API reference."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from egressproxy.config.loader import load_text


def spec_of(text: str) -> dict[str, Any]:
    result = load_text(textwrap.dedent(text), "t.yaml")
    assert [str(p) for p in result.problems] == []
    assert len(result.resources) == 1
    return result.resources[0].spec


def problems_of(text: str) -> list[str]:
    return [str(p) for p in load_text(textwrap.dedent(text), "t.yaml").problems]


HEAD = "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: x, namespace: ns}}\nspec:\n"


def head(kind: str) -> str:
    return HEAD.format(kind=kind)


# --- Backend ------------------------------------------------------------------------------------------------


def test_static_backend_with_parent_mode() -> None:
    spec = spec_of(
        head("Backend")
        + """\
  type: Static
  static:
    hosts:
    - host: parent-gateway.inference.svc
      port: 3128
      tls: {sni: parent-gateway.inference.svc}
    - {host: 10.0.0.7, port: 3128}
  parent:
    authSecretRef: {name: parent-credentials}
"""
    )
    assert spec["static"]["hosts"][0] == {
        "host": "parent-gateway.inference.svc",
        "port": 3128,
        "tls": {"sni": "parent-gateway.inference.svc"},
    }
    assert spec["parent"] == {"authSecretRef": {"name": "parent-credentials"}}


LLM_EVERY_PROVIDER_FIELD = """\
  type: AI
  ai:
    priorityGroups:
    - providers:
      - name: openai
        openai:
          authToken: {kind: SecretRef, secretRef: {name: openai-key}}
          model: gpt-4o-mini
          hostOverride: {host: llm.internal, port: 8000, scheme: http}
          pathOverride: {fullPath: /v1/chat/completions}
          authHeaderOverride: {prefix: "Bearer ", headerName: Authorization}
      - name: anthropic
        anthropic:
          authToken: {kind: Inline, inline: sk-ant-test-REPLACE-ME}
          model: claude-3-5-sonnet-latest
          apiVersion: "2023-06-01"
    - providers:
      - name: gemini
        gemini:
          authToken: {kind: Passthrough}
          model: gemini-2.5-flash-lite
          apiVersion: v1beta
      - name: bedrock
        bedrock:
          model: anthropic.claude-3-haiku-20240307-v1:0
          region: eu-west-1
          auth: {secretRef: {name: aws-credentials}}
      - name: azure
        azureOpenai:
          authToken: {kind: SecretRef, secretRef: {name: azure-key, namespace: ns}}
          endpoint: https://my-resource.openai.azure.com
          deploymentName: gpt-4o
          apiVersion: 2024-10-21
      - name: vertex
        vertexAi:
          authToken: {kind: SecretRef, secretRef: {name: gcp-token}}
          project: my-project
          location: europe-west4
          model: gemini-1.5-pro
          publisher: google
          apiVersion: v1
"""


def test_ai_backend_with_priority_groups_and_every_provider() -> None:
    spec = spec_of(head("Backend") + LLM_EVERY_PROVIDER_FIELD)
    first, second = spec["ai"]["priorityGroups"]
    openai = first["providers"][0]["openai"]
    assert openai["authToken"] == {"kind": "SecretRef", "secretRef": {"name": "openai-key"}}
    assert openai["hostOverride"] == {"host": "llm.internal", "port": 8000, "scheme": "http"}
    assert openai["pathOverride"] == {"fullPath": "/v1/chat/completions"}
    assert openai["authHeaderOverride"] == {"prefix": "Bearer ", "headerName": "Authorization"}
    assert first["providers"][1]["anthropic"]["apiVersion"] == "2023-06-01"
    assert first["providers"][1]["anthropic"]["authToken"] == {"kind": "Inline", "inline": "sk-ant-test-REPLACE-ME"}
    names = [p["name"] for p in second["providers"]]
    assert names == ["gemini", "bedrock", "azure", "vertex"]
    assert second["providers"][1]["bedrock"]["auth"] == {"type": "Secret", "secretRef": {"name": "aws-credentials"}}
    # An unquoted date-like apiVersion stays the string it was written as.
    assert second["providers"][2]["azureOpenai"]["apiVersion"] == "2024-10-21"
    assert second["providers"][3]["vertexAi"] == {
        "authToken": {"kind": "SecretRef", "secretRef": {"name": "gcp-token"}},
        "project": "my-project",
        "location": "europe-west4",
        "model": "gemini-1.5-pro",
        "publisher": "google",
        "apiVersion": "v1",
    }


def test_ai_backend_with_one_llm_and_the_default_scheme() -> None:
    spec = spec_of(
        head("Backend")
        + """\
  type: AI
  ai:
    llm:
      openai:
        authToken: {kind: SecretRef, secretRef: {name: openai-key}}
        model: gpt-4o
        hostOverride: {host: api.openai.com}
"""
    )
    assert spec["ai"]["llm"]["openai"]["hostOverride"] == {"host": "api.openai.com", "scheme": "https"}


def test_ai_backend_in_the_openapi_provider_form_infers_the_token_kind() -> None:
    spec = spec_of(
        head("Backend")
        + """\
  type: AI
  ai:
    provider:
      type: azure
      azure:
        endpoint: my-resource.openai.azure.com
        deploymentName: gpt-4o
        apiVersion: "2024-10-21"
        authToken: {secretRef: {name: azure-key, namespace: ns}}
"""
    )
    assert spec["ai"]["provider"]["azure"]["authToken"] == {
        "kind": "SecretRef",
        "secretRef": {"name": "azure-key", "namespace": "ns"},
    }


def test_aws_mcp_and_dynamic_forward_proxy_backends() -> None:
    aws = spec_of(
        head("Backend")
        + """\
  type: AWS
  aws:
    region: us-east-1
    lambdaFunctionName: summarise
    accountId: "123456789012"
    roleArn: arn:aws:iam::123456789012:role/egress-invoker
"""
    )
    assert aws["aws"]["lambdaFunctionName"] == "summarise"
    mcp = spec_of(
        head("Backend")
        + """\
  type: MCP
  mcp:
    targets:
    - name: in-cluster
      service: {name: mcp-server, namespace: tools, port: 8080}
    - name: remote
      static: {host: mcp.example.com, port: 443, path: /mcp}
"""
    )
    assert mcp["mcp"]["targets"][1]["static"] == {"host": "mcp.example.com", "port": 443, "path": "/mcp"}
    dfp = spec_of(head("Backend") + "  type: DynamicForwardProxy\n  dynamicForwardProxy: {enableTls: true}\n")
    assert dfp == {"type": "DynamicForwardProxy", "dynamicForwardProxy": {"enableTls": True}}
    assert spec_of(head("Backend") + "  type: DynamicForwardProxy\n") == {"type": "DynamicForwardProxy"}



def test_kgateway_aws_and_bedrock_regions_default_to_us_east_1() -> None:
    """kgateway's AwsBackend and BedrockConfig default `region` to us-east-1 (the seed required it)."""
    aws = spec_of(head("Backend") + "  type: AWS\n  aws:\n    lambda: {functionName: echo}\n")
    assert aws["aws"]["region"] == "us-east-1"
    assert aws["aws"]["lambda"] == {
        "functionName": "echo",
        "invocationMode": "Sync",
        "qualifier": "$LATEST",
        "payloadTransformMode": "Envoy",
    }
    bedrock = spec_of(head("Backend") + "  type: AI\n  ai:\n    llm:\n      bedrock: {model: m}\n")
    assert bedrock["ai"]["llm"]["bedrock"] == {"model": "m", "region": "us-east-1"}

@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "  type: Staic\n",
            "t.yaml:5: Backend/ns/x: spec.type: unsupported value 'Staic': must be one of Static, AI, AWS, MCP, DynamicForwardProxy",
        ),
        (
            "  type: AI\n",
            "t.yaml:5: Backend/ns/x: spec.ai: ai is required when type is AI",
        ),
        (
            "  type: AI\n  ai: {llm: {openai: {model: m}}}\n  static: {hosts: [{host: a.example.com, port: 1}]}\n",
            "t.yaml:7: Backend/ns/x: spec.static: static is only valid when type is Static",
        ),
        (
            "  type: AI\n  ai:\n    llm: {openai: {model: m}, anthropic: {model: m}}\n",
            "t.yaml:7: Backend/ns/x: spec.ai.llm.anthropic: set only one of openai, anthropic, gemini, bedrock, "
            "azureOpenai, azureopenai, vertexAi, vertexai, provider (found openai and anthropic)",
        ),
        (
            "  type: AI\n  ai:\n    llm: {}\n",
            "t.yaml:7: Backend/ns/x: spec.ai.llm: set one of openai, anthropic, gemini, bedrock, azureOpenai, azureopenai, vertexAi, vertexai, provider",
        ),
        (
            "  type: AI\n  ai:\n    llm: {openai: {model: m}}\n    priorityGroups: [{providers: [{name: a, openai: {}}]}]\n",
            "t.yaml:8: Backend/ns/x: spec.ai.priorityGroups: set only one of llm, priorityGroups, multipool, provider "
            "(found llm and priorityGroups)",
        ),
        (
            "  type: AI\n  ai:\n    priorityGroups:\n    - providers:\n      - {name: a, openai: {}}\n"
            "    - providers:\n      - {name: a, gemini: {}}\n",
            "t.yaml:11: Backend/ns/x: spec.ai.priorityGroups[1].providers[0].name: duplicate provider name 'a'",
        ),
        (
            "  type: AI\n  ai:\n    llm:\n      openai:\n        authToken: {kind: SecretRef}\n",
            "t.yaml:9: Backend/ns/x: spec.ai.llm.openai.authToken.secretRef: secretRef is required when kind is SecretRef",
        ),
        (
            "  type: AI\n  ai:\n    llm:\n      openai:\n        authToken: {kind: Passthrough, inline: k}\n",
            "t.yaml:9: Backend/ns/x: spec.ai.llm.openai.authToken.inline: inline is only valid when kind is Inline",
        ),
        (
            "  type: AI\n  ai:\n    llm:\n      openai:\n        authToken: {kind: Bearer}\n",
            "t.yaml:9: Backend/ns/x: spec.ai.llm.openai.authToken.kind: unsupported value 'Bearer': "
            "must be one of Inline, SecretRef, Passthrough",
        ),
        (
            "  type: AI\n  ai:\n    llm:\n      openai:\n        hostOverride: {host: llm.internal, scheme: ftp}\n",
            "t.yaml:9: Backend/ns/x: spec.ai.llm.openai.hostOverride.scheme: unsupported value 'ftp': must be one of https, http",
        ),
        (
            "  type: AI\n  ai:\n    llm:\n      openai:\n        hostOverride: {port: 80}\n",
            "t.yaml:9: Backend/ns/x: spec.ai.llm.openai.hostOverride.host: required field is missing",
        ),
        (
            "  type: AI\n  ai:\n    llm:\n      azureOpenai: {deploymentName: d}\n",
            "t.yaml:8: Backend/ns/x: spec.ai.llm.azureOpenai.endpoint: required field is missing",
        ),
        (
            "  type: AI\n  ai:\n    llm:\n      openai: {modle: gpt-4o}\n",
            "t.yaml:8: Backend/ns/x: spec.ai.llm.openai.modle: unknown field (did you mean 'model'?)",
        ),
        (
            "  type: Static\n  static:\n    hosts: [{host: 'bad host', port: 80}]\n",
            "t.yaml:7: Backend/ns/x: spec.static.hosts[0].host: invalid host 'bad host'",
        ),
        (
            "  type: AI\n  ai: {llm: {openai: {}}}\n  parent: {}\n",
            "t.yaml:7: Backend/ns/x: spec.parent: parent mode needs type Static, with the parent proxy at static.hosts[0]",
        ),
        (
            "  type: MCP\n  mcp:\n    targets:\n    - name: t\n",
            "t.yaml:8: Backend/ns/x: spec.mcp.targets[0]: set one of service, static, selector, selectors",
        ),
        (
            "  type: AI\n  ai:\n    llm:\n      host: a.example.com\n      openai: {hostOverride: {host: b.example.com}}\n",
            "t.yaml:8: Backend/ns/x: spec.ai.llm.host: set only one of host and a provider's hostOverride",
        ),
        (
            "  type: AI\n  ai:\n    llm:\n      hostOverride: {host: a.example.com}\n      host: b.example.com\n"
            "      openai: {}\n",
            "t.yaml:9: Backend/ns/x: spec.ai.llm.host: set only one of host and hostOverride",
        ),
        (
            "  type: AI\n  ai:\n    llm:\n      port: 8000\n      provider: {openai: {}}\n",
            "t.yaml:8: Backend/ns/x: spec.ai.llm.port: port is kgateway v2.1's spelling; beside provider (v2.0) use "
            "hostOverride",
        ),
        (
            "  type: AI\n  ai:\n    llm:\n      provider: {openai: {}, gemini: {}}\n",
            "t.yaml:8: Backend/ns/x: spec.ai.llm.provider.gemini: set only one of openai, anthropic, gemini, bedrock, "
            "azureOpenai, azureopenai, vertexAi, vertexai (found openai and gemini)",
        ),
        (
            "  type: AI\n  ai:\n    llm:\n      vertexai: {location: us-central1}\n",
            "t.yaml:8: Backend/ns/x: spec.ai.llm.vertexai: set one of project, projectId",
        ),
        (
            "  type: AI\n  ai:\n    llm:\n      path: {fullPath: /v1}\n      openai: {}\n",
            "t.yaml:8: Backend/ns/x: spec.ai.llm.path.fullPath: unknown field\n"
            "t.yaml:8: Backend/ns/x: spec.ai.llm.path.full: required field is missing",
        ),
        (
            "  type: AWS\n  aws:\n    lambda: {invocationMode: sync}\n",
            "t.yaml:7: Backend/ns/x: spec.aws.lambda.invocationMode: unsupported value 'sync': must be one of Sync, Async",
        ),
    ],
)
def test_backend_problems(body: str, expected: str) -> None:
    assert "\n".join(problems_of(head("Backend") + body)) == expected


# --- AIBackend ----------------------------------------------------------------------------------------------


def test_ai_backend_kind_with_provider_or_groups() -> None:
    provider = spec_of(
        head("AIBackend")
        + """\
  provider:
    type: openai
    openai:
      model: gpt-4o
      authToken: {secretRef: {name: openai-key}}
"""
    )
    assert provider["provider"]["openai"]["authToken"]["kind"] == "SecretRef"
    groups = spec_of(
        head("AIBackend")
        + """\
  groups:
  - priority: 0
    backends: [{backendRef: {name: openai}, weight: 1}]
  - priority: 1
    backends: [{backendRef: {name: anthropic, namespace: ns}}]
"""
    )
    assert groups["groups"][1] == {"priority": 1, "backends": [{"backendRef": {"name": "anthropic", "namespace": "ns"}}]}


def test_ai_backend_provider_without_type_needs_one_block() -> None:
    assert problems_of(head("AIBackend") + "  provider: {}\n") == [
        "t.yaml:5: AIBackend/ns/x: spec.provider: set one of openai, azure, gemini, mistral"
    ]
    assert spec_of(head("AIBackend") + "  provider: {gemini: {model: gemini-2.5-flash}}\n") == {
        "provider": {"gemini": {"model": "gemini-2.5-flash"}}
    }


def test_ai_backend_provider_type_must_agree_with_its_block() -> None:
    assert problems_of(head("AIBackend") + "  provider:\n    type: gemini\n    openai: {model: m}\n") == [
        "t.yaml:6: AIBackend/ns/x: spec.provider.gemini: gemini is required when type is gemini",
        "t.yaml:7: AIBackend/ns/x: spec.provider.openai: openai is only valid when type is openai",
    ]


# --- TrafficPolicy ------------------------------------------------------------------------------------------

TRAFFIC_POLICY_EVERY_FIELD = """\
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: llm-route}
  cors:
    allowOrigins:
    - {type: Exact, value: "https://app.example.com"}
    - {type: Regex, value: "https://.*\\\\.example\\\\.com"}
    - {value: "https://other.example.com"}
    allowMethods: [GET, POST]
    allowHeaders: [content-type]
    exposeHeaders: [x-request-id]
    maxAge: 10m
    allowCredentials: true
  extAuth: {extensionRef: {name: authz, namespace: ns}}
  extProc: {disable: true}
  rateLimit:
    extensionRef: {name: ratelimit}
    rateLimits:
    - actions: [{genericKey: {descriptorValue: per-route}}]
  timeout: {request: 5m, idle: 1m}
  retries:
    attempts: 3
    perTryTimeout: 20s
    backOff: {baseInterval: 100ms, maxInterval: 2s}
    retryOn: connect-failure,5xx
  requestHeaderModifier: {set: [{name: x-gateway, value: egress}]}
  responseHeaderModifier: {remove: [server]}
  rbac:
    policy:
      matchExpressions:
      - "has(request.headers['x-api-key'])"
      - "request.path.startsWith('/v1/')"
  ai:
    promptGuard:
      request:
        customResponse: {message: "request rejected", statusCode: 422}
        regex:
          action: REJECT
          matches: [{pattern: "(?i)password", name: password}]
          builtins: [CreditCard, Ssn, Email, PhoneNumber, CaSin]
      response:
        regex:
          action: MASK
          builtins: [CREDIT_CARD, EMAIL, PHONE_NUMBER, SSN]
    promptEnrichment:
      prepend: [{role: system, content: "Answer in English."}]
      append: [{role: user, content: "Be brief."}]
    fieldDefaults:
    - {path: temperature, value: 0.2}
    - {path: model, value: gpt-4o-mini, override: true}
"""


def test_traffic_policy_with_every_field() -> None:
    spec = spec_of(head("TrafficPolicy") + TRAFFIC_POLICY_EVERY_FIELD)
    assert spec["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "llm-route"}]
    assert spec["cors"]["allowOrigins"][2] == {"type": "Exact", "value": "https://other.example.com"}
    assert spec["cors"]["maxAge"] == 600.0
    assert spec["extAuth"] == {"extensionRef": {"name": "authz", "namespace": "ns"}}
    assert spec["extProc"] == {"disable": True}
    assert spec["rateLimit"]["rateLimits"] == [{"actions": [{"genericKey": {"descriptorValue": "per-route"}}]}]
    assert spec["timeout"] == {"request": 300.0, "idle": 60.0}
    assert spec["retries"] == {
        "attempts": 3,
        "perTryTimeout": 20.0,
        "backOff": {"baseInterval": 0.1, "maxInterval": 2.0},
        "retryOn": "connect-failure,5xx",
    }
    assert spec["rbac"]["policy"]["matchExpressions"][0] == "has(request.headers['x-api-key'])"
    guard = spec["ai"]["promptGuard"]
    assert guard["request"]["regex"]["matches"] == [{"pattern": "(?i)password", "name": "password"}]
    assert guard["response"]["regex"] == {"action": "MASK", "builtins": ["CREDIT_CARD", "EMAIL", "PHONE_NUMBER", "SSN"]}
    assert spec["ai"]["promptEnrichment"]["prepend"] == [{"role": "system", "content": "Answer in English."}]
    assert spec["ai"]["fieldDefaults"] == [
        {"path": "temperature", "value": 0.2, "override": False},
        {"path": "model", "value": "gpt-4o-mini", "override": True},
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "  targetRefs: [{kind: HTTPRoute, name: r}]\n  timeouts: {request: 10s, streamIdel: 1m}\n",
            "t.yaml:6: TrafficPolicy/ns/x: spec.timeouts.streamIdel: unknown field (did you mean 'streamIdle'?)",
        ),
        (
            "  targetRefs: [{kind: HTTPRoute, name: r}]\n  ai:\n    promptGuard:\n      request:\n        regex:\n"
            "          matches: [{pattern: '(unclosed'}]\n",
            "t.yaml:10: TrafficPolicy/ns/x: spec.ai.promptGuard.request.regex.matches[0].pattern: "
            "invalid regular expression '(unclosed': missing ), unterminated subpattern at position 0",
        ),
        (
            "  targetRefs: [{kind: HTTPRoute, name: r}]\n  ai:\n    promptEnrichment:\n"
            "      prepend: [{role: SYSTEM}]\n",
            "t.yaml:8: TrafficPolicy/ns/x: spec.ai.promptEnrichment.prepend[0].content: required field is missing",
        ),
        (
            "  targetRefs: [{kind: HTTPRoute, name: r}]\n  timeout: {request: 30}\n",
            "t.yaml:6: TrafficPolicy/ns/x: spec.timeout.request: expected a duration string such as '30s' or '1m30s', got integer",
        ),
        (
            "  targetRefs: [{kind: HTTPRoute, name: r}]\n  rbac: {policy: {matchExpressions: []}}\n",
            "t.yaml:6: TrafficPolicy/ns/x: spec.rbac.policy.matchExpressions: must have at least 1 item(s)",
        ),
    ],
)
def test_traffic_policy_problems(body: str, expected: str) -> None:
    assert "\n".join(problems_of(head("TrafficPolicy") + body)) == expected


# --- HTTPListenerPolicy -------------------------------------------------------------------------------------


def test_http_listener_policy_with_every_field() -> None:
    spec = spec_of(
        head("HTTPListenerPolicy")
        + """\
  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: egress}]
  accessLogging: {anything: [goes]}
  accessLog:
  - fileSink:
      path: /dev/stdout
      jsonFormat: {method: "%REQ(:METHOD)%", response_code: "%RESPONSE_CODE%"}
  - grpcService: {logName: egress, staticClusterName: als}
  - otel: {endpoint: "otel-collector:4317"}
  tracing:
    provider:
      otel: {grpcAddress: "otel-collector:4317", protocol: grpc}
    samplingRate: 25
    propagators: [W3C_TRACE_CONTEXT, B3, B3_SINGLE_HEADER]
    customTags:
      cluster: {literal: prod}
      pod: {environment: POD_NAME}
      tenant: {requestHeader: x-tenant}
  buffer: {maxRequestBytes: 2097152}
  celValidation:
    rules:
    - {expression: "request.method != 'DELETE'"}
    - {expression: "true", action: Allow}
  basicAuth:
    credentialsSecretRef: {name: proxy-users}
"""
    )
    assert spec["accessLogging"] == {"anything": ["goes"]}
    assert spec["accessLog"][0]["fileSink"]["jsonFormat"]["method"] == "%REQ(:METHOD)%"
    assert spec["accessLog"][2] == {"otel": {"endpoint": "otel-collector:4317", "protocol": "grpc"}}
    assert spec["tracing"]["samplingRate"] == 25.0
    assert spec["tracing"]["customTags"]["tenant"] == {"requestHeader": "x-tenant"}
    assert spec["buffer"] == {"maxRequestBytes": 2097152}
    assert spec["celValidation"]["rules"][0] == {"expression": "request.method != 'DELETE'", "action": "Deny"}
    assert spec["basicAuth"] == {"credentialsSecretRef": {"name": "proxy-users"}}


def test_http_listener_policy_sampling_rate_is_a_percentage() -> None:
    assert problems_of(
        head("HTTPListenerPolicy")
        + "  targetRefs: [{kind: EgressGateway, name: g}]\n  tracing:\n    provider: {otel: {grpcAddress: 'c:4317'}}\n"
        "    samplingRate: 150\n"
    ) == ["t.yaml:8: HTTPListenerPolicy/ns/x: spec.tracing.samplingRate: must be at most 100, got 150"]


# --- DirectResponse -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["status", "statusCode"])
def test_direct_response_accepts_both_spellings(field: str) -> None:
    spec = spec_of(head("DirectResponse") + f"  {field}: 418\n  body: I'm a teapot\n")
    assert spec == {field: 418, "body": "I'm a teapot"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("  body: nothing\n", "t.yaml:5: DirectResponse/ns/x: spec.status: required field is missing (set status or statusCode)"),
        ("  status: 200\n  statusCode: 201\n", "t.yaml:6: DirectResponse/ns/x: spec.statusCode: set only one of status and statusCode"),
        ("  status: 700\n", "t.yaml:5: DirectResponse/ns/x: spec.status: must be at most 599, got 700"),
        ("  statusCode: 199\n", "t.yaml:5: DirectResponse/ns/x: spec.statusCode: must be at least 200, got 199"),
    ],
)
def test_direct_response_problems(body: str, expected: str) -> None:
    assert "\n".join(problems_of(head("DirectResponse") + body)) == expected


# --- GatewayExtension ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("type_", "block"), [("ExtAuth", "extAuth"), ("ExtProc", "extProc"), ("RateLimit", "rateLimit")])
def test_gateway_extension_types(type_: str, block: str) -> None:
    spec = spec_of(
        head("GatewayExtension")
        + f"  type: {type_}\n  {block}:\n    grpcService:\n      backendRef: {{name: svc, namespace: ns, port: 9000}}\n"
    )
    assert spec[block] == {"grpcService": {"backendRef": {"name": "svc", "namespace": "ns", "port": 9000}}}


def test_gateway_extension_block_must_match_type() -> None:
    assert problems_of(
        head("GatewayExtension") + "  type: ExtAuth\n  extProc: {grpcService: {backendRef: {name: s}}}\n"
    ) == [
        "t.yaml:5: GatewayExtension/ns/x: spec.extAuth: extAuth is required when type is ExtAuth",
        "t.yaml:6: GatewayExtension/ns/x: spec.extProc: extProc is only valid when type is ExtProc",
    ]


# --- GatewayParameters --------------------------------------------------------------------------------------


def test_gateway_parameters_with_both_seeds_fields() -> None:
    spec = spec_of(
        head("GatewayParameters")
        + """\
  kube:
    agentgateway: {customConfigMapName: egress-config}
    deployment:
      replicas: 2
      container:
        resources:
          requests: {cpu: 100m, memory: 128Mi}
          limits: {cpu: 1, memory: 512Mi}
        securityContext: {runAsNonRoot: true, runAsUser: 10101}
    podTemplate:
      extraLabels: {app: egress}
      extraAnnotations: {prometheus.io/scrape: "true"}
      nodeSelector: {kubernetes.io/os: linux}
      tolerations: [{key: dedicated, operator: Equal, value: egress, effect: NoSchedule}]
      spec:
        affinity: {podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: []}}
        nodeSelector: {pool: egress}
        tolerations: [{operator: Exists}]
    envoyContainer:
      resources: {limits: {memory: 1Gi}}
      image: {registry: ghcr.io, repository: example/egressproxy, tag: "0.1.0"}
    service:
      type: ClusterIP
      extraAnnotations: {a: b}
"""
    )
    kube = spec["kube"]
    assert kube["deployment"]["container"]["resources"]["limits"] == {"cpu": 1, "memory": "512Mi"}
    assert kube["podTemplate"]["tolerations"][0]["effect"] == "NoSchedule"
    assert kube["podTemplate"]["spec"]["tolerations"] == [{"operator": "Exists"}]
    assert kube["envoyContainer"]["image"]["tag"] == "0.1.0"
    assert kube["service"]["type"] == "ClusterIP"


def test_gateway_parameters_service_type() -> None:
    """kgateway's enum includes ExternalName; anything else is rejected."""
    assert problems_of(head("GatewayParameters") + "  kube:\n    service: {type: ExternalName}\n") == []
    assert problems_of(head("GatewayParameters") + "  kube:\n    service: {type: Loadbalancer}\n") == [
        "t.yaml:6: GatewayParameters/ns/x: spec.kube.service.type: unsupported value 'Loadbalancer': "
        "must be one of ClusterIP, NodePort, LoadBalancer, ExternalName"
    ]


# --- kgateway's real shapes (DESIGN.md 4.2, "Configs people already have") --------------------------------
#
# Documents of our own, each modelled on an example or type of the kgateway.dev documentation
# (github:kgateway-dev/kgateway.dev at 85cd0fc8; `2.1.x` is content/docs/envoy/2.1.x, `assets` is
# assets/kgw-docs/pages). Every one must validate unchanged.

UPSTREAM_SHAPES = {
    # 2.1.x/resiliency/retry/retry.md
    "TrafficPolicy timeouts and retry": (
        "TrafficPolicy",
        """\
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: retry}]
  timeouts: {request: 20s, streamIdle: 30s}
  retry:
    attempts: 3
    perTryTimeout: 5s
    backoffBaseInterval: 1s
    retryOn: [5xx, unavailable, retriable-status-codes]
    statusCodes: [517]
""",
    ),
    # 2.1.x/reference/api.md HeaderModifiers, assets/traffic-management/.../kgateway-policies.md
    "TrafficPolicy headerModifiers": (
        "TrafficPolicy",
        """\
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]
  headerModifiers:
    request: {add: [{name: x-team, value: payments}], remove: [x-debug]}
    response: {set: [{name: cache-control, value: no-store}]}
""",
    ),
    # assets/security/ratelimit/local.md
    "TrafficPolicy rateLimit.local": (
        "TrafficPolicy",
        """\
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: http}]
  rateLimit:
    local:
      tokenBucket: {maxTokens: 1, tokensPerFill: 1, fillInterval: 100s}
""",
    ),
    # assets/security/ratelimit/global.md
    "TrafficPolicy rateLimit.global": (
        "TrafficPolicy",
        """\
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: http}]
  rateLimit:
    global:
      descriptors:
      - entries: [{type: RemoteAddress}]
      - entries:
        - {type: Generic, generic: {key: service, value: billing}}
        - {type: Header, header: X-User-ID}
        - {type: Path}
      extensionRef: {name: global-ratelimit}
""",
    ),
    # 2.1.x/reference/api.md RBAC
    "TrafficPolicy rbac.action": (
        "TrafficPolicy",
        """\
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]
  rbac:
    action: Deny
    policy: {matchExpressions: ["request.headers['x-blocked'] == 'true'"]}
""",
    ),
    # latest/migrate/examples/basic-auth.md and 2.2.x/reference/api.md BasicAuthPolicy
    "TrafficPolicy basicAuth": (
        "TrafficPolicy",
        """\
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]
  basicAuth:
    users: ["user:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="]
""",
    ),
    # 2.1.x/reference/api.md CSRFPolicy
    "TrafficPolicy csrf": (
        "TrafficPolicy",
        """\
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]
  csrf:
    percentageEnabled: 100
    additionalOrigins: [{exact: example.org}, {suffix: .example.com, ignoreCase: true}]
""",
    ),
    # 2.1.x/about/policies/global-attachment.md (targetSelectors and transformation)
    "TrafficPolicy transformation and targetSelectors": (
        "TrafficPolicy",
        """\
  targetSelectors:
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, matchLabels: {global-policy: transformation}}
  transformation:
    response:
      set: [{name: x-kgateway-response, value: "{{ request_header(\\"x-kgateway-request\\") }}"}]
    request:
      body: {parseAs: AsJson, value: "{{ body() }}"}
""",
    ),
    # 2.1.x/reference/api.md ExtAuthPolicy, PolicyDisable
    "TrafficPolicy extAuth.withRequestBody and disable as an object": (
        "TrafficPolicy",
        """\
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]
  extAuth:
    extensionRef: {name: basic-auth}
    withRequestBody: {maxRequestBytes: 8192, allowPartialMessage: true}
    contextExtensions: {team: payments}
  extProc:
    disable: {}
""",
    ),
    # 2.1.x/ai/about.md (routeType), 2.1.x/reference/api.md FieldDefault, upper-case roles of the
    # enrichment examples
    "TrafficPolicy ai.routeType, ai.defaults and upper-case roles": (
        "TrafficPolicy",
        """\
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: openai}]
  ai:
    routeType: CHAT_STREAMING
    defaults:
    - {field: temperature, value: "0.5"}
    - {field: model, value: gpt-4o, override: true}
    promptEnrichment:
      prepend: [{role: SYSTEM, content: Answer in French.}]
""",
    ),
    # 2.1.x/ai/prompt-guards.md
    "TrafficPolicy ai.promptGuard.request.moderation": (
        "TrafficPolicy",
        """\
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: openai}]
  ai:
    promptGuard:
      request:
        moderation:
          openAIModeration:
            model: omni-moderation-latest
            authToken: {kind: SecretRef, secretRef: {name: openai-secret}}
        customResponse: {message: Rejected due to inappropriate content}
      response:
        webhook: {host: {host: guard.default.svc, port: 8000}}
""",
    ),
    # 2.1.x/migrate/examples/cors.md (Gateway API HTTPCORSFilter inline)
    "TrafficPolicy cors with string origins and integer maxAge": (
        "TrafficPolicy",
        """\
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]
  cors:
    allowOrigins: ["https://example.com", "https://*.example.org"]
    allowMethods: [GET, POST]
    allowHeaders: [Origin, Authorization]
    maxAge: 86400
    allowCredentials: true
""",
    ),
    # An ExtensionRef-attached TrafficPolicy (2.1.x/about/policies): no targetRefs.
    "TrafficPolicy without targetRefs": ("TrafficPolicy", "  timeouts: {request: 10s}\n"),
    # 2.1.x/reference/api.md HTTPListenerPolicySpec, 2.1.x/traffic-management/health-checks/gateway.md
    "HTTPListenerPolicy connection settings": (
        "HTTPListenerPolicy",
        """\
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: http}]
  useRemoteAddress: true
  xffNumTrustedHops: 2
  serverHeaderTransformation: PassThrough
  streamIdleTimeout: 30s
  idleTimeout: 1h
  preserveExternalRequestId: true
  upgradeConfig: {enabledUpgrades: [websocket]}
  healthCheck: {path: /healthz}
""",
    ),
    # 2.1.x/observability/otel-stack.md
    "HTTPListenerPolicy OpenTelemetry access log": (
        "HTTPListenerPolicy",
        """\
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: http}]
  accessLog:
  - openTelemetry:
      grpcService:
        backendRef: {name: opentelemetry-collector-logs, namespace: telemetry, port: 4317}
        logName: http-gateway-access-logs
      body: '"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %RESPONSE_CODE%"'
    filter:
      orFilter:
      - statusCodeFilter: {op: GE, value: 400}
      - durationFilter: {op: GE, value: 1000}
""",
    ),
    # 2.1.x/observability/otel-stack.md (tracing), 2.1.x/reference/api.md CustomAttribute
    "HTTPListenerPolicy OpenTelemetry tracing with attributes": (
        "HTTPListenerPolicy",
        """\
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: http}]
  tracing:
    provider:
      openTelemetry:
        serviceName: http
        grpcService:
          backendRef: {name: opentelemetry-collector-traces, namespace: telemetry, port: 4317}
    spawnUpstreamSpan: true
    randomSampling: 10
    attributes:
    - {name: team, literal: {value: payments}}
    - {name: user, requestHeader: {name: x-user, defaultValue: anonymous}}
""",
    ),
    # assets/security/ratelimit/global.md
    "GatewayExtension rateLimit domain, timeout, failOpen": (
        "GatewayExtension",
        """\
  type: RateLimit
  rateLimit:
    grpcService:
      backendRef: {name: ratelimit, namespace: kgateway-test-extensions, port: 8081}
    domain: api-gateway
    timeout: 100ms
    failOpen: false
""",
    ),
    # content/docs/reference/api.md at 9af3ede8 (the v2.0 reference): ExtAuthPolicy enablement, Webhook host
    "TrafficPolicy v2.0 extAuth.enablement and webhook insecureSkipVerify": (
        "TrafficPolicy",
        """\
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]
  extAuth: {enablement: DisableAll}
  ai:
    promptGuard:
      request:
        webhook:
          host: {host: guard.default.svc, port: 8443, insecureSkipVerify: true}
          forwardHeaders: [{type: Exact, name: x-user}]
""",
    ),
    # 2.1.x/reference/api.md ExtAuthProvider
    "GatewayExtension extAuth failOpen": (
        "GatewayExtension",
        """\
  type: ExtAuth
  extAuth:
    grpcService:
      backendRef: {name: ext-authz, port: 4444}
      requestTimeout: 2s
    failOpen: true
    statusOnError: 503
""",
    ),
    # latest/traffic-management/proxy-protocol.md (bootstrap), 2.1.x/ai/setup.md (aiExtension),
    # 2.1.x/reference/api.md KubernetesProxyConfig (stats, agentgateway)
    "GatewayParameters bootstrap, securityContext, aiExtension, agentgateway, stats": (
        "GatewayParameters",
        """\
  kube:
    envoyContainer:
      bootstrap:
        logLevel: debug
        componentLogLevels: {upstream: debug, connection: trace}
      securityContext: {allowPrivilegeEscalation: false, runAsUser: 10101}
    aiExtension:
      enabled: true
      ports: [{name: ai-monitoring, containerPort: 9092}]
    agentgateway: {enabled: true, logLevel: info}
    stats: {enabled: true, enableStatsRoute: true}
    service: {type: LoadBalancer, externalTrafficPolicy: Local}
""",
    ),
    # Backend and AIBackend. `v2.0` is content/docs/latest at 7732dd7f (kgateway v2.0's pages).
    # 2.1.x/ai/failover.md: priority groups of named providers
    "Backend ai.priorityGroups (v2.1)": (
        "Backend",
        """\
  type: AI
  ai:
    priorityGroups:
    - providers:
      - name: openai-gpt-4o
        openai:
          model: "gpt-4o"
          authToken: {kind: SecretRef, secretRef: {name: openai-secret}}
    - providers:
      - name: openai-gpt-3.5-turbo
        openai:
          model: "gpt-3.5-turbo"
          authToken: {kind: SecretRef, secretRef: {name: openai-secret}}
""",
    ),
    # 2.1.x/ai/ollama.md: where the provider is, at the llm level
    "Backend ai.llm host and port (v2.1)": (
        "Backend",
        """\
  type: AI
  ai:
    llm:
      host: 192.168.1.20
      port: 11434
      openai:
        model: "llama3.2"
        authToken: {kind: Inline, inline: "t0ken"}
""",
    ),
    # 2.1.x/ai/cloud-providers.md: custom host, path and auth header
    "Backend ai.llm path and authHeader (v2.1)": (
        "Backend",
        """\
  type: AI
  ai:
    llm:
      host: apic.ocp.provider.com
      path:
        full: "/my-openai-service/gpt35/chat/completions"
      openai:
        model: gpt-4o
        authToken: {kind: SecretRef, secretRef: {name: azure-openai-secret}}
      authHeader:
        headerName: api-key
""",
    ),
    # 2.1.x/reference/api.md VertexAIConfig, BedrockConfig, AzureOpenAIConfig (lower-case block names)
    "Backend ai.priorityGroups with vertexai, bedrock and azureopenai (v2.1)": (
        "Backend",
        """\
  type: AI
  ai:
    priorityGroups:
    - providers:
      - name: vertex
        vertexai:
          model: gemini-1.5-flash-001
          apiVersion: v1
          projectId: my-project
          location: us-central1
          publisher: GOOGLE
          modelPath: generateContent
          authToken: {kind: SecretRef, secretRef: {name: vertex-secret}}
      - name: bedrock
        bedrock:
          model: anthropic.claude-3-haiku-20240307-v1:0
          guardrail: {identifier: gr-1, version: "1"}
          auth: {type: Secret, secretRef: {name: aws-creds}}
    - providers:
      - name: azure
        azureopenai:
          endpoint: ai-gateway.openai.azure.com
          deploymentName: gpt-4o-mini
          apiVersion: 2024-02-15-preview
          authToken: {secretRef: {name: azure-secret}}
""",
    ),
    # v2.0 ai/failover.md: multipool
    "Backend ai.multipool (v2.0)": (
        "Backend",
        """\
  type: AI
  ai:
    multipool:
      priorities:
      - pool:
        - provider:
            openai:
              model: "gpt-4o"
              authToken: {kind: SecretRef, secretRef: {name: openai-secret}}
      - pool:
        - provider:
            openai:
              model: "gpt-3.5-turbo"
              authToken: {kind: SecretRef, secretRef: {name: openai-secret}}
""",
    ),
    # v2.0 ai/ollama.md and reference/api.md LLMProvider: the provider nested, the overrides beside it
    "Backend ai.llm.provider with hostOverride, pathOverride, authHeaderOverride (v2.0)": (
        "Backend",
        """\
  type: AI
  ai:
    llm:
      hostOverride:
        host: 192.168.1.20
        port: 11434
      pathOverride: {fullPath: /v1/chat/completions}
      authHeaderOverride: {headerName: api-key, prefix: Key}
      provider:
        openai:
          model: "llama3.2"
          authToken: {kind: Inline, inline: "t0ken"}
""",
    ),
    # assets/traffic-management/destination-types/backends/lambda/creds-secret.md
    "Backend aws.lambda with auth": (
        "Backend",
        """\
  type: AWS
  aws:
    region: us-east-1
    accountId: "123456789012"
    auth:
      type: Secret
      secretRef: {name: aws-creds}
    lambda:
      functionName: echo
""",
    ),
    # 2.1.x/reference/api.md AwsLambda (region defaults to us-east-1)
    "Backend aws.lambda every field": (
        "Backend",
        """\
  type: AWS
  aws:
    accountId: "123456789012"
    lambda:
      endpointURL: http://localstack.localstack.svc:4566
      functionName: echo
      invocationMode: Async
      qualifier: $LATEST
      payloadTransformMode: None
""",
    ),
    # 2.1.x/reference/api.md McpTargetSelector, McpTarget, McpSelector; StaticBackend appProtocol
    "Backend mcp.targets static and selector": (
        "Backend",
        """\
  type: MCP
  mcp:
    targets:
    - name: mcp-server
      static: {host: mcp-website-fetcher.default.svc.cluster.local, port: 80, path: /mcp, protocol: StreamableHTTP}
    - name: by-label
      selector:
        namespace: {matchLabels: {kubernetes.io/metadata.name: mcp}}
        service: {matchExpressions: [{key: app, operator: In, values: [mcp]}]}
""",
    ),
    "Backend static appProtocol": (
        "Backend",
        "  type: Static\n  static:\n    hosts: [{host: grpc.internal, port: 9000}]\n    appProtocol: grpc\n",
    ),
    # kgateway's AIBackend type is the Backend's `ai` block: the same shapes on the AIBackend kind
    "AIBackend llm (v2.1)": (
        "AIBackend",
        "  llm:\n    host: 10.0.0.5\n    port: 8000\n    openai: {model: m}\n",
    ),
    # --- the kgateway-crds Helm chart (install/helm/kgateway-crds/templates, a fork's copy of 2025-08) ---
    # gateway.kgateway.dev_backends.yaml McpTargetSelector: `static` carries its `name`; `selectors`
    "Backend mcp static and selectors (chart)": (
        "Backend",
        """\
  type: MCP
  mcp:
    name: tools
    targets:
    - static: {name: search, host: mcp.example.com, port: 443, protocol: StreamableHTTP}
    - selectors:
        namespaceSelector: {matchLabels: {team: ai}}
        serviceSelector: {matchExpressions: [{key: app, operator: In, values: [mcp]}]}
""",
    ),
    # gateway.kgateway.dev_gatewayextensions.yaml: ExtGrpcService.backendRef is a Gateway API BackendRef
    "GatewayExtension backendRef weight (chart)": (
        "GatewayExtension",
        "  type: ExtAuth\n  extAuth:\n    grpcService: {backendRef: {name: authz, port: 9001, weight: 1}}\n",
    ),
    # gateway.kgateway.dev_gatewayparameters.yaml: `agentGateway` and `deployment.omitReplicas`
    "GatewayParameters agentGateway and omitReplicas (chart)": (
        "GatewayParameters",
        "  kube:\n    agentGateway: {enabled: true, logLevel: info}\n    deployment: {omitReplicas: true}\n",
    ),
    # gateway.kgateway.dev_httplistenerpolicies.yaml: accessLog[].openTelemetry.resourceAttributes
    "HTTPListenerPolicy OpenTelemetry resourceAttributes (chart)": (
        "HTTPListenerPolicy",
        """\
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: http}]
  accessLog:
  - openTelemetry:
      grpcService: {backendRef: {name: otel, port: 4317}, logName: access}
      resourceAttributes: {values: [{key: env, value: {stringValue: prod}}]}
""",
    ),
    # gateway.kgateway.dev_trafficpolicies.yaml: `tokenBucket` is optional in RateLimitPolicy.local
    "TrafficPolicy empty local rate limit (chart)": (
        "TrafficPolicy",
        "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]\n  rateLimit: {local: {}}\n",
    ),
    # gateway.kgateway.dev_httplistenerpolicies.yaml: `upgradeConfig.enabledUpgrades` is optional
    "HTTPListenerPolicy empty upgradeConfig (chart)": (
        "HTTPListenerPolicy",
        "  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: http}]\n  upgradeConfig: {}\n",
    ),
}

# The chart's limits and exclusive fields, each rejected as the API server would.
CHART_REJECTIONS = [
    (
        "GatewayParameters",
        "  kube:\n    deployment: {replicas: 2, omitReplicas: true}\n",
        "t.yaml:6: GatewayParameters/ns/x: spec.kube.deployment.omitReplicas: "
        "set at most one of replicas, omitReplicas (found replicas and omitReplicas)",
    ),
    (
        "TrafficPolicy",
        "  targetRefs: [" + ", ".join(f"{{kind: HTTPRoute, name: r{i}}}" for i in range(17)) + "]\n",
        "t.yaml:5: TrafficPolicy/ns/x: spec.targetRefs: must have at most 16 item(s)",
    ),
    (
        "Backend",
        "  type: MCP\n  mcp:\n    targets:\n    - static: {host: mcp.example.com, port: 443}\n",
        "t.yaml:8: Backend/ns/x: spec.mcp.targets[0].static.name: "
        "a static MCP target needs a name (kgateway 2.1 `static.name`, or `name`)",
    ),
    (
        "TrafficPolicy",
        "  cors: {allowMethods: [GET, PUT, POST, DELETE, PATCH, HEAD, OPTIONS, CONNECT, TRACE, GET]}\n",
        "t.yaml:5: TrafficPolicy/ns/x: spec.cors.allowMethods: must have at most 9 item(s)",
    ),
]


@pytest.mark.parametrize(("kind", "body", "expected"), CHART_REJECTIONS)
def test_the_charts_limits_hold(kind: str, body: str, expected: str) -> None:
    assert problems_of(head(kind) + body) == [expected]


@pytest.mark.parametrize("name", list(UPSTREAM_SHAPES))
def test_kgateway_upstream_shapes_validate(name: str) -> None:
    kind, body = UPSTREAM_SHAPES[name]
    assert problems_of(head(kind) + body) == []


@pytest.mark.parametrize(
    ("kind", "body", "expected"),
    [
        (
            "TrafficPolicy",
            "  retry: {attempts: 3, retyOn: [5xx]}\n",
            "t.yaml:5: TrafficPolicy/ns/x: spec.retry.retyOn: unknown field (did you mean 'retryOn'?)",
        ),
        (
            "TrafficPolicy",
            "  rateLimit:\n    local: {tokenBucket: {maxToken: 1, fillInterval: 1s}}\n",
            "t.yaml:6: TrafficPolicy/ns/x: spec.rateLimit.local.tokenBucket.maxToken: unknown field "
            "(did you mean 'maxTokens'?)\n"
            "t.yaml:6: TrafficPolicy/ns/x: spec.rateLimit.local.tokenBucket.maxTokens: required field is missing",
        ),
        (
            "HTTPListenerPolicy",
            "  useRemoteAdress: true\n",
            "t.yaml:5: HTTPListenerPolicy/ns/x: spec.useRemoteAdress: unknown field (did you mean 'useRemoteAddress'?)",
        ),
        (
            "GatewayExtension",
            "  type: RateLimit\n  rateLimit:\n    grpcService: {backendRef: {name: rl}}\n    failopen: true\n",
            "t.yaml:8: GatewayExtension/ns/x: spec.rateLimit.failopen: unknown field (did you mean 'failOpen'?)",
        ),
        (
            "GatewayParameters",
            "  kube:\n    envoyContainer:\n      bootstrp: {logLevel: debug}\n",
            "t.yaml:7: GatewayParameters/ns/x: spec.kube.envoyContainer.bootstrp: unknown field "
            "(did you mean 'bootstrap'?)",
        ),
        (
            "TrafficPolicy",
            "  retry: {retryOn: [5XX]}\n",
            "t.yaml:5: TrafficPolicy/ns/x: spec.retry.retryOn[0]: unsupported value '5XX': must be one of "
            "5xx, gateway-error, reset, reset-before-request, connect-failure, envoy-ratelimited, retriable-4xx, "
            "refused-stream, retriable-status-codes, http3-post-connect-failure, cancelled, deadline-exceeded, "
            "internal, resource-exhausted, unavailable",
        ),
        (
            "Backend",
            "  type: AI\n  ai:\n    multipool:\n      priorites: [{pool: [{provider: {openai: {}}}]}]\n",
            "t.yaml:8: Backend/ns/x: spec.ai.multipool.priorites: unknown field (did you mean 'priorities'?)\n"
            "t.yaml:8: Backend/ns/x: spec.ai.multipool.priorities: required field is missing",
        ),
        (
            "Backend",
            "  type: AI\n  ai:\n    llm:\n      hostOverrde: {host: h}\n      provider: {openai: {}}\n",
            "t.yaml:8: Backend/ns/x: spec.ai.llm.hostOverrde: unknown field (did you mean 'hostOverride'?)",
        ),
        (
            "Backend",
            "  type: AWS\n  aws:\n    lambda: {functionNam: echo}\n",
            "t.yaml:7: Backend/ns/x: spec.aws.lambda.functionNam: unknown field (did you mean 'functionName'?)",
        ),
    ],
)
def test_kgateway_upstream_typos_are_rejected(kind: str, body: str, expected: str) -> None:
    assert "\n".join(problems_of(head(kind) + body)) == expected


VALIDATE_CONFIG = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners: [{name: http, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: http}]
  hostnames: [api.example.com]
  rules:
  - filters:
    - type: ExtensionRef
      extensionRef: {group: gateway.kgateway.dev, kind: TrafficPolicy, name: by-filter}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: retries}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}]
  retry: {attempts: 3, retryOn: [5xx]}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: by-filter}
spec:
  timeouts: {streamIdle: 10s}
"""


def test_validate_reports_upstream_fields_as_unsupported(tmp_path: Path) -> None:
    """Upstream's fields validate (exit 0) and the status line says they are not in force; a TrafficPolicy
    attached by a route filter ExtensionRef needs no targetRefs."""
    import contextlib
    import io

    from egressproxy.cli import main

    (tmp_path / "c.yaml").write_text(VALIDATE_CONFIG)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["validate", "-c", str(tmp_path)])
    assert code == 0, out.getvalue()
    lines = {line.split()[0]: line.split(None, 1)[1] for line in out.getvalue().splitlines()[1:] if line.strip()}
    assert lines["TrafficPolicy/default/retries"] == "Accepted=True  ResolvedRefs=True  Programmed=True"
    assert lines["TrafficPolicy/default/by-filter"] == (
        "Accepted=True  ResolvedRefs=True  Programmed=False "
        "(Unsupported: spec.timeouts.streamIdle is validated but not enforced by this build)"
    )


def test_global_rate_limit_names_an_existing_gateway_extension(tmp_path: Path) -> None:
    """kgateway's `rateLimit.global.extensionRef` is resolved like the seeds' `rateLimit.extensionRef`."""
    import contextlib
    import io

    from egressproxy.cli import main

    policy = """\
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: limits}
spec:
  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}]
  rateLimit:
    global:
      descriptors: [{entries: [{type: RemoteAddress}]}]
      extensionRef: {name: global-ratelimit}
"""
    (tmp_path / "c.yaml").write_text(VALIDATE_CONFIG + policy)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["validate", "-c", str(tmp_path)])
    assert code == 1
    line = VALIDATE_CONFIG.count("\n") + policy.count("\n")
    assert out.getvalue().splitlines() == [
        f"{tmp_path / 'c.yaml'}:{line}: TrafficPolicy/default/limits: spec.rateLimit.global.extensionRef.name: "
        'GatewayExtension "default/global-ratelimit" not found'
    ]


# kgateway 2.2+ fields (kgateway.dev assets/kgw-docs pages at 85cd0fc8): accepted whole, reported Unsupported.
LATER_SHAPES = {
    # security/jwt/basic.md
    "GatewayExtension jwt": ("GatewayExtension", "  jwt:\n    providers: [{name: selfminted, issuer: kgateway.dev}]\n"),
    # security/external-auth-http.md
    "GatewayExtension extAuth httpService": (
        "GatewayExtension",
        "  type: ExtAuth\n  extAuth:\n    headersToForward: [x-ext-authz]\n    httpService: {backendRef: {name: ext-authz, port: 4444}}\n",
    ),
    # security/apikey-auth.md, resiliency/fault-injection.md, traffic-management/compression.md
    "TrafficPolicy apiKeyAuth, faultInjection, compression": (
        "TrafficPolicy",
        "  targetRefs: [{kind: HTTPRoute, name: r}]\n  apiKeyAuth: {secretRef: {name: keys}}\n"
        "  faultInjection: {abort: {percentage: 50, httpStatus: 503}}\n  compression: {responseCompression: {}}\n",
    ),
    # setup/customize/configs.md
    "GatewayParameters overlays and autoscalers": (
        "GatewayParameters",
        "  kube:\n    deploymentOverlay: {spec: {replicas: 3}}\n    horizontalPodAutoscaler: {spec: {maxReplicas: 5}}\n"
        "    service: {loadBalancerSourceRanges: [10.0.0.0/8]}\n",
    ),
}


@pytest.mark.parametrize("name", list(LATER_SHAPES))
def test_later_kgateway_fields_validate(name: str) -> None:
    kind, body = LATER_SHAPES[name]
    assert problems_of(head(kind) + body) == []


def test_an_ext_auth_calls_exactly_one_service() -> None:
    assert problems_of(head("GatewayExtension") + "  type: ExtAuth\n  extAuth: {failOpen: true}\n") == [
        "t.yaml:6: GatewayExtension/ns/x: spec.extAuth: set one of grpcService, httpService"
    ]


def test_a_typo_of_a_later_field_is_still_named() -> None:
    assert problems_of(head("TrafficPolicy") + "  apiKeyAuht: {}\n") == [
        "t.yaml:5: TrafficPolicy/ns/x: spec.apiKeyAuht: unknown field (did you mean 'apiKeyAuth'?)"
    ]
