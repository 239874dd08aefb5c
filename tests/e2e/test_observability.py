"""Token metrics, access logs and tracing through the real gateway process.

- `gen_ai_client_token_usage` for OpenAI and Anthropic, unstreamed (JSON) and streamed (SSE), from a fake
  provider behind AI Backends; the model label is the one the client asked for, not the configured rewrite.
- Access log lines (JSON, Envoy command operators) for an allowed request and for denials, with credentials
  redacted; the otel sink's OTLP log records at a decoding collector on loopback.
- Tracing: the client's trace id reaches the origin in a new `traceparent`, the span reaches the collector, and
  a collector that is down leaves traffic unaffected.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import GatewayProcess, free_port
from tests.support.llm_origin import LlmOrigin
from tests.support.origins import HttpOrigin
from tests.support.otlp_collector import OtlpCollector, OtlpGrpcCollector, attributes_of

pytestmark = pytest.mark.e2e

GATEWAY = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: http, protocol: HTTP}
  upstreamTLS:
    hostAliases:
    - {ip: 127.0.0.1, hostnames: [api.example.test, openai.example.test, anthropic.example.test]}
"""


def route(name: str, host: str, backend: str | None = None) -> str:
    rule = f"- backendRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: {backend}}}]" if backend else "- {}"
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}}}
spec:
  parentRefs: [{{name: eg, sectionName: http}}]
  hostnames: [{host}]
  rules:
  {rule}
"""


def ai_backend(name: str, provider: str, port: int, model: str) -> str:
    return f"""
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: {name}}}
spec:
  type: AI
  ai:
    llm:
      {provider}:
        model: {model}
        hostOverride: {{host: 127.0.0.1, port: {port}, scheme: http}}
"""


def listener_policy(body: str) -> str:
    spec = "".join(f"\n  {line}" for line in body.strip("\n").splitlines())
    return f"""
apiVersion: gateway.kgateway.dev/v1alpha1
kind: HTTPListenerPolicy
metadata: {{name: observability}}
spec:
  targetRefs: [{{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}}]{spec}
"""


def client(gw: GatewayProcess, identity: str = "team-a/agent") -> httpx.Client:
    return httpx.Client(proxy=httpx.Proxy(gw.proxy_url, auth=(identity, "unused")), timeout=15)


def metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    total = 0.0
    for found, value in re.findall(rf"^{name}\{{([^}}]*)\}} ([0-9.e+]+)$", gw.metrics(), re.M):
        if all(f'{k}="{v}"' in found for k, v in labels.items()):
            total += float(value)
    return total


def wait_for(condition: Callable[[], object], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)


# --- token metrics ----------------------------------------------------------------------------------------------


@pytest.fixture
def llm() -> Iterator[LlmOrigin]:
    with LlmOrigin(input_tokens=20, output_tokens=10) as origin:
        origin.gate.set()  # streams run straight through (event-by-event delivery is test_rate_limits' concern)
        yield origin


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_token_usage_histogram_for_openai_and_anthropic(gateway, llm: LlmOrigin, stream: bool) -> None:
    gw = gateway(
        GATEWAY,
        route("openai", "openai.example.test", "openai"),
        route("anthropic", "anthropic.example.test", "anthropic"),
        ai_backend("openai", "openai", llm.port, "configured-gpt"),
        ai_backend("anthropic", "anthropic", llm.port, "configured-claude"),
    )
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": stream}
    with client(gw) as c:
        r = c.post("http://openai.example.test/v1/chat/completions", json={**body, "model": "gpt-4o-mini"})
        assert r.status_code == 200, r.text + gw.logs()
        if stream:
            assert '"total_tokens": 30' in r.text  # the stream arrived whole, usage chunk included
        r = c.post("http://anthropic.example.test/v1/messages", json={**body, "model": "claude-3-5-haiku", "max_tokens": 5})
        assert r.status_code == 200, r.text + gw.logs()

    def observed(provider: str, model: str, kind: str, what: str) -> float:
        return metric(gw, f"gen_ai_client_token_usage_{what}", gen_ai_provider_name=provider,
                      gen_ai_request_model=model, gen_ai_token_type=kind)

    for provider, model in (("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku")):
        assert observed(provider, model, "input", "count") == 1, gw.metrics()
        assert observed(provider, model, "input", "sum") == 20
        assert observed(provider, model, "output", "sum") == 10
        assert observed(provider, model, "input", "bucket") > 0  # a histogram, with buckets
    assert "configured-gpt" not in gw.metrics()  # the label is the model the client asked for


# --- access logs ------------------------------------------------------------------------------------------------

ACCESS_FORMAT = """
accessLog:
- fileSink:
    path: {path}
    jsonFormat:
      start: "%START_TIME%"
      method: "%REQ(:METHOD)%"
      path: "%REQ(:PATH)%"
      authority: "%REQ(:AUTHORITY)%"
      agent: "%REQ(USER-AGENT)%"
      auth: "%REQ(AUTHORIZATION)%"
      proxy_auth: "%REQ(PROXY-AUTHORIZATION)%"
      content_type: "%RESP(CONTENT-TYPE)%"
      code: "%RESPONSE_CODE%"
      details: "%RESPONSE_CODE_DETAILS%"
      duration: "%DURATION%"
      upstream: "%UPSTREAM_HOST%"
      received: "%BYTES_RECEIVED%"
      sent: "%BYTES_SENT%"
      protocol: "%PROTOCOL%"
      flags: "%RESPONSE_FLAGS%"
      client: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
      identity: "%EGRESS_IDENTITY%"
      route: "%ROUTE_NAME%"
