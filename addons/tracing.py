"""A span per request on listeners with HTTPListenerPolicy `tracing` (egressproxy/tracing.py).

Runs after FlowMetrics: on `requestheaders` the client's headers were already taken for the access log, the
listener is decided, and the span starts (its ids on the flow record, so the access log's `%TRACE_ID%` and the
finished record carry them); the upstream request gets our `traceparent`. The span ends in the tracing sink
(egressproxy/tracing.py) when the request's finished record arrives. CONNECT requests get no span of their own.
"""

from __future__ import annotations

from mitmproxy import http

from egressproxy.engine.answers import flow_record
from egressproxy.runtime.state import GatewayState
from egressproxy.snapshot import Snapshot
from egressproxy.tracing import Tracing

__all__ = ["RequestTracing"]


class RequestTracing:
    step = "tracing"  # idle without tracing on the gateway or any listener (egressproxy/runtime/idle_steps.py)

    @staticmethod
    def idle_on(snapshot: Snapshot) -> bool:
        compiled = snapshot.compiled
        return compiled.gateway_tracing is None and not any(compiled.listener_tracing.values())

    def __init__(self, state: GatewayState, tracing: Tracing) -> None:
        self.state = state
        self.tracing = tracing

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Not fail-closed on purpose: a tracing problem costs the span (mitmproxy logs it), never the request."""
        snapshot = self.state.snapshot
        record = flow_record(flow)
        settings = snapshot.compiled.tracing_for(record.listener) if snapshot is not None else None
        if settings is None or flow.request.method == "CONNECT":
            return
        assert snapshot is not None
        request = flow.request
        read = self.tracing.headers_read(settings)
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() in read}
        span = self.tracing.start(
            settings,
            snapshot.compiled.redacted_headers,
            request.method,
            request.scheme,
            record.host or request.pretty_host,
            request.port,
            request.path,
            headers,
            request.timestamp_start,
        )
        if span is None:
            return
        record.trace_id, record.span_id = span.trace_id, span.span_id
        if flow.response is None:
            for name, value in span.upstream_headers.items():
                request.headers[name] = value

