"""Per-request metrics from the finished flow record (labels of DESIGN.md 4.1), and mitmweb annotations."""

from __future__ import annotations

import time

from mitmproxy import http

from egressproxy.engine.answers import flow_record
from egressproxy.metrics import status_class
from egressproxy.runtime.state import GatewayState


class FlowMetrics:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def response(self, flow: http.HTTPFlow) -> None:
        self._observe(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._observe(flow)

    def _observe(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get("egress_observed"):
            return
        flow.metadata["egress_observed"] = True
        record = flow_record(flow)
        status = flow.response.status_code if flow.response is not None else None
        labels = (
            record.gateway or "none",
            record.listener or "none",
            record.route or "none",
            record.backend or "none",
            record.identity.namespace,
            record.identity.service_account,
            record.decision,
            status_class(status),
        )
        self.state.metrics.requests.labels(*labels).inc()
        self.state.metrics.request_duration.labels(*labels).observe(time.monotonic() - record.started)
        self.state.metrics.worker_requests.labels(str(self.state.worker)).inc()
        if not flow.comment:
            flow.comment = _describe(record)


def _describe(record: object) -> str:
    parts = []
    for name in ("listener", "route", "backend"):
        value = getattr(record, name, None)
        if value:
            parts.append(f"{name}={value}")
    parts.append(f"verdict={getattr(record, 'decision', 'unknown')}")
    return " ".join(parts)
