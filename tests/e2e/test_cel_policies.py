"""CEL policies and the request size limit through the real gateway: TrafficPolicy `rbac` over headers, path,
identity and the JSON body; HTTPListenerPolicy `celValidation`; a runtime error failing closed; an expression
that does not compile at `validate`; `buffer.maxRequestBytes` (413, Content-Length and chunked); Report mode;
and `explain` tracing each policy with the expression that decided."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e

HOST = "api.example.test"

RBAC = """
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: who-may}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}]
  rbac:
    action: Allow
    policy:
      matchExpressions:
      - '"x-team" in request.headers && request.headers["x-team"] == "payments"'
      - 'request.path.startsWith("/public/")'
      - 'source.identity.namespace == "prod" && source.identity.serviceAccount == "agent"'
      - 'request.method == "POST" && request.body.model == "gpt-4o-mini"'
"""

NO_DELETE = """
apiVersion: gateway.kgateway.dev/v1alpha1
kind: HTTPListenerPolicy
metadata: {name: listener-rules}
spec:
  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}]
  celValidation:
    rules:
    - {expression: 'request.method == "DELETE"', action: Deny}
"""


def gateway_yaml(*policies: str) -> str:
    return f"""
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: deny-all
  listeners:
  - {{name: https, protocol: HTTPS, tls: {{mode: Terminate, caCertRef: {{name: egress-ca}}}}}}
  upstreamTLS:
    additionalTrustBundleSecretRef: {{name: origin-ca}}
    hostAliases:
    - {{ip: 127.0.0.1, hostnames: [{HOST}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api}}
spec:
  parentRefs: [{{name: eg, sectionName: https}}]
  hostnames: [{HOST}]
  rules: [{{}}]
""" + "".join("---\n" + p for p in policies)


def _client(gw, gateway_ca, identity: str | None = None) -> httpx.Client:
    proxy = httpx.Proxy(gw.proxy_url, auth=(identity, "x")) if identity else gw.proxy_url
    return httpx.Client(proxy=proxy, verify=ssl.create_default_context(cafile=str(gateway_ca[0])), timeout=10)


def _rbac_denied(response: httpx.Response, policy: str = "TrafficPolicy/default/who-may") -> str:
    assert response.status_code == 403, response.text
    assert response.headers["x-egress-denied"] == "rbac-denied"
    body = response.json()
    assert body["reason"] == "rbac-denied" and body["policy"] == policy
    return str(body["error"])


@pytest.fixture
def served(gateway, gateway_ca, trust_secret, tls_origin):
    origin = tls_origin(HOST, name="api")
    gw = gateway(gateway_yaml(RBAC, NO_DELETE), gateway_ca[1], trust_secret)
    return gw, origin, f"https://{HOST}:{origin.port}"


def test_rbac_allows_on_a_header_and_denies_without_it(served, gateway_ca):
    gw, origin, base = served
    with _client(gw, gateway_ca) as client:
        assert client.get(f"{base}/private", headers={"x-team": "payments"}).status_code == 200
        error = _rbac_denied(client.get(f"{base}/private", headers={"x-team": "growth"}))
    assert error == "no Allow expression of rbac is true"
    assert [path for _, path, _ in origin.requests] == ["/private"]


def test_rbac_allows_on_the_path(served, gateway_ca):
    gw, origin, base = served
    with _client(gw, gateway_ca) as client:
        assert client.get(f"{base}/public/status").status_code == 200
        _rbac_denied(client.get(f"{base}/private/status"))


def test_rbac_allows_on_the_workload_identity(served, gateway_ca):
    gw, origin, base = served
    with _client(gw, gateway_ca, identity="prod/agent") as client:
        assert client.get(f"{base}/private").status_code == 200
    with _client(gw, gateway_ca, identity="dev/agent") as client:
        _rbac_denied(client.get(f"{base}/private"))


def test_rbac_allows_on_the_json_body(served, gateway_ca):
    gw, origin, base = served
    with _client(gw, gateway_ca) as client:
        ok = client.post(f"{base}/v1/chat", json={"model": "gpt-4o-mini", "messages": []})
        assert ok.status_code == 200, ok.text
        assert json.loads(ok.json()["body"])["model"] == "gpt-4o-mini"  # the body went upstream unchanged
        _rbac_denied(client.post(f"{base}/v1/chat", json={"model": "gpt-4o", "messages": []}))
    assert len(origin.requests) == 1


def test_cel_validation_denies_by_its_rule(served, gateway_ca):
    gw, origin, base = served
    with _client(gw, gateway_ca) as client:
        error = _rbac_denied(client.delete(f"{base}/public/x"), "HTTPListenerPolicy/default/listener-rules")
    assert error == 'spec.celValidation.rules[0].expression (Deny) is true: request.method == "DELETE"'
    assert origin.requests == []
    assert 'egress_denials_total{reason="rbac-denied"} 1.0' in gw.metrics()


def test_an_expression_that_fails_at_runtime_denies_without_telling_a_value(gateway, gateway_ca, trust_secret, tls_origin):
    origin = tls_origin(HOST, name="api")
    failing = NO_DELETE.replace("""'request.method == "DELETE"'""", """'request.headers["x-api-key"] + 1 == 2'""")
    gw = gateway(gateway_yaml(failing), gateway_ca[1], trust_secret)
    with _client(gw, gateway_ca) as client:
        response = client.get(f"https://{HOST}:{origin.port}/", headers={"x-api-key": "sk-live-TOPSECRET"})
    error = _rbac_denied(response, "HTTPListenerPolicy/default/listener-rules")
    assert error.startswith("spec.celValidation.rules[0].expression could not be evaluated (")
    assert error.endswith(""") (fail closed): request.headers["x-api-key"] + 1 == 2""")
    assert "TOPSECRET" not in response.text + gw.logs() + gw.admin("/config_dump").text
    assert origin.requests == []


def test_an_expression_that_does_not_compile_is_a_validation_problem(tmp_path: Path, gateway_ca, trust_secret):
    config = tmp_path / "cfg"
    config.mkdir()
    text = gateway_yaml(RBAC.replace("""'request.path.startsWith("/public/")'""", "'request.path =='"))
    (config / "gw.yaml").write_text(text)
    (config / "secrets.yaml").write_text(gateway_ca[1] + "\n---\n" + trust_secret)
    out = subprocess.run([sys.executable, "-m", "egressproxy", "validate", "-c", str(config)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout
    line = text.splitlines().index("      - 'request.path =='") + 1
    first = out.stdout.splitlines()[0]
    prefix = f"{config / 'gw.yaml'}:{line}: TrafficPolicy/default/who-may: spec.rbac.policy.matchExpressions[1]: "
    assert first.startswith(prefix + "CEL expression does not compile: Failed to parse expression 'request.path =='"), first


LIMIT = """
apiVersion: gateway.kgateway.dev/v1alpha1
kind: HTTPListenerPolicy
metadata: {name: small-bodies}
spec:
  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}]
  buffer: {maxRequestBytes: 64}
