"""Capture as a sink of finished records (seam 5): each finished request, and each connection that carried no
HTTP request (tunnels, denied CONNECTs), becomes one capture document for the embedded store and, when the
served EgressGateway sets `otlp.endpoint`, for the OTLP export.

It runs inline on the event loop, so it only queues: a request's document is built by the writer thread that
first reads it (`PendingDocument`; the redaction was done when the record was finished), a connection's small
one here. Both the store and the export drop and count rather than wait.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from egressproxy.capture_records import Document, PendingDocument, connection_document, wants_connection
from egressproxy.flowrecord import FinishedConnection, FinishedRequest
from egressproxy.otlp_export import OtlpExport, OtlpTarget, logs_url
from egressproxy.sinks import Sink

if TYPE_CHECKING:
    from egressproxy.capture_store import CaptureStore
    from egressproxy.snapshot import Snapshot

__all__ = ["CaptureSink", "otlp_target"]


def otlp_target(snapshot: "Snapshot | None") -> OtlpTarget | None:
    """Where the served gateway exports (None: `otlp.endpoint` is not set)."""
    if snapshot is None or not snapshot.gateway.otlp_endpoint:
        return None
    headers = snapshot.gateway.otlp_headers
    return OtlpTarget(
        logs_url(snapshot.gateway.otlp_endpoint),
        tuple(sorted((k, headers[k].decode("utf-8", "replace")) for k in headers)),
    )


class CaptureSink(Sink):
    name = "capture"

    def __init__(
        self,
        snapshot: Callable[[], "Snapshot | None"],
        store: "CaptureStore | None" = None,
        export: OtlpExport | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.store = store
        self.export = export
        self._target_of: tuple[object, OtlpTarget | None] = (None, None)  # (the snapshot, its target)

    captures = True  # Sinks.captures: the flow's decision trace says the request is kept

    def request_finished(self, record: FinishedRequest) -> None:
        self._keep(record.started, PendingDocument(record))

    def connection_finished(self, record: FinishedConnection) -> None:
        if wants_connection(record):
            self._keep(record.started, connection_document(record))

    def _keep(self, ts: float, document: Document) -> None:
        if self.store is not None:
            self.store.put(ts, document)
        if self.export is not None:
            target = self._target()
            if target is not None:
                self.export.put(target, ts, document)

    def _target(self) -> OtlpTarget | None:
        """The export target of the serving snapshot, built once per snapshot (not per record)."""
        snapshot = self.snapshot()
        if self._target_of[0] is not snapshot:
            self._target_of = (snapshot, otlp_target(snapshot))
        return self._target_of[1]
