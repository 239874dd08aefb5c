"""One info log line per denial, whether or not an access log is configured (DESIGN.md 4.2).

A sink (seam 5): a denied request logs its reason, deciding policy, identity and host; a connection denied
before any HTTP request (a transparent TLS/TCP connection, a UDP session) logs the same from its connection
record. Only the host is printed, never the URL (a query may carry a credential).
"""

from __future__ import annotations

import logging

from egressproxy.flowrecord import FinishedConnection, FinishedRequest
from egressproxy.sinks import Sink

__all__ = ["DenialLog"]

log = logging.getLogger("egressproxy")


class DenialLog(Sink):
    name = "denial-log"

    def request_finished(self, record: FinishedRequest) -> None:
        verdict = record.verdict
        if record.decision != "deny" or verdict is None:
            return
        log.info(
            "denied %s %s: reason=%s policy=%s identity=%s listener=%s status=%s",
            record.method, record.host or record.sni or "-", verdict.reason or "-", verdict.policy or "-",
            record.identity, record.listener or "-", record.status or "-",
        )

    def connection_finished(self, record: FinishedConnection) -> None:
        verdict = record.verdict
        if verdict is None or verdict.allowed or record.requests:
            return  # allowed, or its requests logged their own denials
        log.info(
            "denied %s connection to %s: reason=%s policy=%s identity=%s listener=%s",
            record.carries or "-", record.host or record.sni or "-", verdict.reason or "-", verdict.policy or "-",
            record.identity, record.listener or "-",
        )
