"""`requestTimeout` (default 5m) bounds each request from its headers to the end of its response.

An HTTPRoute rule's `timeouts.request` (Gateway API) overrides it for the requests that rule matches.

A timer per request; when it fires before the response has started, the client gets 504 `upstream-timeout`;
when the response is already streaming, the connection is closed (the status was already sent).
"""

from __future__ import annotations

import asyncio

from mitmproxy import http

from egressproxy.engine.answers import flow_record
from egressproxy.engine.guard import fail_closed
from egressproxy.engine.mitmproxy_boundary import close_upstream
from egressproxy.runtime.state import GatewayState


class RequestTimeout:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.timers: dict[str, asyncio.TimerHandle] = {}  # flow id -> timer (not in metadata: it must stay copyable)

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        snapshot = self.state.snapshot
        if snapshot is None or flow.response is not None:
            return
        rule_timeout = flow_record(flow).request_timeout  # set by the route decision, which runs before us
        timeout = rule_timeout if rule_timeout is not None else snapshot.gateway.request_timeout
        if timeout and timeout > 0:
            loop = asyncio.get_running_loop()
            self.timers[flow.id] = loop.call_later(timeout, self._expire, flow)

    def _expire(self, flow: http.HTTPFlow) -> None:
        self.timers.pop(flow.id, None)
        if not flow.live or (flow.response is not None and flow.response.timestamp_end):
            return
        flow_record(flow).error = "upstream-timeout"
        self.state.metrics.upstream_errors.labels("upstream-timeout").inc()
        if not close_upstream(flow, "egress: upstream response timeout") and flow.killable:
            flow.kill()

    def _cancel(self, flow: http.HTTPFlow) -> None:
        handle = self.timers.pop(flow.id, None)
        if handle is not None:
            handle.cancel()

    def response(self, flow: http.HTTPFlow) -> None:
        self._cancel(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._cancel(flow)