"""


def _chunks(total: int) -> Iterator[bytes]:
    for _ in range(total // 16):
        yield b"x" * 16


def test_a_body_past_max_request_bytes_is_413(gateway, gateway_ca, trust_secret, tls_origin):
    origin = tls_origin(HOST, name="api")
    gw = gateway(gateway_yaml(LIMIT), gateway_ca[1], trust_secret)
    base = f"https://{HOST}:{origin.port}"
    with _client(gw, gateway_ca) as client:
        assert client.post(f"{base}/small", content=b"y" * 64).status_code == 200
        declared = client.post(f"{base}/declared", content=b"y" * 65)
        streamed = client.post(f"{base}/chunked", content=_chunks(160))  # no Content-Length: counted as read
        small_stream = client.post(f"{base}/chunked-small", content=_chunks(48))
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.headers["x-egress-denied"] == "body-too-large"
        assert response.json() == {
            "error": "the request body is larger than buffer.maxRequestBytes (64)",
            "reason": "body-too-large",
            "policy": "HTTPListenerPolicy/default/small-bodies",
        }
    assert small_stream.status_code == 200
    assert [path for _, path, _ in origin.requests] == ["/small", "/chunked-small"]


def test_a_chunked_upload_is_answered_413_as_soon_as_it_passes_the_limit(gateway, gateway_ca, trust_secret, tls_origin):
    """The client never finishes its body: the 413 arrives anyway (counted while read, not after the end)."""
    origin = tls_origin(HOST, name="api")
    gw = gateway(gateway_yaml(LIMIT), gateway_ca[1], trust_secret)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as raw:
        raw.sendall(f"CONNECT {HOST}:{origin.port} HTTP/1.1\r\nHost: {HOST}:{origin.port}\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        context = ssl.create_default_context(cafile=str(gateway_ca[0]))
        with context.wrap_socket(raw, server_hostname=HOST) as tls:
            head = f"POST /upload HTTP/1.1\r\nHost: {HOST}:{origin.port}\r\nTransfer-Encoding: chunked\r\n\r\n"
            tls.sendall(head.encode())
            for _ in range(3):
                tls.sendall(b"20\r\n" + b"z" * 32 + b"\r\n")  # 96 bytes, and no last chunk: the body never ends
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = tls.recv(4096)
                if not chunk:
                    break
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"x-egress-denied: body-too-large" in answer.lower()
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["reason"] == "body-too-large"
    assert origin.requests == []
    assert 'egress_denials_total{reason="body-too-large"} 1.0' in gw.metrics()


def test_report_mode_passes_and_counts(gateway, gateway_ca, trust_secret, tls_origin):
    origin = tls_origin(HOST, name="api")
    report = RBAC.replace("  rbac:\n", "  enforcementMode: Report\n  rbac:\n")
    gw = gateway(gateway_yaml(report), gateway_ca[1], trust_secret)
    with _client(gw, gateway_ca) as client:
        assert client.get(f"https://{HOST}:{origin.port}/private").status_code == 200
        assert client.get(f"https://{HOST}:{origin.port}/public/ok").status_code == 200
    found = re.findall(r'^egress_policy_reports_total\{policy="TrafficPolicy/default/who-may",reason="rbac-denied"\} (\S+)$', gw.metrics(), re.M)
    assert found == ["1.0"]
    assert "report: TrafficPolicy/default/who-may would deny GET" in gw.logs()
    assert len(origin.requests) == 2


def _explain(tmp_path: Path, gateway_ca, trust_secret, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "explain"
    config.mkdir(exist_ok=True)
    (config / "gw.yaml").write_text(gateway_yaml(RBAC, NO_DELETE, LIMIT.replace("64", "4096")))
    (config / "secrets.yaml").write_text(gateway_ca[1] + "\n---\n" + trust_secret)
    return subprocess.run(
        [sys.executable, "-m", "egressproxy", "explain", "-c", str(config), *args, "--no-resolve"],
        capture_output=True, text=True, timeout=60, input=stdin,
    )


def _checks(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(("check", "verdict"))]


def test_explain_traces_each_policy_and_the_deciding_expression(tmp_path, gateway_ca, trust_secret):
    allowed = _explain(tmp_path, gateway_ca, trust_secret, f"https://{HOST}/private", "--identity", "prod/agent")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert _checks(allowed.stdout) == [
        "check     buffer HTTPListenerPolicy/default/small-bodies: allow (0 bytes, maxRequestBytes 4096)",
        "check     cel HTTPListenerPolicy/default/listener-rules: allow (no rule of celValidation is true)",
        "check     cel TrafficPolicy/default/who-may: allow (spec.rbac.policy.matchExpressions[2] (Allow) is true: "
        'source.identity.namespace == "prod" && source.identity.serviceAccount == "agent")',
        "verdict   ALLOW: route by HTTPRoute/default/api",
    ]
    body = json.dumps({"model": "gpt-4o", "messages": []})
    denied = _explain(tmp_path, gateway_ca, trust_secret, f"https://{HOST}/v1/chat", "--method", "POST", "--body", "-", stdin=body)
    assert denied.returncode == 3, denied.stdout + denied.stderr
    assert _checks(denied.stdout) == [
        f"check     buffer HTTPListenerPolicy/default/small-bodies: allow ({len(body)} bytes, maxRequestBytes 4096)",
        "check     cel HTTPListenerPolicy/default/listener-rules: allow (no rule of celValidation is true)",
        "check     cel TrafficPolicy/default/who-may: deny rbac-denied (no Allow expression of rbac is true)",
        "verdict   DENY 403: rbac-denied by TrafficPolicy/default/who-may (no Allow expression of rbac is true)",
    ]
    deleted = _explain(tmp_path, gateway_ca, trust_secret, f"https://{HOST}/public/x", "--method", "DELETE", "--json")
    result = json.loads(deleted.stdout)
    assert result["verdict"]["reason"] == "rbac-denied"
    assert [(t["check"], t["policy"], t["verdict"]) for t in result["policyTrace"]] == [
        ("buffer", "HTTPListenerPolicy/default/small-bodies", "allow"),
        ("cel", "HTTPListenerPolicy/default/listener-rules", "deny"),
    ]
