"""Capture through the real process: the embedded store read by `egressproxy captures`, and the OTLP export.

One gateway serves the module: an intercepting HTTPS listener, a plain HTTP listener and a TLS Passthrough
listener, body capture capped at 1024 bytes, a CredentialInjectionPolicy on the API route (a header and a query
parameter), a gateway-wide LoggingPolicy that redacts one more header, a route whose LoggingPolicy keeps only
response bodies, and `otlp.endpoint` pointing at a decoding collector on loopback. Workloads are httpx clients
through the explicit proxy; the origin is an HTTPS server signed by the test CA the gateway trusts.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.capture_origin import CaptureOrigin
from tests.support.gateway import GatewayProcess, free_port
from tests.support.otlp_logs_collector import OtlpCollector
from tests.support.pki import TestCA

pytestmark = pytest.mark.e2e

INJECTED_HEADER = "INJECTED-SECRET-header"
INJECTED_QUERY = "INJECTED-SECRET-query"
CLIENT_BEARER = "CLIENT-SECRET-bearer"
CLIENT_API_KEY = "CLIENT-SECRET-apikey"
CLIENT_COOKIE = "COOKIE-SECRET-value"
NOTE = "NOTE-SECRET-internal"
PROXY_PASSWORD = "PROXY-SECRET-pass"
OTLP_TOKEN = "OTLP-SECRET-token"
SET_COOKIE = "SETCOOKIE-SECRET"
SECRETS = (INJECTED_HEADER, INJECTED_QUERY, CLIENT_BEARER, CLIENT_API_KEY, CLIENT_COOKIE, NOTE, PROXY_PASSWORD,
           OTLP_TOKEN, SET_COOKIE)
CONTRACT_FIELDS = {"id", "time", "identity", "gateway", "listener", "route", "backend", "method", "url", "host",
                   "status", "durationMs", "request", "response"}
PART_FIELDS = {"headers", "body", "bodyEncoding", "size", "truncated"}
HOSTS = "[api.example.test, quiet.example.test, tunnel.example.test]"


def config(otlp_endpoint: str, trust_pem: str, ca_secret: str) -> str:
    pem = textwrap.indent(trust_pem, "    ")
    return f"""
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: deny-all
  listeners:
  - {{name: https, protocol: HTTPS, tls: {{mode: Terminate, caCertRef: {{name: egress-ca}}}}}}
  - {{name: http, protocol: HTTP}}
  - {{name: tls, protocol: TLS, tls: {{mode: Passthrough}}}}
  otlp:
    endpoint: {otlp_endpoint}
    headers: {{authorization: "Bearer {OTLP_TOKEN}"}}
    captureBody: {{maxBytes: 1024}}
  upstreamTLS:
    additionalTrustBundleSecretRef: {{name: origin-ca}}
    hostAliases:
    - {{ip: 127.0.0.1, hostnames: {HOSTS}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api}}
spec:
  parentRefs: [{{name: eg, sectionName: https}}, {{name: eg, sectionName: http}}]
  hostnames: [api.example.test]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: quiet}}
spec:
  parentRefs: [{{name: eg, sectionName: https}}]
  hostnames: [quiet.example.test]
  rules:
  - filters:
    - type: ExtensionRef
      extensionRef: {{group: clrk.apoxy.dev, kind: LoggingPolicy, name: responses-only}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: tunnel}}
spec:
  parentRefs: [{{name: eg, sectionName: tls}}]
  hostnames: [tunnel.example.test]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: LoggingPolicy
metadata: {{name: everywhere}}
spec:
  targetRefs: [{{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}}]
  captureRequest: true
  captureResponse: true
  redactHeaders: [X-Internal-Note]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: LoggingPolicy
metadata: {{name: responses-only}}
spec:
  captureRequest: false
  captureResponse: true
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {{name: api-header}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}}]
  secretRef: {{name: api-header}}
  target: Header
  headerName: x-upstream-token
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {{name: api-query}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}}]
  secretRef: {{name: api-query}}
  target: QueryParam
  queryParamName: sig
