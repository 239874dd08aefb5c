"""502/504 answers with `x-egress-error` when the way upstream fails (unreachable, TLS invalid, timeout).

A dial the dial guard refused after resolving (SSRF guard: `destination-address-denied`; reverse DNS:
`reverse-dns-mismatch`) is a denial, not a gateway error: the request gets the 403 with `x-egress-denied` and
the JSON body, as if a route had denied it. The guard leaves the Verdict on the connection's record under the
dialled (host, port) and names the reason in the error text (`egress: <reason>: <detail>`); resolution
failures read `egress: upstream-unreachable: <detail>` (502).
"""

from __future__ import annotations

import logging
import re

from mitmproxy import http

from egressproxy.engine.answers import denial_response, error_response, flow_record
from egressproxy.flowrecord import Verdict
from egressproxy.hostnames import InvalidHostname, canonical_host
from egressproxy.responses import classify_upstream_error
from egressproxy.runtime.state import GatewayState
from egressproxy.upstream_tls import UPSTREAM_TLS_ERROR_KEY, tls_failure_cause

log = logging.getLogger("egressproxy")

DIAL_DENIALS = ("destination-address-denied", "reverse-dns-mismatch")
DIAL_ERRORS = ("upstream-unreachable", "upstream-timeout")  # counted where they happen (dial guard)
_EGRESS_REASON = re.compile(r"egress: ([a-z-]+): (.*)", re.S)


class GatewayErrors:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def answer(self, flow: http.HTTPFlow, message: str) -> http.Response | None:
        record = flow_record(flow)
        tagged = _EGRESS_REASON.search(message)
        if record.error:
            reason = record.error
        elif tagged is not None and tagged.group(1) in DIAL_DENIALS:
            return denial_response(flow, self._dial_verdict(flow, tagged.group(1), tagged.group(2)))
        elif tagged is not None and tagged.group(1) in DIAL_ERRORS:
            reason = tagged.group(1)  # counted by the dial guard
            message = tagged.group(2)
        elif record.extra.get(UPSTREAM_TLS_ERROR_KEY):
            # The upstream-TLS addon saw the handshake fail (or the origin reject us right after it) and left
            # the cause; mitmproxy's own text may only say "server closed connection".
            reason = "upstream-tls-invalid"
            message = record.extra[UPSTREAM_TLS_ERROR_KEY]
            self.state.metrics.upstream_errors.labels(reason).inc()
        else:
            reason = classify_upstream_error(message)
            self.state.metrics.upstream_errors.labels(reason).inc()
        if reason == "upstream-tls-invalid":
            self.state.metrics.upstream_tls_failures.labels(tls_failure_cause(message)).inc()
        detail = {
            "upstream-timeout": message if tagged is not None else "the upstream did not answer within requestTimeout",
            "upstream-tls-invalid": f"upstream TLS is invalid: {message}",
            "upstream-unreachable": f"upstream unreachable: {message}",
        }.get(reason, message)
        return error_response(flow, reason, detail)

    def _dial_verdict(self, flow: http.HTTPFlow, reason: str, detail: str) -> Verdict:
        """The guard's own Verdict for this request's destination, else one rebuilt from the error text."""
        connection = self.state.connections.get(flow.client_conn.id)
        if connection is not None:
            try:
                key = (canonical_host(flow.request.host), int(flow.request.port))
            except InvalidHostname:
                key = None
            verdict = connection.dial_denials.get(key) if key is not None else None
            if verdict is not None and verdict.reason == reason:
                return verdict
        snapshot = self.state.snapshot
        policy = f"EgressGateway/{snapshot.gateway.ref.namespace}/{snapshot.gateway.ref.name}" if snapshot else ""
        return Verdict.deny(reason, policy, detail.strip())