"""


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_access_log_lines_for_an_allowed_request_and_denials(gateway, plain_origin, tmp_path: Path) -> None:
    origin: HttpOrigin = plain_origin(name="api")
    path = tmp_path / "access.log"
    gw = gateway(GATEWAY, route("api", "api.example.test"), listener_policy(ACCESS_FORMAT.format(path=path)))
    with client(gw) as c:
        ok = c.post(f"http://api.example.test:{origin.port}/v1/things?key=query-secret", content=b"0123456789",
                    headers={"authorization": "Bearer sk-client-secret", "user-agent": "agent/1"})
        assert ok.status_code == 200, ok.text + gw.logs()
        denied = c.get("http://elsewhere.example.test/")
        assert denied.status_code == 403
    with httpx.Client(proxy=httpx.Proxy(gw.proxy_url, auth=("team-b/bot", "x")), verify=False, timeout=10) as c:
        with pytest.raises(httpx.ProxyError):
            c.get("https://blocked.example.test/")  # a denied CONNECT: a request too

    wait_for(lambda: len(read_lines(path)) == 3, "three access-log lines")
    allowed, no_route, connect = read_lines(path)
    assert allowed["method"] == "POST" and allowed["path"] == "/v1/things?key=<redacted>"
    assert allowed["authority"] == f"api.example.test:{origin.port}"
    # Proxy-Authorization is taken off the request before anything sees it; were it there, it would print redacted
    assert (allowed["agent"], allowed["auth"], allowed["proxy_auth"]) == ("agent/1", "<redacted>", None)
    assert (allowed["code"], allowed["details"], allowed["flags"]) == (200, None, "-")
    assert allowed["content_type"] == "application/json"
    assert allowed["upstream"] == f"127.0.0.1:{origin.port}"
    assert allowed["received"] == 10 and isinstance(allowed["sent"], int) and allowed["sent"] > 0
    assert isinstance(allowed["duration"], int) and allowed["protocol"] == "HTTP/1.1"
    assert allowed["client"] == "127.0.0.1" and allowed["identity"] == "team-a/agent"
    assert allowed["route"] == "default/api" and re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", str(allowed["start"]))
    assert (no_route["code"], no_route["details"], no_route["upstream"]) == (403, "no-route", None)
    assert no_route["authority"] == "elsewhere.example.test"
    assert (connect["method"], connect["code"], connect["details"]) == ("CONNECT", 403, "no-route")
    assert connect["identity"] == "team-b/bot"
    text = path.read_text()
    for secret in ("sk-client-secret", "query-secret", "dGVhbS1h"):  # dGVhbS1h: base64 of the proxy user
        assert secret not in text

    logs = gw.logs()
    assert re.search(r"denied GET elsewhere\.example\.test: reason=no-route policy=EgressGateway/default/eg "
                     r"identity=team-a/agent", logs), logs
    assert "denied CONNECT blocked.example.test: reason=no-route" in logs


def test_without_an_access_log_each_denial_is_one_info_line(gateway) -> None:
    gw = gateway(GATEWAY)
    with client(gw, "team-c/job") as c:
        assert c.get("http://nowhere.example.test/a?key=s3cret").status_code == 403
    wait_for(lambda: "denied GET nowhere.example.test" in gw.logs(), "the denial's log line")
    lines = [line for line in gw.logs().splitlines() if "nowhere.example.test" in line and "denied" in line]
    assert len(lines) == 1, lines
    assert "reason=no-route" in lines[0] and "identity=team-c/job" in lines[0] and "s3cret" not in lines[0]


def test_access_log_file_is_reopened_when_rotated_away(gateway, plain_origin, tmp_path: Path) -> None:
    origin = plain_origin(name="api")
    path = tmp_path / "access.log"
    gw = gateway(GATEWAY, route("api", "api.example.test"), listener_policy(ACCESS_FORMAT.format(path=path)))
    with client(gw) as c:
        assert c.get(f"http://api.example.test:{origin.port}/one").status_code == 200
        wait_for(lambda: len(read_lines(path)) == 1, "the first line")
        path.rename(tmp_path / "access.log.1")  # logrotate moves the file away, then signals (SIGHUP)
        assert gw.proc is not None
        gw.proc.send_signal(1)
        wait_for(lambda: "configuration reloaded (SIGHUP)" in gw.logs(), "the SIGHUP reload")
        assert c.get(f"http://api.example.test:{origin.port}/two").status_code == 200
    wait_for(lambda: len(read_lines(path)) == 1, "a line in the new file")
    assert [line["path"] for line in read_lines(tmp_path / "access.log.1")] == ["/one"]
    assert [line["path"] for line in read_lines(path)] == ["/two"]


def test_otel_access_log_sink_exports_otlp_log_records(gateway, plain_origin) -> None:
    origin = plain_origin(name="api")
    with OtlpCollector() as collector:
        gw = gateway(GATEWAY, route("api", "api.example.test"), listener_policy(
            f"accessLog:\n- otel: {{endpoint: '{collector.url}', protocol: http/protobuf}}"))
        with client(gw) as c:
            assert c.get(f"http://api.example.test:{origin.port}/x", headers={"authorization": "Bearer sk-otlp"}).status_code == 200
            assert c.get("http://denied.example.test/").status_code == 403
        wait_for(lambda: len(collector.logs) == 2, "two log records at the collector")
        records = sorted((attributes_of(r) for r in collector.logs), key=lambda a: a["http.response.status_code"])
        assert records[0]["http.request.method"] == "GET" and records[0]["url.path"] == "/x"
        assert records[0]["egress.identity"] == "team-a/agent" and records[0]["egress.route"] == "default/api"
        assert (records[1]["http.response.status_code"], records[1]["egress.reason"]) == (403, "no-route")
        assert "sk-otlp" not in repr(collector.logs)


# --- tracing ----------------------------------------------------------------------------------------------------

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def tracing(endpoint: str, extra: str = "") -> str:
    return listener_policy(f"""{extra}