---
apiVersion: v1
kind: Secret
metadata: {{name: api-header}}
stringData: {{token: {INJECTED_HEADER}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: api-query}}
stringData: {{token: {INJECTED_QUERY}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: origin-ca}}
stringData:
  ca.crt: |
{pem}
---
{ca_secret}
"""


class Scene:
    def __init__(self, gw: GatewayProcess, origin: CaptureOrigin, collector: OtlpCollector, client_ca: Path) -> None:
        self.gw, self.origin, self.collector, self.client_ca = gw, origin, collector, client_ca

    def client(self, user: str = "team-a/agent") -> httpx.Client:
        ctx = ssl.create_default_context(cafile=str(self.client_ca))
        proxy = httpx.Proxy(self.gw.proxy_url, auth=(user, PROXY_PASSWORD))
        return httpx.Client(proxy=proxy, verify=ctx, timeout=15)

    def url(self, host: str, path: str, scheme: str = "https") -> str:
        return f"{scheme}://{host}:{self.origin.port}{path}"


def captures(data_dir: Path, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "egressproxy", "captures", "--data-dir", str(data_dir), "--json", "--limit", "1000", *args],
        capture_output=True, text=True, timeout=30,
    )
    if out.returncode == 2 and "no capture store" in out.stdout:
        return []  # the writer has not created it yet
    assert out.returncode == 0, out.stdout + out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def wait_for(fetch: Callable[[], list[dict[str, Any]]], pred: Callable[[dict[str, Any]], bool], timeout: float = 15):
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in fetch() if pred(r)]
        if found:
            return found[-1]
        assert time.monotonic() < deadline, "no such capture record"
        time.sleep(0.2)


def wait_until(cond: Callable[[], object], timeout: float = 20, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, message
        time.sleep(0.2)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory, origin_ca: TestCA, gateway_ca: tuple[Path, str]) -> Iterator[Scene]:
    tmp = tmp_path_factory.mktemp("captures")
    cert, key = origin_ca.issue("api.example.test", "quiet.example.test", "tunnel.example.test").write(tmp, "origin")
    with CaptureOrigin(cert, key) as origin, OtlpCollector() as collector:
        cfg = tmp / "config"
        cfg.mkdir()
        (cfg / "gateway.yaml").write_text(config(collector.endpoint, origin_ca.cert_pem.decode(), gateway_ca[1]))
        gw = GatewayProcess(cfg, tmp / "data", extra_args=["--log-level", "debug"]).start()
        try:
            yield Scene(gw, origin, collector, gateway_ca[0])
        finally:
            gw.stop()


def by_path(scene: Scene, path: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r.get("kind") == "request" and path in (r.get("url") or "")


def test_a_json_pair_is_captured_with_identity_and_the_contract_fields(scene: Scene) -> None:
    with scene.client() as client:
        r = client.post(scene.url("api.example.test", "/json-pair"), json={"model": "m1", "prompt": "hello"})
    assert r.status_code == 200
    rec = wait_for(lambda: captures(scene.gw.data_dir, "--host", "api.example.test"), by_path(scene, "/json-pair"))
    assert CONTRACT_FIELDS <= set(rec)
    assert set(rec["request"]) == PART_FIELDS and set(rec["response"]) == PART_FIELDS
    assert rec["identity"] == {"namespace": "team-a", "serviceAccount": "agent"}
    assert (rec["gateway"], rec["listener"], rec["route"]) == ("default/eg", "https", "default/api")
    assert (rec["method"], rec["host"], rec["status"]) == ("POST", "api.example.test", 200)
    assert rec["time"].endswith("Z") and rec["durationMs"] > 0
    assert json.loads(rec["request"]["body"]) == {"model": "m1", "prompt": "hello"}
    assert rec["request"]["bodyEncoding"] == "utf-8" and rec["request"]["truncated"] is False
    assert json.loads(rec["response"]["body"])["ok"] is True
    assert rec["response"]["size"] == int(r.headers["content-length"])


def test_an_sse_response_streams_event_by_event_while_it_is_captured(scene: Scene) -> None:
    scene.origin.server.gate.clear()
    with scene.client() as client:
        with client.stream("GET", scene.url("api.example.test", "/sse-gated")) as r:
            lines = r.iter_lines()
            assert next(line for line in lines if line) == "data: first"
            scene.origin.server.gate.set()  # only now does the origin send the rest
            rest = [line for line in lines if line]
    assert scene.origin.server.gate_opened is True, "the origin never learned the client had the first event"
    assert rest == ["data: second", "data: third"]
    rec = wait_for(lambda: captures(scene.gw.data_dir), by_path(scene, "/sse-gated"))
    assert rec["response"]["headers"]["content-type"] == "text/event-stream"
    assert rec["response"]["body"] == "data: first\n\ndata: second\n\ndata: third\n\n"


def test_a_body_over_the_cap_is_cut_and_marked_with_its_full_size(scene: Scene) -> None:
    payload = json.dumps({"text": "é" * 1500}, ensure_ascii=False).encode()  # 3000+ bytes, 2-byte characters
    with scene.client() as client:
        r = client.post(scene.url("api.example.test", "/big"), content=payload, headers={"content-type": "application/json"})
    assert r.status_code == 200
    rec = wait_for(lambda: captures(scene.gw.data_dir), by_path(scene, "/big"))
    req = rec["request"]
    assert req["truncated"] is True and req["size"] == len(payload)
    assert req["bodyEncoding"] == "utf-8"
    assert 1022 <= len(req["body"].encode()) <= 1024 and payload.decode().startswith(req["body"])


def test_content_types_outside_the_list_keep_sizes_but_no_body(scene: Scene) -> None:
    with scene.client() as client:
        r = client.post(scene.url("api.example.test", "/text"), content=b"not json at all", headers={"content-type": "text/plain"})
    assert r.status_code == 200
    rec = wait_for(lambda: captures(scene.gw.data_dir), by_path(scene, "/text"))
    assert rec["request"]["body"] is None and rec["request"]["size"] == len(b"not json at all")
    assert rec["response"]["body"] is None and rec["response"]["size"] == len(b"plain words back")


def test_a_route_logging_policy_keeps_only_response_bodies(scene: Scene) -> None:
    with scene.client() as client:
        r = client.post(scene.url("quiet.example.test", "/quiet"), json={"private": "prompt"})
    assert r.status_code == 200
    rec = wait_for(lambda: captures(scene.gw.data_dir, "--route", "default/quiet"), by_path(scene, "/quiet"))
    assert rec["request"]["body"] is None and rec["request"]["size"] > 0
    assert json.loads(rec["response"]["body"])["ok"] is True


def test_every_credential_header_is_redacted_and_no_secret_is_in_the_store(scene: Scene) -> None:
    headers = {
        "authorization": f"Bearer {CLIENT_BEARER}",
        "x-api-key": CLIENT_API_KEY,
        "cookie": f"c={CLIENT_COOKIE}",
        "x-internal-note": NOTE,
    }
    with scene.client() as client:
        r = client.get(scene.url("api.example.test", "/redact?q=1"), headers=headers)
    assert r.status_code == 200
    seen = [s for s in scene.origin.server.seen if s[1].startswith("/redact")][-1]
    assert seen[2]["x-upstream-token"] == INJECTED_HEADER and INJECTED_QUERY in seen[1]  # injection did happen
    rec = wait_for(lambda: captures(scene.gw.data_dir), by_path(scene, "/redact"))
    req, resp = rec["request"]["headers"], rec["response"]["headers"]
    assert req["x-upstream-token"] == "[REDACTED]"
    assert req["x-internal-note"] == "[REDACTED]"
    assert "cookie" not in req or req["cookie"] == "[REDACTED]"
    assert resp["set-cookie"] == "[REDACTED]"
    assert "sig=" in rec["url"] and INJECTED_QUERY not in rec["url"]
    # Plain HTTP carries the proxy credentials on the request itself.
    with scene.client() as client:
        denied = client.get(f"http://api.example.test:{free_port()}/plain-proxy-auth", headers=headers)
    assert denied.status_code in (403, 502)
    wait_for(lambda: captures(scene.gw.data_dir), by_path(scene, "/plain-proxy-auth"))
    scene.gw.stop()  # everything flushed; then grep the database and its WAL, and the logs, for each secret
    files = [p for p in scene.gw.data_dir.iterdir() if p.name.startswith("captures.db")]
    assert files
    for path in [*files, scene.gw.log_path]:
        data = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret} found in {path.name}"
    scene.gw.start()


def test_a_denied_request_is_recorded_with_its_verdict(scene: Scene) -> None:
    with scene.client() as client:
        r = client.get("http://nowhere.example.test/denied-path")
    assert r.status_code == 403
    rec = wait_for(lambda: captures(scene.gw.data_dir, "--status", "4xx"), by_path(scene, "/denied-path"))
    assert rec["decision"] == "deny" and rec["status"] == 403
    assert rec["verdict"] == {"allowed": False, "reason": "no-route", "policy": "EgressGateway/default/eg"}


def test_a_passthrough_tunnel_gets_a_connection_record(scene: Scene) -> None:
    ctx = ssl.create_default_context(cafile=None)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the origin's own certificate: not intercepted
    with socket.create_connection((scene.gw.host, scene.gw.port), timeout=10) as sock:
        sock.sendall(f"CONNECT tunnel.example.test:{scene.origin.port} HTTP/1.1\r\nHost: tunnel.example.test\r\n\r\n".encode())
        assert b" 200 " in sock.recv(4096)
        with ctx.wrap_socket(sock, server_hostname="tunnel.example.test") as tls:
            tls.sendall(b"GET /through-the-tunnel HTTP/1.1\r\nHost: tunnel.example.test\r\nConnection: close\r\n\r\n")
            assert tls.recv(4096).startswith(b"HTTP/1.1 200")
    rec = wait_for(
        lambda: captures(scene.gw.data_dir, "--host", "tunnel.example.test"), lambda r: r.get("kind") == "connection"
    )
    assert rec["sni"] == "tunnel.example.test" and rec["route"] == "default/tunnel" and rec["listener"] == "tls"
    assert rec["request"]["size"] > 100 and rec["response"]["size"] > 100 and rec["request"]["body"] is None
    assert rec["decision"] == "allow" and rec["durationMs"] > 0


def test_a_denied_connect_leaves_a_record_with_its_verdict(scene: Scene) -> None:
    with socket.create_connection((scene.gw.host, scene.gw.port), timeout=10) as sock:
        sock.sendall(b"CONNECT blocked.example.test:443 HTTP/1.1\r\nHost: blocked.example.test:443\r\n\r\n")
        assert b" 403 " in sock.recv(4096)
    rec = wait_for(lambda: captures(scene.gw.data_dir, "--host", "blocked.example.test"), lambda r: True)
    assert rec["decision"] == "deny" and rec["verdict"]["reason"] == "no-route"


def test_records_are_exported_over_otlp_with_the_configured_headers(scene: Scene) -> None:
    with scene.client() as client:
        assert client.get(scene.url("api.example.test", "/otlp-check")).status_code == 200
    wait_until(lambda: any("/otlp-check" in str(log.attributes.get("url.full")) for log in scene.collector.logs))
    log = next(log for log in scene.collector.logs if "/otlp-check" in str(log.attributes.get("url.full")))
    assert log.path == "/v1/logs"
    assert log.headers["authorization"] == f"Bearer {OTLP_TOKEN}"
    assert log.event_name == "egressproxy.capture"
    assert log.attributes["http.request.method"] == "GET"
    assert log.attributes["http.response.status_code"] == 200
    assert log.attributes["server.address"] == "api.example.test"
    assert log.attributes["egress.route"] == "default/api"
    assert log.attributes["egress.identity.namespace"] == "team-a"
    assert "gen_ai.system" not in log.attributes
    assert json.loads(log.body)["route"] == "default/api"
    assert log.resource["service.name"] == "egressproxy"


def test_follow_prints_new_records_as_they_arrive(scene: Scene) -> None:
    with scene.client() as client:
        assert client.get(scene.url("api.example.test", "/before-follow")).status_code == 200
    wait_for(lambda: captures(scene.gw.data_dir), by_path(scene, "/before-follow"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "egressproxy", "captures", "--data-dir", str(scene.gw.data_dir), "--json", "--limit", "1",
         "--follow", "--host", "api.example.test"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        assert "/before-follow" in json.loads(proc.stdout.readline())["url"]  # it has started following
        with scene.client() as client:
            assert client.get(scene.url("api.example.test", "/followed")).status_code == 200
        assert "/followed" in json.loads(proc.stdout.readline())["url"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- failure modes: each its own gateway ------------------------------------------------------------------------


PLAIN_GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: deny-all
  listeners:
  - {{name: http, protocol: HTTP}}
  {otlp}
  upstreamTLS:
    hostAliases:
    - {{ip: 127.0.0.1, hostnames: [api.example.test]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api}}
spec:
  parentRefs: [{{name: eg, sectionName: http}}]
  hostnames: [api.example.test]
"""


def metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    total = 0.0
    for line in gw.metrics().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_collector_that_is_down_costs_counted_drops_not_traffic(gateway, plain_origin) -> None:
    origin = plain_origin()
    dead = free_port()
    gw = gateway(PLAIN_GATEWAY.format(otlp=f"otlp: {{endpoint: 'http://127.0.0.1:{dead}'}}"))
    started = time.monotonic()
    for i in range(30):
        r = httpx.get(f"http://api.example.test:{origin.port}/n{i}", proxy=gw.proxy_url, timeout=10)
        assert r.status_code == 200
    assert time.monotonic() - started < 15  # no request waited on the collector
    wait_until(lambda: metric(gw, "egress_capture_drops_total", sink="otlp", reason="export-failed") >= 1, 30)
    assert len(captures(gw.data_dir)) == 30  # the store is unaffected
    assert gw.logs().count("OTLP export to") == 1  # one line per incident


def test_a_collector_that_never_answers_costs_drops_not_latency(gateway, plain_origin) -> None:
    origin = plain_origin()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # accepts (the kernel does) and never answers: every export waits for its timeout
    try:
        gw = gateway(PLAIN_GATEWAY.format(otlp=f"otlp: {{endpoint: 'http://127.0.0.1:{silent.getsockname()[1]}'}}"))
        slowest = 0.0
        for i in range(40):
            started = time.monotonic()
            r = httpx.get(f"http://api.example.test:{origin.port}/s{i}", proxy=gw.proxy_url, timeout=10)
            slowest = max(slowest, time.monotonic() - started)
            assert r.status_code == 200
        assert slowest < 2.0  # the export's 5 s timeout never reached a request
        wait_until(lambda: metric(gw, "egress_capture_drops_total", sink="otlp", reason="export-failed") >= 1, 30)
        assert len(captures(gw.data_dir)) == 40
    finally:
        silent.close()


