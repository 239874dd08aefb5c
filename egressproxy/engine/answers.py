"""Turning a Verdict or a gateway error into a mitmproxy Response on a flow, and marking it for mitmweb (the
comment, the whole decision trace, is written when the flow ends: egressproxy/engine/flow_trace.py)."""

from __future__ import annotations

from mitmproxy import http

from egressproxy.engine.flow_trace import DENIED_MARKER, ERROR_MARKER
from egressproxy.flowrecord import RECORD_KEY, FlowRecord, Verdict
from egressproxy.responses import GatewayAnswer, denial, gateway_error

__all__ = ["answer_denied", "denial_response", "make_response", "error_response", "flow_record"]


def flow_record(flow: http.HTTPFlow) -> FlowRecord:
    record = flow.metadata.get(RECORD_KEY)
    if not isinstance(record, FlowRecord):
        record = flow.metadata[RECORD_KEY] = FlowRecord()
    return record


def make_response(answer: GatewayAnswer) -> http.Response:
    response = http.Response.make(answer.status, answer.body)
    response.headers.clear()
    for name, value in answer.headers:
        response.headers.add(name, value)
    response.headers["content-length"] = str(len(answer.body))
    return response


def answer_denied(flow: http.HTTPFlow, verdict: Verdict) -> None:
    record = flow_record(flow)
    record.verdict = verdict
    flow.response = make_response(denial(verdict))
    flow.marked = DENIED_MARKER  # the comment (the whole trace) is written when the flow ends


def denial_response(flow: http.HTTPFlow, verdict: Verdict) -> http.Response:
    """The denial as a Response object, for answers given where mitmproxy sends the response (a refused dial)."""
    record = flow_record(flow)
    record.verdict = verdict
    flow.marked = DENIED_MARKER
    return make_response(denial(verdict))


def error_response(flow: http.HTTPFlow, reason: str, detail: str) -> http.Response:
    record = flow_record(flow)
    record.error, record.error_detail = reason, detail
    flow.marked = ERROR_MARKER
    return make_response(gateway_error(reason, detail))
