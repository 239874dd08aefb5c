"""egressproxy/otlp_export.py and capture_sink.py: capture records as OTLP log records, batched off the caller's
thread; a failing collector costs counted drops and one log line; attributes follow the semantic conventions."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk._logs.export import LogRecordExportResult
from prometheus_client import CollectorRegistry

from egressproxy.capture_metrics import CaptureMetrics
from egressproxy.capture_sink import CaptureSink, otlp_target
from egressproxy.flowrecord import FinishedConnection, Identity, Verdict
from egressproxy.snapshot import SecretData
from egressproxy.otlp_export import OtlpExport, OtlpTarget, log_attributes, logs_url

TARGET = OtlpTarget("http://collector:4318/v1/logs", (("authorization", "Bearer t0ken"),))


class FakeExporter:
    def __init__(self, target: OtlpTarget, ok: bool = True, block: threading.Event | None = None) -> None:
        self.target, self.ok, self.block = target, ok, block
        self.batches: list[Sequence[Any]] = []
        self.shut = False

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        if self.block is not None:
            self.block.wait(10)
        self.batches.append(batch)
        return LogRecordExportResult.SUCCESS if self.ok else LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        self.shut = True


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


DOC = {
    "kind": "request", "method": "POST", "url": "https://api.openai.com/v1/chat/completions", "host": "api.openai.com",
    "status": 200, "route": "default/openai", "decision": "allow", "provider": "openai",
    "identity": {"namespace": "team-a", "serviceAccount": "agent"}, "verdict": None, "durationMs": 12.0,
    "request": {"body": '{"model": "gpt-4o-mini", "messages": []}', "bodyEncoding": "utf-8", "size": 40,
                "truncated": False},
    "response": {"body": None, "size": 100},
}


def test_records_are_exported_in_batches_with_semantic_convention_attributes() -> None:
    registry = CollectorRegistry()
    made: list[FakeExporter] = []
    export = OtlpExport(CaptureMetrics(registry), flush_interval=0.05,
                        exporter_factory=lambda t, _timeout: made.append(FakeExporter(t)) or made[-1]).start()
    for _ in range(3):
        export.put(TARGET, time.time(), DOC)
    export.close()
    assert len(made) == 1 and made[0].target == TARGET and made[0].shut
    records = [r for batch in made[0].batches for r in batch]
    assert len(records) == 3
    attrs = dict(records[0].log_record.attributes)
    assert attrs["http.request.method"] == "POST" and attrs["http.response.status_code"] == 200
    assert attrs["url.full"] == DOC["url"] and attrs["server.address"] == "api.openai.com"
    assert attrs["gen_ai.provider.name"] == "openai" and attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert "gen_ai.system" not in attrs
    assert records[0].log_record.event_name == "egressproxy.capture"
    assert value(registry, "egress_capture_records_total", sink="otlp") == 3


def test_a_failing_collector_costs_counted_drops_and_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    export = OtlpExport(CaptureMetrics(registry), flush_interval=0.01,
                        exporter_factory=lambda t, _timeout: FakeExporter(t, ok=False)).start()
    with caplog.at_level(logging.WARNING, logger="egressproxy"):
        for _ in range(5):
            export.put(TARGET, time.time(), DOC)
            time.sleep(0.03)
        export.close()
    assert value(registry, "egress_capture_drops_total", sink="otlp", reason="export-failed") == 5
    lines = [r.getMessage() for r in caplog.records if "OTLP export" in r.getMessage()]
    assert len(lines) == 1 and "t0ken" not in lines[0]


def test_a_slow_collector_never_makes_put_wait_and_memory_is_bounded() -> None:
    registry = CollectorRegistry()
    gate = threading.Event()
    export = OtlpExport(CaptureMetrics(registry), queue_size=10, batch=1, flush_interval=0,
                        exporter_factory=lambda t, _timeout: FakeExporter(t, block=gate)).start()
    started = time.monotonic()
    for _ in range(100):
        export.put(TARGET, time.time(), DOC)
    assert time.monotonic() - started < 0.5
    assert value(registry, "egress_capture_drops_total", sink="otlp", reason="queue-full") >= 85
    gate.set()
    export.close()


def test_a_new_target_gets_a_new_exporter() -> None:
    made: list[FakeExporter] = []
    export = OtlpExport(CaptureMetrics(CollectorRegistry()), flush_interval=0.01,
                        exporter_factory=lambda t, _timeout: made.append(FakeExporter(t)) or made[-1]).start()
    export.put(TARGET, time.time(), DOC)
    time.sleep(0.1)
    other = OtlpTarget("http://other:4318/v1/logs")
    export.put(other, time.time(), DOC)
    export.close()
    assert [m.target for m in made] == [TARGET, other] and made[0].shut


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://collector:4318", "http://collector:4318/v1/logs"),
        ("http://collector:4318/", "http://collector:4318/v1/logs"),
        ("collector:4318", "http://collector:4318/v1/logs"),
        ("https://otel.example.com/custom/logs", "https://otel.example.com/custom/logs"),
    ],
)
def test_the_logs_url(endpoint: str, url: str) -> None:
    assert logs_url(endpoint) == url


def test_connection_attributes() -> None:
    attrs = log_attributes({"kind": "connection", "host": "db.example.test", "sni": None, "carries": "TCP",
                            "request": {"size": 10}, "response": {"size": 20}, "decision": "allow"})
    assert attrs["network.transport"] == "tcp" and attrs["egress.bytes.upstream"] == 10
    assert "tls.client.server_name" not in attrs and "http.request.method" not in attrs


class FakeStore:
    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []

    def put(self, ts: float, document: dict[str, Any]) -> None:
        self.docs.append(document)


class FakeExport:
    def __init__(self) -> None:
        self.sent: list[tuple[OtlpTarget, dict[str, Any]]] = []

    def put(self, target: OtlpTarget, ts: float, document: dict[str, Any]) -> None:
        self.sent.append((target, document))


def tunnel(requests: int = 0) -> FinishedConnection:
    return FinishedConnection("default/eg", "tls", "default/t", Identity("a", "b"), Verdict.allow(), "t.example.test",
                              "t.example.test", "TLS", time.time(), 1.0, 10, 20, requests)


def test_the_sink_keeps_tunnels_and_exports_only_with_an_endpoint() -> None:
    store, export = FakeStore(), FakeExport()
    quiet = SimpleNamespace(gateway=SimpleNamespace(otlp_endpoint=None, otlp_headers=SecretData({})))
    loud = SimpleNamespace(gateway=SimpleNamespace(otlp_endpoint="collector:4318", otlp_headers=SecretData({"x-token": b"abc"})))
    serving: list[Any] = [quiet]
    sink = CaptureSink(lambda: serving[0], store, export)  # type: ignore[arg-type]
    sink.connection_finished(tunnel())
    sink.connection_finished(tunnel(requests=2))  # its requests have their own records
    assert len(store.docs) == 1 and export.sent == []
    serving[0] = loud  # a reload set the endpoint
    sink.connection_finished(tunnel())
    assert export.sent[0][0] == OtlpTarget("http://collector:4318/v1/logs", (("x-token", "abc"),))
    assert "abc" not in repr(otlp_target(loud))  # type: ignore[arg-type]
