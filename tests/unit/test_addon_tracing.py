"""addons/tracing.py with mitmproxy's test helpers: a span per request on a traced listener, ours sent upstream."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from mitmproxy.test import taddons, tflow
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from addons.tracing import RequestTracing
from egressproxy.engine.answers import flow_record
from egressproxy.observability_settings import OtlpTarget, TracingSettings
from egressproxy.runtime.state import GatewayState
from egressproxy.tracing import Tracing

SETTINGS = TracingSettings("HTTPListenerPolicy/default/t", OtlpTarget("http://127.0.0.1:1", "http"))
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def addon_for(tmp_path: Path) -> tuple[RequestTracing, Tracing]:
    state = GatewayState(tmp_path)
    compiled = SimpleNamespace(tracing_for=lambda listener: SETTINGS if listener == "traced" else None,
                               redacted_headers=frozenset())
    state.snapshot = SimpleNamespace(compiled=compiled)  # type: ignore[assignment]
    tracing = Tracing(span_exporter=lambda _: InMemorySpanExporter())
    return RequestTracing(state, tracing), tracing


def test_a_request_on_a_traced_listener_goes_upstream_with_our_traceparent(tmp_path: Path) -> None:
    addon, tracing = addon_for(tmp_path)
    flow = tflow.tflow()
    flow_record(flow).listener = "traced"
    flow.request.headers["traceparent"] = f"00-{TRACE}-00f067aa0ba902b7-01"
    with taddons.context(addon):
        addon.requestheaders(flow)
    record = flow_record(flow)
    assert record.trace_id == TRACE and record.span_id is not None
    assert flow.request.headers["traceparent"] == f"00-{TRACE}-{record.span_id}-01"
    assert list(tracing.open) == [record.span_id]


def test_other_listeners_and_connect_requests_get_no_span(tmp_path: Path) -> None:
    addon, tracing = addon_for(tmp_path)
    plain, connect = tflow.tflow(), tflow.tflow()
    flow_record(connect).listener = "traced"
    connect.request.method = "CONNECT"
    with taddons.context(addon):
        addon.requestheaders(plain)
        addon.requestheaders(connect)
    assert "traceparent" not in plain.request.headers and "traceparent" not in connect.request.headers
    assert tracing.open == {}
