"""502/504 answers with `x-egress-error` when the way upstream fails (unreachable, TLS invalid, timeout)."""

from __future__ import annotations

import logging

from mitmproxy import http

from egressproxy.engine import gateway_errors
from egressproxy.engine.answers import error_response, flow_record
from egressproxy.responses import classify_upstream_error
from egressproxy.runtime.state import GatewayState

log = logging.getLogger("egressproxy")


class GatewayErrors:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def load(self, loader: object) -> None:
        gateway_errors.install(self.answer)

    def answer(self, flow: http.HTTPFlow, message: str) -> http.Response | None:
        record = flow_record(flow)
        if record.error:
            reason = record.error
        elif message.startswith("egress: dial"):
            return None  # a refused dial is a bug upstream of here: keep mitmproxy's generic 502
        else:
            reason = classify_upstream_error(message)
            self.state.metrics.upstream_errors.labels(reason).inc()
        detail = {
            "upstream-timeout": "the upstream did not answer within requestTimeout",
            "upstream-tls-invalid": f"upstream TLS is invalid: {message}",
            "upstream-unreachable": f"upstream unreachable: {message}",
        }.get(reason, message)
        return error_response(flow, reason, detail)