def test_an_unwritable_store_costs_counted_drops_not_traffic(gateway, plain_origin, tmp_path) -> None:
    origin = plain_origin()
    data = tmp_path / "data-0"
    (data / "captures.db").mkdir(parents=True)  # SQLite cannot open a directory: every write fails
    gw = gateway(PLAIN_GATEWAY.format(otlp=""))
    for i in range(5):
        assert httpx.get(f"http://api.example.test:{origin.port}/n{i}", proxy=gw.proxy_url, timeout=10).status_code == 200
    wait_until(lambda: metric(gw, "egress_capture_drops_total", sink="store", reason="store-error") >= 5, 20)
    assert gw.logs().count("capture store") == 1


def test_workers_share_one_store_and_it_survives_a_restart(gateway, plain_origin) -> None:
    origin = plain_origin()
    gw = gateway(PLAIN_GATEWAY.format(otlp=""), extra_args=["--workers", "2"])
    wait_until(lambda: gw.logs().count("regular listening") >= 2, 20, "both workers listening")
    for i in range(40):  # a new connection each time: the kernel spreads them over both workers
        assert httpx.get(f"http://api.example.test:{origin.port}/w{i}", proxy=gw.proxy_url, timeout=10).status_code == 200
    per_worker = metric(gw, "egress_worker_requests_total", worker="0"), metric(gw, "egress_worker_requests_total", worker="1")
    assert all(n > 0 for n in per_worker), per_worker
    wait_until(lambda: len(captures(gw.data_dir)) == 40, 20, "40 records from two workers")
    gw.stop()
    gw.extra_args = []
    gw.start()
    assert httpx.get(f"http://api.example.test:{origin.port}/after", proxy=gw.proxy_url, timeout=10).status_code == 200
    wait_until(lambda: len(captures(gw.data_dir)) == 41, 20, "the old records and the new one")
    records = captures(gw.data_dir)
    ids = [r["id"] for r in records]
    assert len(set(ids)) == 41 and ids == sorted(ids)
    assert records[-1]["url"].endswith("/after")


