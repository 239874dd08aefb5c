"""HTTPListenerPolicy accessLog and tracing compiled onto Snapshot.compiled (egressproxy/compiler/observability_forms.py)."""

from __future__ import annotations

import json
import textwrap

import pytest

from egressproxy.access_log_format import REDACTED
from egressproxy.compiler import compile_config
from egressproxy.config.loader import load_text
from egressproxy.flowrecord import Exchange
from tests.unit.test_sinks import request

GATEWAY = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: allow-all
  listeners:
  - {name: http, protocol: HTTP}
  - {name: plain2, protocol: HTTP, port: 8081}
---
apiVersion: v1
kind: Secret
metadata: {name: token}
stringData: {token: "sk-injected-secret"}
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {name: inject}
spec:
  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}]
  target: Header
  headerName: X-Vendor-Token
  secretRef: {name: token}
"""


def policy(body: str, section: str | None = None) -> str:
    target = "{group: clrk.apoxy.dev, kind: EgressGateway, name: eg" + (f", sectionName: {section}" if section else "") + "}"
    return (
        GATEWAY
        + "---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: HTTPListenerPolicy\nmetadata: {name: logs}\nspec:\n"
        + f"  targetRefs: [{target}]\n"
        + textwrap.indent(textwrap.dedent(body), "  ")
    )


def compile_text(text: str):  # type: ignore[no-untyped-def]
    loaded = load_text(text, "cfg.yaml")
    assert [str(p) for p in loaded.problems] == []
    return compile_config(loaded.resources)


def test_a_file_sink_compiles_its_json_format_and_redacts_injected_headers() -> None:
    result = compile_text(policy("""\
        accessLog:
        - fileSink:
            path: /tmp/a.log
            jsonFormat: {code: "%RESPONSE_CODE%", vendor: "%REQ(x-vendor-token)%"}
        """))
    assert [str(p) for p in result.problems] == []
    logs = result.snapshot.compiled.access_logs_for("http")
    assert logs is not None and logs.policy == "HTTPListenerPolicy/default/logs"
    assert logs.sinks[0].path == "/tmp/a.log"
    headers = ((b"x-vendor-token", b"sk-injected-secret"),)
    line = logs.sinks[0].format.line(request(exchange=Exchange(request_headers=headers)))
    assert json.loads(line) == {"code": 200, "vendor": REDACTED}
    assert result.snapshot.compiled.to_dump()["accessLogs"]["gateway"]["sinks"] == [{"fileSink": {"path": "/tmp/a.log"}}]


def test_an_unknown_operator_is_a_validation_problem_with_file_line_and_field() -> None:
    text = policy("""\
        accessLog:
        - fileSink:
            path: /tmp/a.log
            jsonFormat: {code: "%RESPONSE_CODE%", oops: "%NO_SUCH_THING%"}
        """)
    result = compile_text(text)
    problems = [str(p) for p in result.problems]
    assert len(problems) == 1
    line = next(n for n, l in enumerate(text.splitlines(), start=1) if "NO_SUCH_THING" in l)
    assert problems[0].startswith(f"cfg.yaml:{line}")
    assert "spec.accessLog[0].fileSink.jsonFormat" in problems[0] and "%NO_SUCH_THING%" in problems[0]


def test_a_listener_scoped_policy_applies_to_its_listener_only() -> None:
    result = compile_text(policy("accessLog:\n- fileSink: {path: /tmp/b.log}\n", section="plain2"))
    compiled = result.snapshot.compiled
    assert compiled.access_logs_for("http") is None
    assert compiled.access_logs_for("plain2") is not None


@pytest.mark.parametrize(
    ("provider", "endpoint", "protocol"),
    [
        ("otel: {httpAddress: 'http://127.0.0.1:4318', protocol: http/protobuf}", "http://127.0.0.1:4318", "http"),
        ("otel: {grpcAddress: 'collector:4317'}", "collector:4317", "grpc"),
        ("openTelemetry: {grpcService: {backendRef: {name: otel, namespace: obs, port: 4317}}, serviceName: gw}",
         "otel.obs.svc.cluster.local:4317", "grpc"),
    ],
)
def test_tracing_providers_compile_to_an_otlp_target(provider: str, endpoint: str, protocol: str) -> None:
    result = compile_text(policy(f"tracing:\n  provider: {{{provider}}}\n  samplingRate: 25\n"))
    assert [str(p) for p in result.problems] == []
    tracing = result.snapshot.compiled.tracing_for("http")
    assert tracing is not None
    assert (tracing.target.endpoint, tracing.target.protocol, tracing.sampling) == (endpoint, protocol, 0.25)


def test_tracing_tags_literal_environment_and_request_header(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EGRESS_TEST_ZONE", "z1")
    result = compile_text(policy("""\
        tracing:
          provider: {otel: {httpAddress: "127.0.0.1:4318", protocol: http/protobuf}}
          randomSampling: 50
          overallSampling: 50
          customTags:
            team: {literal: payments}
            zone: {environment: EGRESS_TEST_ZONE}
            agent: {requestHeader: X-Agent}
        """))
    tracing = result.snapshot.compiled.tracing_for("http")
    assert tracing.sampling == 0.25
    assert [(t.name, t.literal, t.request_header) for t in tracing.tags] == [
        ("team", "payments", None), ("zone", "z1", None), ("agent", None, "x-agent")
    ]
