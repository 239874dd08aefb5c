"""Re-export of capture records over OTLP/HTTP (EgressGateway `spec.otlp.endpoint`), batched and bounded.

Each capture document becomes one OTLP log record (event name `egressproxy.capture`, body the document as JSON)
with attributes named by the OpenTelemetry semantic conventions: HTTP (`http.request.method`, `url.full`,
`server.address`, `http.response.status_code`, body sizes), GenAI (`gen_ai.provider.name` - never the
deprecated `gen_ai.system` -, `gen_ai.request.model`), and the gateway's own under `egress.*`.

`put` never blocks: a bounded queue feeds one exporter thread, which sends up to `batch` records per request
with opentelemetry-sdk's `OTLPLogExporter` and `otlp.headers` on every export. A collector that is down, slow
or refusing costs counted drops (`egress_capture_drops_total{sink="otlp"}`) - a failed batch is not kept for
later - so neither latency nor memory grows with it. The endpoint and headers are read from the snapshot with
each record: a reload that changes them takes effect on the next batch.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from egressproxy.capture_metrics import CaptureMetrics
from egressproxy.capture_records import Document, PendingDocument, document_of
from egressproxy.record_queue import STOP, RecordQueue, document_weight

__all__ = ["OtlpTarget", "OtlpExport", "log_attributes", "logs_url"]

log = logging.getLogger("egressproxy")

EVENT_NAME = "egressproxy.capture"
COLLECT_INTERVAL = 5.0  # seconds between collections of failed batches (see OtlpExport._collect_failed_batch)


@dataclass(frozen=True, slots=True)
class OtlpTarget:
    """Where to export: the OTLP/HTTP logs URL and the headers of every export (values are secrets)."""

    url: str
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)


class LogExporter(Protocol):
    def export(self, batch: Sequence[Any]) -> Any: ...

    def shutdown(self) -> None: ...


def logs_url(endpoint: str) -> str:
    """`otlp.endpoint` as the logs URL: a bare collector address gets OTLP/HTTP's `/v1/logs` path."""
    endpoint = endpoint.strip()
    if "://" not in endpoint:
        endpoint = f"http://{endpoint}"
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/logs"
    return endpoint


def _otlp_exporter(target: OtlpTarget, timeout: float) -> LogExporter:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    exporter: LogExporter = OTLPLogExporter(endpoint=target.url, headers=dict(target.headers), timeout=timeout)
    return exporter


class OtlpExport:
    """The exporter side: `start()`, `put(target, ts, document)` from the event loop, `close()` at shutdown."""

    def __init__(
        self,
        metrics: CaptureMetrics,
        *,
        resource: Mapping[str, str] | None = None,
        queue_size: int = 2048,
        queue_bytes: int = 32 * 1024 * 1024,
        batch: int = 256,
        flush_interval: float = 0.5,
        timeout: float = 5.0,
        exporter_factory: Callable[[OtlpTarget, float], LogExporter] = _otlp_exporter,
    ) -> None:
        self.metrics = metrics
        self.resource = dict(resource or {"service.name": "egressproxy"})
        self.batch = batch
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.exporter_factory = exporter_factory
        self._queue: RecordQueue[tuple[OtlpTarget, float, Document]] = RecordQueue(queue_size, queue_bytes)
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._target: OtlpTarget | None = None
        self._exporter: LogExporter | None = None
        self._failing = False
        self._last_collect = 0.0

    def start(self) -> "OtlpExport":
        self._thread.start()
        return self

    def put(self, target: OtlpTarget, ts: float, document: Document) -> None:
        weight = document.weight if isinstance(document, PendingDocument) else document_weight(document)
        if not self._queue.offer((target, ts, document), weight):
            self.metrics.drop("otlp", "queue-full")

    def close(self, timeout: float = 5.0) -> None:
        if not self._thread.is_alive():
            return
        self._queue.stop(timeout)
        self._thread.join(timeout)

    # --- the exporter thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            items = self._queue.take(None, self.flush_interval, self.batch)
            stop = STOP in items
            records = [i for i in items if i is not STOP]
            for target, group in _by_target(records).items():
                self._export(target, group)
            if stop:
                break
        dropped = self._queue.drain()
        if dropped:
            self.metrics.drop("otlp", "closed", dropped)
        if self._exporter is not None:
            self._exporter.shutdown()

    def _export(self, target: OtlpTarget, records: list[tuple[float, Document]]) -> None:
        try:
            exporter = self._exporter_for(target)
            result = exporter.export([self._log_record(ts, document_of(doc)) for ts, doc in records])
            ok = getattr(result, "name", str(result)) == "SUCCESS"
        except Exception as e:  # an exporter bug must cost records, never the thread
            log.debug("OTLP export raised %s", type(e).__name__)
            ok = False
        if ok:
            self.metrics.wrote("otlp", len(records))
            if self._failing:
                log.warning("OTLP export to %s succeeds again", _safe(target.url))
                self._failing = False
            return
        self.metrics.drop("otlp", "export-failed", len(records))
        self._collect_failed_batch()
        if not self._failing:
            self._failing = True
            log.warning(
                "OTLP export to %s failed: capture records are dropped and counted "
                "(egress_capture_drops_total{sink=\"otlp\"}); traffic is unaffected",
                _safe(target.url),
            )

    def _collect_failed_batch(self) -> None:
        """Free a failed batch now. The exporter's retries leave reference cycles (exceptions holding the frames
        that hold the encoded batch); left to the cyclic collector's own schedule, a collector that stays down
        made memory climb by ~100 MiB between collections. At most one collection per interval, from this thread."""
        now = time.monotonic()
        if now - self._last_collect >= COLLECT_INTERVAL:
            self._last_collect = now
            gc.collect()

    def _exporter_for(self, target: OtlpTarget) -> LogExporter:
        if self._exporter is None or target != self._target:
            if self._exporter is not None:
                self._exporter.shutdown()
            self._exporter = self.exporter_factory(target, self.timeout)
            self._target = target
        return self._exporter

    def _log_record(self, ts: float, doc: dict[str, Any]) -> Any:
        from opentelemetry._logs import LogRecord, SeverityNumber
        from opentelemetry.sdk._logs import ReadableLogRecord
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        record = LogRecord(
            timestamp=int(ts * 1e9),
            observed_timestamp=time.time_ns(),
            severity_number=SeverityNumber.INFO if doc.get("decision") != "deny" else SeverityNumber.WARN,
            severity_text="INFO" if doc.get("decision") != "deny" else "WARN",
            body=json.dumps(doc, separators=(",", ":")),
            attributes=log_attributes(doc),
            event_name=EVENT_NAME,
        )
        return ReadableLogRecord(
            log_record=record,
            resource=Resource.create(self.resource),
            instrumentation_scope=InstrumentationScope("egressproxy"),
        )


