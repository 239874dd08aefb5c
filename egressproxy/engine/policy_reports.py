"""Report mode (DESIGN.md 4.2): a denial a Report-mode policy would have made is counted, logged and shown on
the flow, and the request goes on. One place, so every deny-type policy reports the same way."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from mitmproxy import http

from egressproxy.metrics import GatewayMetrics
from egressproxy.request_policies import PolicyReport

__all__ = ["note_reports"]

log = logging.getLogger("egressproxy")


def note_reports(metrics: GatewayMetrics, flow: http.HTTPFlow, reports: Iterable[PolicyReport]) -> None:
    """`egress_policy_reports_total{reason, policy}` +1, one info line and a flow comment per report."""
    for report in reports:
        metrics.policy_reports.labels(report.reason, report.policy).inc()
        log.info("report: %s would deny %s %s with %s (enforcementMode Report): %s", report.policy,
                 flow.request.method, flow.request.pretty_host, report.reason, report.message)
        flow.comment = (flow.comment + "\n" if flow.comment else "") + f"report: {report.reason} by {report.policy}"
