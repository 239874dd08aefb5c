"""TrafficPolicy `ai` on HTTP flows (docs/guardrails.md): the request body through egressproxy/request_guard.py,
the answer through egressproxy/stream_masking.py.

Request: in the `request` hook, on the buffered body, before the body taps copy it (the capture keeps what was
actually sent, masked) and before any upstream candidate is dialled, so a failover replay carries the same
transformed body. A rejection is the DESIGN.md 4.1 denial, reason `prompt-rejected`.

Response (when `promptGuard.response` applies): the request asks for an identity encoding, so the answer can
be read as it streams. An SSE answer keeps streaming, the guard tap first in its chain (masking before token
counting and capture); any other JSON answer (or an SSE one with a Content-Length or a Content-Encoding, which
rewriting would break) is buffered and judged whole in the `response` hook, where a REJECT replaces it with the
denial before a byte is sent. Other content types pass uninspected.

Runs after the routing addon (which wrote `FlowRecord.ai` and turned streaming on) and before the body taps.
"""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import http

from egressproxy.engine.answers import answer_denied, flow_record
from egressproxy.engine.guard import fail_closed
from egressproxy.engine.flow_trace import DENIED_MARKER
from egressproxy.flowrecord import Check, Verdict
from egressproxy.prompt_guard import REJECTED, RegexGuard
from egressproxy.request_guard import guard_request
from egressproxy.runtime.idle_steps import AI_GUARDRAILS_STEP
from egressproxy.runtime.state import GatewayState
from egressproxy.snapshot import Snapshot
from egressproxy.stream_masking import REJECTED_MESSAGE, SseGuardTap, guard_json_response

__all__ = ["AiGuardrails"]

log = logging.getLogger("egressproxy")

# Bodies above this are judged in a worker thread (the `regex` module releases the GIL while matching), so a
# megabyte prompt does not stall every other connection; small ones are cheaper judged inline (~0.2 ms).
THREAD_ABOVE = 64 * 1024


class AiGuardrails:
    step = AI_GUARDRAILS_STEP  # idle without any TrafficPolicy `ai`, or for a request given none (runtime/idle_steps.py)

    @staticmethod
    def idle_on(snapshot: Snapshot) -> bool:
        return not snapshot.compiled.ai

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.buffered: set[str] = set()  # flow ids whose answer is judged whole in `response`

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        policy = flow_record(flow).ai
        if flow.response is not None or policy is None:
            return
        if policy.response is not None:
            flow.request.headers["accept-encoding"] = "identity"
        body = flow.request.get_content(strict=False)
        if not body:
            return
        if len(body) > THREAD_ABOVE:
            outcome = await asyncio.to_thread(guard_request, policy, flow.request.path, body)
        else:
            outcome = guard_request(policy, flow.request.path, body)
        for report in outcome.reports:
            self._report(flow, report)
        if outcome.verdict is not None:
            self.state.metrics.denials.labels(REJECTED).inc()
            answer_denied(flow, outcome.verdict)
        elif outcome.body is not None:
            flow.request.set_content(outcome.body)
        if outcome.steps:  # mitmweb shows what the guardrails did, as explain --body prints it (never a value)
            flow_record(flow).checks.extend(Check("ai", detail=s) for s in outcome.steps)

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        frec = flow_record(flow)
        guard = frec.ai.response if frec.ai is not None else None
        if guard is None:
            return
        headers = flow.response.headers
        content_type = headers.get("content-type", "").lower()
        encoded = headers.get("content-encoding", "identity").lower() not in ("", "identity")
        if "text/event-stream" in content_type and not encoded and "content-length" not in headers:
            tap = SseGuardTap(guard, lambda found: self._stream_rejected(flow, guard, found), self._tap_failed)
            frec.response_taps.insert(0, tap)
        elif "json" in content_type or "text/event-stream" in content_type:
            flow.response.stream = False
            self.buffered.add(flow.id)

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        if flow.id not in self.buffered:
            return
        self.buffered.discard(flow.id)
        frec = flow_record(flow)
        assert flow.response is not None and frec.ai is not None and frec.ai.response is not None
        guard = frec.ai.response
        body = flow.response.get_content(strict=False) or b""
        if "text/event-stream" in flow.response.headers.get("content-type", "").lower():
            tap = SseGuardTap(guard)
            masked: bytes | None = tap.chunk(body) + tap.end()
            found = "a detector" if tap.rejected or tap.reported else None
        else:
            masked, found = guard_json_response(guard, body)
        if found is not None and guard.report:
            self._report(flow, Verdict.deny(REJECTED, guard.policy, REJECTED_MESSAGE))
        elif found is not None:
            self.state.metrics.denials.labels(REJECTED).inc()
            answer_denied(flow, Verdict.deny(REJECTED, guard.policy, REJECTED_MESSAGE))
        elif masked is not None and masked != body:
            flow.response.set_content(masked)

    def error(self, flow: http.HTTPFlow) -> None:
        self.buffered.discard(flow.id)

    def _tap_failed(self, error: BaseException) -> None:
        self.state.metrics.tap_errors.labels(SseGuardTap.name).inc()

    def _report(self, flow: http.HTTPFlow, verdict: Verdict) -> None:
        """What a Report-mode policy would have denied: counted, logged and noted on the flow; it passes."""
        self.state.metrics.policy_reports.labels(verdict.reason, verdict.policy).inc()
        log.info("report: %s would deny %s %s (%s; enforcementMode Report)", verdict.policy, flow.request.method,
                 flow_record(flow).host, verdict.reason)
        flow_record(flow).checks.append(Check("report", verdict.policy, "report", verdict.reason))

    def _stream_rejected(self, flow: http.HTTPFlow, guard: RegexGuard, found: str) -> None:
        """A REJECT response guard ended a stream: its status is already sent; the record says why."""
        if guard.report:
            self._report(flow, Verdict.deny(REJECTED, guard.policy, REJECTED_MESSAGE))
            return
        self.state.metrics.denials.labels(REJECTED).inc()
        frec = flow_record(flow)
        frec.verdict = Verdict.deny(REJECTED, guard.policy, REJECTED_MESSAGE)
        flow.marked = DENIED_MARKER
        log.info("%s: %s ended a streamed answer to %s (%s found)", REJECTED, guard.policy, frec.host, found)
