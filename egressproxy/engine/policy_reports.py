"""Report mode (DESIGN.md 4.2): a denial a Report-mode policy would have made is counted, logged and shown on
the flow, and the request goes on. One place, so every deny-type policy reports the same way. Also the region
checks of a request, added to the flow's decision trace (mitmweb shows the same checks `explain` prints)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from mitmproxy import http

from egressproxy.engine.answers import flow_record
from egressproxy.flowrecord import Check
from egressproxy.metrics import GatewayMetrics
from egressproxy.regions import RegionCheck
from egressproxy.request_policies import PolicyReport

__all__ = ["note_region_checks", "note_reports"]

log = logging.getLogger("egressproxy")


def note_reports(metrics: GatewayMetrics, flow: http.HTTPFlow, reports: Iterable[PolicyReport]) -> None:
    """`egress_policy_reports_total{reason, policy}` +1, one info line and a trace step per report."""
    for report in reports:
        metrics.policy_reports.labels(report.reason, report.policy).inc()
        log.info("report: %s would deny %s %s with %s (enforcementMode Report): %s", report.policy,
                 flow.request.method, flow.request.pretty_host, report.reason, report.message)
        flow_record(flow).checks.append(Check("report", report.policy, "report", report.reason))


def note_region_checks(flow: http.HTTPFlow, checks: Iterable[RegionCheck]) -> None:
    """One trace step per region check: `region RegionAllowListPolicy/ns/name: deny (<region and source>)`."""
    flow_record(flow).checks.extend(Check("region", c.policy.name, c.verdict, detail=c.detail) for c in checks)