tracing:
  provider: {{otel: {{httpAddress: "{endpoint}", protocol: http/protobuf}}}}
  samplingRate: 100
  customTags:
    team: {{literal: payments}}
    agent: {{requestHeader: X-Agent}}
    secret: {{requestHeader: Authorization}}
""")


def test_traceparent_is_propagated_and_spans_exported(gateway, plain_origin) -> None:
    origin = plain_origin(name="api")
    with OtlpCollector() as collector:
        gw = gateway(GATEWAY, route("api", "api.example.test"), tracing(collector.url))
        headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "x-agent": "bot-7", "authorization": "Bearer sk-span"}
        with client(gw) as c:
            seen = c.get(f"http://api.example.test:{origin.port}/v1/x?key=q", headers=headers).json()
            fresh = c.get(f"http://api.example.test:{origin.port}/v1/y").json()  # no parent: a new trace
        version, trace_id, span_id, flags = seen["headers"]["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", CLIENT_TRACE, "01")  # the client's trace id kept
        assert span_id != CLIENT_SPAN  # our span is the parent upstream
        fresh_trace = fresh["headers"]["traceparent"].split("-")
        assert re.match(r"[0-9a-f]{32}$", fresh_trace[1]) and fresh_trace[1] != CLIENT_TRACE
        assert int(fresh_trace[3], 16) & 1  # sampled (the random-trace-id flag may be set too)
        wait_for(lambda: len(collector.spans) == 2, "two spans at the collector")
        spans = {span.trace_id.hex(): (service, span) for service, span in collector.spans}
        service, span = spans[CLIENT_TRACE]
        assert service == "egressproxy"
        assert span.span_id.hex() == span_id and span.parent_span_id.hex() == CLIENT_SPAN
        attrs = attributes_of(span)
        assert attrs["http.request.method"] == "GET" and attrs["url.path"] == "/v1/x"
        assert attrs["http.response.status_code"] == 200 and attrs["egress.route"] == "default/api"
        assert (attrs["team"], attrs["agent"], attrs["secret"]) == ("payments", "bot-7", "<redacted>")
        assert "sk-span" not in repr(collector.spans)


def test_sampling_rate_zero_exports_nothing_but_still_propagates(gateway, plain_origin) -> None:
    origin = plain_origin(name="api")
    with OtlpCollector() as collector:
        gw = gateway(GATEWAY, route("api", "api.example.test"),
                     tracing(collector.url).replace("samplingRate: 100", "samplingRate: 0"))
        with client(gw) as c:
            seen = c.get(f"http://api.example.test:{origin.port}/").json()
            sampled = c.get(f"http://api.example.test:{origin.port}/",
                            headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}).json()
        assert not int(seen["headers"]["traceparent"].split("-")[3], 16) & 1  # not sampled, yet sent upstream
        assert sampled["headers"]["traceparent"].split("-")[1] == CLIENT_TRACE
        wait_for(lambda: len(collector.spans) == 1, "the span the client's sampled parent asked for")
        assert collector.spans[0][1].trace_id.hex() == CLIENT_TRACE


def test_a_collector_that_is_down_leaves_traffic_unaffected(gateway, plain_origin) -> None:
    origin = plain_origin(name="api")
    dead = free_port()  # nothing listens there
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", dead)) != 0
    access_log = f"\naccessLog:\n- otel: {{endpoint: 'http://127.0.0.1:{dead}', protocol: http/protobuf}}"
    gw = gateway(GATEWAY, route("api", "api.example.test"), tracing(f"http://127.0.0.1:{dead}", access_log))
    started = time.monotonic()
    with client(gw) as c:
        for i in range(20):
            r = c.get(f"http://api.example.test:{origin.port}/{i}")
            assert r.status_code == 200
    assert time.monotonic() - started < 10  # no request waited on the exporters
    # The access-log records that could not be exported are counted, not kept.
    wait_for(lambda: metric(gw, "egress_access_log_drops_total", sink="otel") == 20, "20 counted drops", timeout=30)


def test_unrouted_hosts_under_allow_all_add_no_label_values(gateway, plain_origin) -> None:
    origin = plain_origin(name="api")
    allow_all = GATEWAY.replace("deny-all", "allow-all").replace(
        "hostnames: [api.example.test,", "hostnames: [one.unrouted.test, two.unrouted.test, api.example.test,")
    gw = gateway(allow_all)
    with client(gw) as c:
        for host in ("one.unrouted.test", "two.unrouted.test"):
            assert c.get(f"http://{host}:{origin.port}/some/path/{host}").status_code == 200
    text = gw.metrics()
    assert "unrouted" not in text and "/some/path" not in text
    assert metric(gw, "egress_requests_total", route="none", backend="none", decision="allow") == 2


def test_grpc_collectors_get_access_log_records_and_spans(gateway, plain_origin) -> None:
    """The seeds' default protocol: `otel: {endpoint, protocol: grpc}` and `tracing.provider.otel.grpcAddress`."""
    origin = plain_origin(name="api")
    with OtlpGrpcCollector() as collector:
        policy = listener_policy(f"""
accessLog:
- otel: {{endpoint: "{collector.address}", protocol: grpc}}
tracing:
  provider: {{otel: {{grpcAddress: "{collector.address}"}}}}
""")
        gw = gateway(GATEWAY, route("api", "api.example.test"), policy)
        with client(gw) as c:
            seen = c.get(f"http://api.example.test:{origin.port}/grpc",
                         headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}).json()
        assert seen["headers"]["traceparent"].split("-")[1] == CLIENT_TRACE
        wait_for(lambda: collector.logs and collector.spans, "a log record and a span over gRPC")
        assert attributes_of(collector.logs[0])["url.path"] == "/grpc"
        assert collector.spans[0].trace_id.hex() == CLIENT_TRACE
