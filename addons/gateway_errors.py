"""502/504 answers with `x-egress-error` when the way upstream fails (unreachable, TLS invalid, timeout).

Answered from typed outcomes (egressproxy/outcomes.py), never from error text: the flow's own failure (the
upstream-TLS addon writes `FlowRecord.failure` when the handshake fails), else the outcome of the dial the
request waited for (the dial guard leaves it on the connection record under the dialled (host, port)). A dial
refused after resolving (SSRF guard: `destination-address-denied`; reverse DNS: `reverse-dns-mismatch`) is a
denial, not a gateway error: the request gets the 403 with `x-egress-denied` and the JSON body, as if a route
had denied it. Only a failure none of our parts saw is classified from mitmproxy's own message.

A dial's failures are counted by the dial guard when they happen (tunnels too); the others here, per request.

A response that breaks after its headers reached the client (the upstream resets or sends a body that cannot be
parsed) cannot be answered any more: mitmproxy closes the client's connection (HTTP/1) or resets its stream
(HTTP/2). The `error` hook counts it (`upstream-reset` / `upstream-protocol-error`) and writes the reason on the
flow's record, so the access log and the capture record mark the request, unless another addon already decided
why it failed (the request timeout cutting a stalled body).
"""

from __future__ import annotations

import logging

from mitmproxy import http

from egressproxy.engine.answers import denial_response, error_response, flow_record
from egressproxy.engine.mitmproxy_boundary import RESPONSE_FAILURE_KEY
from egressproxy.flowrecord import Verdict
from egressproxy.hostnames import InvalidHostname, canonical_host
from egressproxy.outcomes import DialOutcome, GatewayFailure, classify_response_failure, outcome_for
from egressproxy.runtime.state import GatewayState
from egressproxy.upstream_tls import tls_failure_cause

log = logging.getLogger("egressproxy")

_REQUEST_TIMEOUT = "the upstream did not answer within requestTimeout"


class GatewayErrors:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def answer(self, flow: http.HTTPFlow, message: str) -> http.Response | None:
        record = flow_record(flow)
        if record.error:  # another addon already decided this request failed (the request timeout)
            failure = GatewayFailure(record.error, _REQUEST_TIMEOUT if record.error == "upstream-timeout" else message)
            return error_response(flow, failure.reason, failure.message)
        dialled = self._dial_outcome(flow)
        outcome = outcome_for(record.failure, dialled, message)
        if isinstance(outcome, Verdict):
            return denial_response(flow, outcome)
        if outcome is not dialled:  # the dial guard counted its own when the dial failed
            self.state.metrics.upstream_errors.labels(outcome.reason).inc()
        if outcome.reason == "upstream-tls-invalid":
            self.state.metrics.upstream_tls_failures.labels(tls_failure_cause(outcome.detail)).inc()
        return error_response(flow, outcome.reason, outcome.message)

    def error(self, flow: http.HTTPFlow) -> None:
        message = flow.metadata.get(RESPONSE_FAILURE_KEY)
        record = flow_record(flow)
        if message is None or record.error:
            return
        record.error = classify_response_failure(str(message))
        self.state.metrics.upstream_errors.labels(record.error).inc()

    def _dial_outcome(self, flow: http.HTTPFlow) -> DialOutcome | None:
        """How the dial for this request's destination ended on its client connection, if it did not connect."""
        connection = self.state.connections.get(flow.client_conn.id)
        if connection is None:
            return None
        try:
            key = (canonical_host(flow.request.host), int(flow.request.port))
        except InvalidHostname:
            return None
        return connection.dial_outcomes.get(key)