AI_KEY = "sk-AI-SECRET-inline"


def test_an_ai_provider_request_carries_gen_ai_attributes_and_never_its_key(
    gateway, origin_ca: TestCA, gateway_ca: tuple[Path, str], tmp_path: Path
) -> None:
    cert, key = origin_ca.issue("api.example.test", "llm.example.test").write(tmp_path / "ai-origin", "origin")
    pem = textwrap.indent(origin_ca.cert_pem.decode(), "    ")
    with CaptureOrigin(cert, key) as origin, OtlpCollector() as collector:
        gw = gateway(
            f"""
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: deny-all
  listeners:
  - {{name: https, protocol: HTTPS, tls: {{mode: Terminate, caCertRef: {{name: egress-ca}}}}}}
  otlp: {{endpoint: '{collector.endpoint}'}}
  upstreamTLS:
    additionalTrustBundleSecretRef: {{name: origin-ca}}
    hostAliases:
    - {{ip: 127.0.0.1, hostnames: [llm.example.test, api.example.test]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: llm}}
spec:
  parentRefs: [{{name: eg, sectionName: https}}]
  hostnames: [llm.example.test]
  rules:
  - backendRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: ai}}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: ai}}
spec:
  type: AI
  ai:
    llm:
      openai:
        model: gpt-4o-mini
        authToken: {{kind: Inline, inline: {AI_KEY}}}
        hostOverride: {{host: api.example.test, port: {origin.port}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: origin-ca}}
stringData:
  ca.crt: |
{pem}
""",
            gateway_ca[1],
        )
        ctx = ssl.create_default_context(cafile=str(gateway_ca[0]))
        with httpx.Client(proxy=gw.proxy_url, verify=ctx, timeout=15) as client:
            r = client.post("https://llm.example.test/v1/chat/completions",
                            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        seen = origin.server.seen[-1]
        assert seen[2]["authorization"] == f"Bearer {AI_KEY}"  # the key was injected on the way
        rec = wait_for(lambda: captures(gw.data_dir), lambda r: r.get("kind") == "request")
        assert rec["provider"] == "openai" and rec["backend"] == "default/ai"
        assert rec["request"]["headers"]["authorization"] == "[REDACTED]"
        wait_until(lambda: collector.logs)
        attrs = collector.logs[-1].attributes
        assert attrs["gen_ai.provider.name"] == "openai" and attrs["gen_ai.request.model"] == "gpt-4o-mini"
        assert "gen_ai.system" not in attrs
        gw.stop()
        for path in [*gw.data_dir.glob("captures.db*"), gw.log_path]:
            assert AI_KEY.encode() not in path.read_bytes(), path.name
        assert all(AI_KEY not in log.body for log in collector.logs)
