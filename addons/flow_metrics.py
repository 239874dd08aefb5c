"""Each HTTP request ends in one finished record for the sinks (metrics among them), and a mitmweb annotation.

The record is finished once, at the end of the response (`response` fires after a streamed body's last chunk)
or at the error that ended the request, from the flow's record that the deciding addons wrote.
"""

from __future__ import annotations

import time

from mitmproxy import http

from egressproxy.capture_records import CapturePlan, CapturePlans, redacted_headers, redacted_url
from egressproxy.engine.answers import flow_record
from egressproxy.flowrecord import FinishedRequest, FlowRecord
from egressproxy.runtime.state import GatewayState

__all__ = ["FlowMetrics"]


class FlowMetrics:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.plans = CapturePlans()

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def _finish(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get("egress_observed"):
            return
        flow.metadata["egress_observed"] = True
        record = flow_record(flow)
        connection = self.state.connections.get(flow.client_conn.id)
        if connection is not None:
            connection.requests += 1
            connection.request_listener, connection.request_route = record.listener, record.route
        plan = self.plans.plan(self.state.snapshot, record)
        sni = connection.sni if connection else None
        self.state.sinks.request_finished(finished_request(flow, record, sni, plan))
        if not flow.comment:
            flow.comment = _describe(record)


def finished_request(
    flow: http.HTTPFlow, record: FlowRecord, sni: str | None, plan: CapturePlan | None = None
) -> FinishedRequest:
    """The finished record, its headers and URL redacted by `plan` (credential values never reach a sink)."""
    plan = plan or CapturePlan()
    response = flow.response
    return FinishedRequest(
        gateway=record.gateway,
        listener=record.listener,
        route=record.route,
        backend=record.backend,
        identity=record.identity,
        verdict=record.verdict,
        decision=record.decision,
        error=record.error,
        host=record.host,
        sni=sni,
        method=flow.request.method,
        url=redacted_url(flow.request.url, plan.redact_query),
        status=response.status_code if response is not None else None,
        started=flow.request.timestamp_start,
        duration=max(0.0, time.monotonic() - record.started),
        request_body=record.request_body,
        response_body=record.response_body,
        request_headers=redacted_headers(_fields(flow.request.headers), plan.redact_headers),
        response_headers=redacted_headers(_fields(response.headers), plan.redact_headers) if response else (),
        capture=plan,
    )


def _fields(headers: http.Headers) -> list[tuple[str, str]]:
    return [(n.decode("latin-1"), v.decode("utf-8", "replace")) for n, v in headers.fields]


def _describe(record: FlowRecord) -> str:
    parts = []
    for name in ("listener", "route", "backend"):
        value = getattr(record, name, None)
        if value:
            parts.append(f"{name}={value}")
    parts.append(f"verdict={record.decision}")
    return " ".join(parts)
