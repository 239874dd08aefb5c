"""Where finished records go (DESIGN.md section 6, seam 5): every sink gets every finished record.

Each client connection (passthrough and L4 tunnels included, and each transparent UDP session) ends in one
`FinishedConnection`; each HTTP request in one `FinishedRequest`. The data flows one way: addons write the
records, `Sinks` hands them out, and a sink never reaches back into an addon. Metrics are the first sink; the
capture store, OTLP and access logs are added by registering theirs.

A sink runs inline on the event loop: it must be cheap, and hand anything slow (disk, network) to a queue of its
own. A sink that raises never breaks traffic or the sinks after it: the error is counted and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from egressproxy.flowrecord import FinishedConnection, FinishedRequest

__all__ = ["Sink", "Sinks"]

log = logging.getLogger("egressproxy")


class Sink:
    """Receives finished records. Override either method; the defaults ignore the record::

        class PrintRequests(Sink):
            name = "print"

            def request_finished(self, record: FinishedRequest) -> None:
                print(record.method, record.url, record.status)

        state.sinks.register(PrintRequests())
    """

    name = "sink"

    def connection_finished(self, record: FinishedConnection) -> None:
        pass

    def request_finished(self, record: FinishedRequest) -> None:
        pass


class Sinks:
    """The dispatcher: hands each finished record to every registered sink, in registration order."""

    def __init__(self, on_error: Callable[[Sink, BaseException], None] | None = None) -> None:
        self.sinks: list[Sink] = []
        self.captures = False  # a registered sink keeps each finished request (the capture store, OTLP)
        self.on_error = on_error

    def register(self, sink: Sink) -> None:
        self.sinks.append(sink)
        self.captures = self.captures or bool(getattr(sink, "captures", False))

    def connection_finished(self, record: FinishedConnection) -> None:
        for sink in self.sinks:
            try:
                sink.connection_finished(record)
            except Exception as e:
                self._failed(sink, e)

    def request_finished(self, record: FinishedRequest) -> None:
        for sink in self.sinks:
            try:
                sink.request_finished(record)
            except Exception as e:
                self._failed(sink, e)

    def _failed(self, sink: Sink, error: BaseException) -> None:
        log.warning("sink %s failed on a finished record: %r", sink.name, error)
        if self.on_error is not None:
            try:
                self.on_error(sink, error)
            except Exception:
                log.exception("reporting a failed sink failed")
