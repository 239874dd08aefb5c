"""The decision-trace steps an addon added to a flow's record, as the flow's comment will print them."""

from __future__ import annotations

from mitmproxy import http

from egressproxy.decision_trace import check_line
from egressproxy.engine.answers import flow_record


def trace_lines(flow: http.HTTPFlow) -> list[str]:
    return [check_line(c) for c in flow_record(flow).checks]
