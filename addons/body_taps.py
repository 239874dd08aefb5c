"""Request and response bodies through the one tap chain (seam 5); the capped copies land in the flow record.

Responses stream (the routing addon sets `stream = True` in `responseheaders`: never buffer a whole response);
this addon, placed after it, turns that into the tap chain, which mitmproxy calls with each chunk and a final
b"". A response that is not streamed (an answer of the gateway's own, a denial, or one another addon chose to
buffer) goes through the same chain once, whole, in the `response` hook.

Request bodies are not streamed: they stay buffered as mitmproxy reads them (within `body_size_limit`), because
decisions taken on the `request` hook (guardrails, token limits, failover's replay buffer) must see the whole
body before any byte goes upstream. They pass through the chain once, as one chunk, in the `request` hook.

A response's chain holds the taps other addons put on `FlowRecord.response_taps` (token counting for rate
limits), then the capture copy of at most `captureBody.maxBytes` per direction; masking will go first.
"""

from __future__ import annotations

from mitmproxy import http

from egressproxy.capture_records import keeps_body_of
from egressproxy.engine.answers import flow_record
from egressproxy.engine.guard import fail_closed
from egressproxy.runtime.state import GatewayState
from egressproxy.taps import CappedCopy, Tap, TapChain

__all__ = ["BodyTaps"]


class BodyTaps:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.response_copies: dict[str, CappedCopy] = {}  # flow id -> the copy tap of a streaming response

    def _chain(self, before: list[Tap] | None = None, content_type: str | None = None) -> tuple[TapChain, CappedCopy]:
        """The chain: taps other addons asked for (`FlowRecord.response_taps`: token counting, ...), then the copy.

        A response whose Content-Type capture never keeps gets a copy of 0 bytes (it still counts the size): a
        thousand streams or downloads of such a type held open must not each carry `maxBytes` of copy nobody reads.
        """
        snapshot = self.state.snapshot
        limit = snapshot.gateway.capture_max_bytes if snapshot is not None else 0
        if content_type is not None and snapshot is not None and not keeps_body_of(
            content_type, snapshot.gateway.capture_content_types
        ):
            limit = 0
        copy = CappedCopy(limit)
        taps: list[Tap] = [*(before or ()), copy]  # later: guardrail masking first
        return TapChain(taps, on_error=self._tap_failed), copy

    def _tap_failed(self, tap: Tap, error: BaseException) -> None:
        self.state.metrics.tap_errors.labels(tap.name).inc()

    def _whole(self, body: bytes, before: list[Tap] | None = None, content_type: str | None = None) -> tuple[bytes, CappedCopy]:
        chain, copy = self._chain(before, content_type)
        out = chain.feed(body) if body else b""
        return out + chain.finish(), copy

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        body = flow.request.raw_content
        if body is None:
            return  # streamed by a host tool's choice: nothing buffered to pass through
        out, copy = self._whole(body)
        if out != body:
            flow.request.raw_content = out
        flow_record(flow).request_body = copy.result()

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        if flow.response.stream is True:
            content_type = flow.response.headers.get("content-type", "")
            chain, copy = self._chain(flow_record(flow).response_taps, content_type)
            flow.response.stream = chain
            self.response_copies[flow.id] = copy

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        copy = self.response_copies.pop(flow.id, None)
        if copy is None:
            body = flow.response.raw_content
            if body is None:
                return
            content_type = flow.response.headers.get("content-type", "")
            out, copy = self._whole(body, flow_record(flow).response_taps, content_type)
            if out != body:
                flow.response.raw_content = out
        flow_record(flow).response_body = copy.result()

    def error(self, flow: http.HTTPFlow) -> None:
        copy = self.response_copies.pop(flow.id, None)
        if copy is not None:
            flow_record(flow).response_body = copy.result()  # what passed before the failure
