"""Access logs (HTTPListenerPolicy `accessLog[]`, DESIGN.md 4.2): one line per finished request, denials included.

A sink (seam 5): for each finished request it looks up the listener's compiled access logs on the serving
snapshot and hands (sink, record) to a writer thread; the line is formatted and written there, never on the
event loop. Files are opened in append mode, written in batches, and reopened when the path was rotated away
(logrotate's rename, checked at most once a second) or on `reopen()` (any accepted reload: SIGHUP). OTLP sinks
export each line as an OTLP log record (attributes by the OpenTelemetry semantic conventions) from a thread per
collector. A full queue, a failing disk or a dead collector drops lines, counted in
`egress_access_log_drops_total{sink}`; traffic is never slowed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from egressproxy.bounded_worker import BoundedWorker
from egressproxy.flowrecord import FinishedRequest
from egressproxy.observability_settings import AccessLogSink, OtlpTarget
from egressproxy.sinks import Sink

if TYPE_CHECKING:
    from egressproxy.metrics import GatewayMetrics
    from egressproxy.snapshot import Snapshot

__all__ = ["AccessLog", "FileLines", "OtlpLogExport"]

log = logging.getLogger("egressproxy")
ROTATION_CHECK = 1.0  # seconds between checks that a log file is still at its path
# Lines reach the file up to this late: the writer thread batches them instead of waking for each (bounded_worker.py).
FILE_FLUSH_INTERVAL = 0.2
Item = tuple[AccessLogSink, FinishedRequest]


class FileLines:
    """The writer thread's side of the file sinks: open files by path, appended to, reopened when rotated."""

    def __init__(self) -> None:
        self.files: dict[str, int] = {}  # path -> a descriptor opened O_APPEND
        self.checked: dict[str, float] = {}
        self.reopen_requested = False
        self.warned: dict[str, float] = {}

    def write(self, batch: Sequence[Item]) -> int:
        if self.reopen_requested:
            self.reopen_requested = False
            self.close()
        lines: dict[str, list[str]] = {}
        for sink, record in batch:
            assert sink.path is not None
            lines.setdefault(sink.path, []).append(sink.format.line(record) + "\n")
        failed = 0
        for path, text in lines.items():
            try:
                _write_all(self._file(path), "".join(text).encode("utf-8"))
            except OSError as e:
                failed += len(text)
                self._forget(path)
                self._warn(path, e)
        return failed

    def _file(self, path: str) -> int:
        fd = self.files.get(path)
        now = time.monotonic()
        if fd is not None and now - self.checked.get(path, 0.0) >= ROTATION_CHECK:
            self.checked[path] = now
            if self._rotated(path, fd):
                self._forget(path)
                fd = None
        if fd is None:
            # O_APPEND: each batch is one write() at the end of the file, so lines of several worker processes
            # sharing the file never interleave mid-line, and logrotate's copytruncate is followed.
            fd = self.files[path] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            self.checked[path] = now
        return fd

    @staticmethod
    def _rotated(path: str, fd: int) -> bool:
        try:
            on_disk = os.stat(path)
        except FileNotFoundError:
            return True
        mine = os.fstat(fd)
        return (on_disk.st_dev, on_disk.st_ino) != (mine.st_dev, mine.st_ino)

    def _forget(self, path: str) -> None:
        fd = self.files.pop(path, None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _warn(self, path: str, error: OSError) -> None:
        now = time.monotonic()
        if now - self.warned.get(path, -60.0) >= 60.0:
            self.warned[path] = now
            log.warning("access log %s: lines dropped: %s", path, error.strerror or error)

    def close(self) -> None:
        for path in list(self.files):
            self._forget(path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class OtlpLogExport:
    """Exports access-log lines as OTLP log records to one collector (OTLP/HTTP protobuf or gRPC)."""

    def __init__(self, target: OtlpTarget, service_name: str = "egressproxy", timeout: float = 5.0) -> None:
        from opentelemetry.sdk.resources import Resource

        self.target = target
        self.resource = Resource.create({"service.name": service_name})
        self.exporter = _log_exporter(target, timeout)

    def export(self, batch: Sequence[Item]) -> int:
        from opentelemetry._logs import LogRecord, SeverityNumber
        from opentelemetry.sdk._logs import ReadableLogRecord
        from opentelemetry.sdk._logs.export import LogRecordExportResult

        records = []
        for sink, record in batch:
            fields = sink.format.fields(record)
            attributes = {k: v for k, v in _flat(fields).items() if v is not None}
            body = f"{record.method} {attributes.get('url.path', '')} {record.status or 0}"
            log_record = LogRecord(
                timestamp=int(record.started * 1e9),
                observed_timestamp=time.time_ns(),
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body=body,
                attributes=attributes,
                event_name="egress.access_log",
            )
            records.append(ReadableLogRecord(log_record=log_record, resource=self.resource))
        result = self.exporter.export(records)
        return 0 if result == LogRecordExportResult.SUCCESS else len(records)

    def shutdown(self) -> None:
        self.exporter.shutdown()


def _log_exporter(target: OtlpTarget, timeout: float) -> Any:
    if target.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter

        return GrpcLogExporter(endpoint=target.endpoint, insecure=True, timeout=timeout)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    endpoint = target.endpoint if target.endpoint.endswith("/v1/logs") else f"{target.endpoint}/v1/logs"
    return OTLPLogExporter(endpoint=endpoint, timeout=timeout)


def _flat(fields: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


class AccessLog(Sink):
    """The access-log sink: the serving snapshot says, per listener, where each finished request is written."""

    name = "access-log"

    def __init__(self, snapshot: Callable[[], Snapshot | None], metrics: GatewayMetrics, capacity: int = 10_000) -> None:
        self.snapshot = snapshot
        self.metrics = metrics
        self.capacity = capacity
        self.lines = FileLines()
        self._files: BoundedWorker[Item] | None = None
        self._exports: dict[OtlpTarget, BoundedWorker[Item]] = {}

    def request_finished(self, record: FinishedRequest) -> None:
        snapshot = self.snapshot()
        logs = snapshot.compiled.access_logs_for(record.listener) if snapshot is not None else None
        if logs is None:
            return
        for sink in logs.sinks:
            if sink.path is not None:
                self._file_worker().offer((sink, record))
            elif sink.otlp is not None:
                self._export_worker(sink.otlp).offer((sink, record))

    def reopen(self) -> None:
        """Reopen every file before the next write (SIGHUP, after logrotate's copy or rename)."""
        self.lines.reopen_requested = True

    def stop(self) -> None:
        if self._files is not None:
            self._files.stop()
            self.lines.close()
        for worker in self._exports.values():
            worker.stop()

    def _file_worker(self) -> BoundedWorker[Item]:
        if self._files is None:
            drops = self.metrics.access_log_drops.labels("file")
            self._files = BoundedWorker(
                "access-log-file", self.lines.write, drops.inc, self.capacity, flush_interval=FILE_FLUSH_INTERVAL
            )
        return self._files

    def _export_worker(self, target: OtlpTarget) -> BoundedWorker[Item]:
        worker = self._exports.get(target)
        if worker is None:
            export = OtlpLogExport(target)
            drops = self.metrics.access_log_drops.labels("otel")
            worker = self._exports[target] = BoundedWorker(
                "access-log-otlp", export.export, drops.inc, capacity=2048, batch_size=256, flush_interval=0.5
            )
        return worker
