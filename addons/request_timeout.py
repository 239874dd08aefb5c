"""`requestTimeout` (default 5m) bounds each request from its headers to the end of its response.

An HTTPRoute rule's `timeouts.request` (Gateway API), else a TrafficPolicy's, overrides it for the requests that
rule matches. A rule's `timeouts.backendRequest` bounds the one backend request of a request sent straight to its
candidate, from when its body was read (a request walked by the failover hop gets it per attempt there).

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
        self.backend_timers: dict[str, asyncio.TimerHandle] = {}  # flow id -> timeouts.backendRequest timer

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

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        frec = flow_record(flow)
        backend = frec.attempt_timeout
        if flow.response is not None or frec.hop is not None or not backend or backend <= 0:
            return
        loop = asyncio.get_running_loop()
        # Whichever comes first: the request timeout armed at the headers, or the backend request's.
        self.backend_timers[flow.id] = loop.call_later(backend, self._expire, flow)

    def _expire(self, flow: http.HTTPFlow) -> None:
        self._cancel(flow)
        if not flow.live or (flow.response is not None and flow.response.timestamp_end):
            return
        flow_record(flow).error = "upstream-timeout"
        self.state.metrics.upstream_errors.labels("upstream-timeout").inc()
        if not close_upstream(flow, "egress: upstream response timeout") and flow.killable:
            flow.kill()

    def _cancel(self, flow: http.HTTPFlow) -> None:
        for timers in (self.timers, self.backend_timers):
            handle = timers.pop(flow.id, None)
            if handle is not None:
                handle.cancel()

    def response(self, flow: http.HTTPFlow) -> None:
        self._cancel(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._cancel(flow)