def _by_target(records: list[Any]) -> dict[OtlpTarget, list[tuple[float, Document]]]:
    out: dict[OtlpTarget, list[tuple[float, Document]]] = {}
    for target, ts, doc in records:
        out.setdefault(target, []).append((ts, doc))
    return out


def _safe(url: str) -> str:
    """The URL without userinfo or query (either may hold a credential) for a log line."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def log_attributes(doc: Mapping[str, Any]) -> dict[str, Any]:
    """OpenTelemetry attributes of one capture document (no None values: OTLP has no null attribute)."""
    request = doc.get("request") or {}
    response = doc.get("response") or {}
    identity = doc.get("identity") or {}
    verdict = doc.get("verdict") or {}
    attrs: dict[str, Any] = {
        "egress.record.kind": doc.get("kind"),
        "egress.gateway": doc.get("gateway"),
        "egress.listener": doc.get("listener"),
        "egress.route": doc.get("route"),
        "egress.backend": doc.get("backend"),
        "egress.decision": doc.get("decision"),
        "egress.verdict.reason": verdict.get("reason"),
        "egress.verdict.policy": verdict.get("policy"),
        "egress.error": doc.get("error"),
        "egress.identity.namespace": identity.get("namespace"),
        "egress.identity.service_account": identity.get("serviceAccount"),
        "egress.duration_ms": doc.get("durationMs"),
        "server.address": doc.get("host"),
    }
    if doc.get("kind") == "connection":
        attrs["tls.client.server_name"] = doc.get("sni")
        attrs["network.transport"] = "udp" if doc.get("carries") == "UDP" else "tcp"
        attrs["egress.bytes.upstream"] = request.get("size")
        attrs["egress.bytes.downstream"] = response.get("size")
    else:
        attrs["http.request.method"] = doc.get("method")
        attrs["url.full"] = doc.get("url")
        attrs["http.response.status_code"] = doc.get("status")
        attrs["http.request.body.size"] = request.get("size")
        attrs["http.response.body.size"] = response.get("size")
        if doc.get("provider"):
            attrs["gen_ai.provider.name"] = doc["provider"]
            model = _requested_model(request)
            if model:
                attrs["gen_ai.request.model"] = model
    return {k: v for k, v in attrs.items() if v is not None}


def _requested_model(request: Mapping[str, Any]) -> str | None:
    """The `model` of a captured JSON request body (OpenAI, Anthropic and most compatible APIs put it there)."""
    body = request.get("body")
    if not isinstance(body, str) or request.get("bodyEncoding") != "utf-8" or request.get("truncated"):
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    model = parsed.get("model") if isinstance(parsed, dict) else None
    return model if isinstance(model, str) else None
