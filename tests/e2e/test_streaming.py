"""Streaming (SSE arrives as sent), requestTimeout (504, also cutting long streams) and gateway errors (502)."""

from __future__ import annotations

import ssl
import time

import httpx
import pytest

from tests.support.gateway import free_port

pytestmark = pytest.mark.e2e


def gateway_doc(*, timeout: str | None = None, trust: bool = True) -> str:
    lines = [
        "apiVersion: clrk.apoxy.dev/v1alpha1",
        "kind: EgressGateway",
        "metadata: {name: eg}",
        "spec:",
        "  defaultPolicy: deny-all",
    ]
    if timeout:
        lines.append(f"  requestTimeout: {timeout}")
    lines += [
        "  listeners:",
        "  - name: https",
        "    protocol: HTTPS",
        "    tls: {mode: Terminate, caCertRef: {name: egress-ca}}",
        "  - name: http",
        "    protocol: HTTP",
        "  upstreamTLS:",
    ]
    if trust:
        lines.append("    additionalTrustBundleSecretRef: {name: origin-ca}")
    lines += [
        "    hostAliases:",
        "    - ip: 127.0.0.1",
        "      hostnames: [api.example.test, down.example.test]",
    ]
    return "\n".join(lines) + "\n"


ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: https}, {name: eg, sectionName: http}]
  hostnames: [api.example.test, down.example.test]
"""


def client_for(gw: object, gateway_ca: tuple, **kw: object) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(gateway_ca[0]))
    return httpx.Client(proxy=gw.proxy_url, verify=ctx, timeout=httpx.Timeout(15.0), **kw)  # type: ignore[attr-defined]


def assert_gateway_error(r: httpx.Response, status: int, reason: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["x-egress-error"] == reason
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["reason"] == reason
    assert set(body) == {"error", "reason", "policy"}
    assert "<html" not in r.text.lower()


# --- SSE ------------------------------------------------------------------------------------------------------


def test_sse_events_reach_the_client_as_the_origin_sends_them(gateway, gateway_ca, trust_secret, tls_origin):
    origin = tls_origin("api.example.test")
    gw = gateway(gateway_doc(), ROUTE, gateway_ca[1], trust_secret)
    arrivals: list[tuple[float, str]] = []
    with client_for(gw, gateway_ca) as client:
        start = time.monotonic()
        with client.stream("GET", f"https://api.example.test:{origin.port}/sse?events=3&interval=1") as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data:"):
                    arrivals.append((time.monotonic() - start, line))
        total = time.monotonic() - start
    assert [line.split(" at ")[0] for _, line in arrivals] == ["data: event 0", "data: event 1", "data: event 2"]
    assert arrivals[0][0] < 1.5, arrivals  # the first event was not held back until the stream ended
    assert total >= 2.0
    # each event arrived roughly when the origin wrote it (its timestamp is in the event)
    for elapsed, line in arrivals:
        sent_at = float(line.rsplit(" at ", 1)[1])
        assert time.time() - sent_at < (total - elapsed) + 1.0


def test_sse_longer_than_request_timeout_is_cut_at_request_timeout(gateway, gateway_ca, trust_secret, tls_origin):
    """requestTimeout covers the whole exchange, streams included (DESIGN.md section 4): a stream still running
    when it expires is cut (the status was already sent, so the connection is closed mid-body)."""
    origin = tls_origin("api.example.test")
    gw = gateway(gateway_doc(timeout="2s"), ROUTE, gateway_ca[1], trust_secret)
    events: list[str] = []
    with client_for(gw, gateway_ca) as client:
        start = time.monotonic()
        with pytest.raises(httpx.HTTPError):  # incomplete chunked body: RemoteProtocolError
            with client.stream("GET", f"https://api.example.test:{origin.port}/sse?events=8&interval=1") as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        events.append(line)
        elapsed = time.monotonic() - start
    assert 1 <= len(events) < 8, events
    assert 1.8 <= elapsed < 5.0, elapsed


# --- requestTimeout -------------------------------------------------------------------------------------------


def test_request_timeout_answers_504_upstream_timeout(gateway, gateway_ca, trust_secret, tls_origin):
    origin = tls_origin("api.example.test")
    gw = gateway(gateway_doc(timeout="2s"), ROUTE, gateway_ca[1], trust_secret)
    with client_for(gw, gateway_ca) as client:
        start = time.monotonic()
        r = client.get(f"https://api.example.test:{origin.port}/slow?seconds=5")
        elapsed = time.monotonic() - start
    assert_gateway_error(r, 504, "upstream-timeout")
    assert 1.8 <= elapsed < 4.5, elapsed
    assert 'egress_upstream_errors_total{reason="upstream-timeout"} 1.0' in gw.metrics()


def test_request_timeout_on_plain_http(gateway, gateway_ca, trust_secret, plain_origin):
    origin = plain_origin()
    gw = gateway(gateway_doc(timeout="2s"), ROUTE, gateway_ca[1], trust_secret)
    start = time.monotonic()
    r = httpx.get(f"http://api.example.test:{origin.port}/slow?seconds=5", proxy=gw.proxy_url, timeout=15)
    assert_gateway_error(r, 504, "upstream-timeout")
    assert time.monotonic() - start < 4.5


def test_fast_request_is_not_affected_by_request_timeout(gateway, gateway_ca, trust_secret, tls_origin):
    origin = tls_origin("api.example.test")
    gw = gateway(gateway_doc(timeout="2s"), ROUTE, gateway_ca[1], trust_secret)
    with client_for(gw, gateway_ca) as client:
        r = client.get(f"https://api.example.test:{origin.port}/slow?seconds=1")
    assert r.status_code == 200
    assert r.json()["path"] == "/slow?seconds=1"


# --- gateway errors -------------------------------------------------------------------------------------------


def test_unreachable_upstream_is_502_upstream_unreachable(gateway, gateway_ca, trust_secret):
    closed = free_port()  # nothing listens there
    gw = gateway(gateway_doc(), ROUTE, gateway_ca[1], trust_secret)
    with client_for(gw, gateway_ca) as client:
        r = client.get(f"https://down.example.test:{closed}/")
    assert_gateway_error(r, 502, "upstream-unreachable")
    assert 'egress_upstream_errors_total{reason="upstream-unreachable"} 1.0' in gw.metrics()


def test_unreachable_upstream_on_plain_http(gateway, gateway_ca, trust_secret):
    closed = free_port()
    gw = gateway(gateway_doc(), ROUTE, gateway_ca[1], trust_secret)
    r = httpx.get(f"http://down.example.test:{closed}/", proxy=gw.proxy_url, timeout=15)
    assert_gateway_error(r, 502, "upstream-unreachable")


def test_origin_certificate_the_gateway_does_not_trust_is_502_upstream_tls_invalid(gateway, gateway_ca, tls_origin):
    origin = tls_origin("api.example.test")
    gw = gateway(gateway_doc(trust=False), ROUTE, gateway_ca[1])
    with client_for(gw, gateway_ca) as client:
        r = client.get(f"https://api.example.test:{origin.port}/")
    assert_gateway_error(r, 502, "upstream-tls-invalid")
    assert origin.requests == []


def test_expired_origin_certificate_is_502_upstream_tls_invalid(gateway, gateway_ca, trust_secret, tls_origin):
    origin = tls_origin("api.example.test", expired=True)
    gw = gateway(gateway_doc(), ROUTE, gateway_ca[1], trust_secret)
    with client_for(gw, gateway_ca) as client:
        r = client.get(f"https://api.example.test:{origin.port}/")
    assert_gateway_error(r, 502, "upstream-tls-invalid")
    assert "expired" in r.json()["error"]
    assert origin.requests == []


def test_a_rule_timeout_overrides_the_gateway_request_timeout(gateway, gateway_ca, trust_secret, plain_origin):
    origin = plain_origin()
    route = ROUTE + "  rules:\n  - matches: [{path: {type: PathPrefix, value: /slow}}]\n    timeouts: {request: 1s}\n  - {}\n"
    gw = gateway(gateway_doc(timeout="30s"), route, gateway_ca[1], trust_secret)
    start = time.monotonic()
    r = httpx.get(f"http://api.example.test:{origin.port}/slow?seconds=4", proxy=gw.proxy_url, timeout=15)
    assert_gateway_error(r, 504, "upstream-timeout")
    assert 0.9 <= time.monotonic() - start < 3
    fast = httpx.get(f"http://api.example.test:{origin.port}/other", proxy=gw.proxy_url, timeout=15)
    assert fast.status_code == 200
