"""Decoding OTLP collectors on loopback: `OtlpCollector` takes OTLP/HTTP (`/v1/logs` and `/v1/traces`,
protobuf), `OtlpGrpcCollector` OTLP/gRPC (the logs and trace services); both keep what they got.

It decodes with OpenTelemetry's own protobuf classes, so a test sees log records and spans as the exporter
encoded them (attributes, trace and span ids, resource), plus the headers of every export request.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

__all__ = ["OtlpCollector", "OtlpGrpcCollector", "attributes_of"]


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def attributes_of(item: Any) -> dict[str, Any]:
    return {a.key: _value(a.value) for a in item.attributes}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        with self.server.lock:
            self.server.headers.append(dict(self.headers))
            if self.path == "/v1/logs":
                request = ExportLogsServiceRequest()
                request.ParseFromString(body)
                for resource_logs in request.resource_logs:
                    for scope_logs in resource_logs.scope_logs:
                        self.server.logs.extend(scope_logs.log_records)
            elif self.path == "/v1/traces":
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    service = attributes_of(resource_spans.resource).get("service.name")
                    for scope_spans in resource_spans.scope_spans:
                        self.server.spans.extend((service, span) for span in scope_spans.spans)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    logs: list[Any]
    spans: list[tuple[str | None, Any]]
    headers: list[dict[str, str]]
    lock: threading.Lock


class OtlpCollector:
    def __init__(self) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.logs, self.server.spans, self.server.headers = [], [], []
        self.server.lock = threading.Lock()
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def logs(self) -> list[Any]:
        with self.server.lock:
            return list(self.server.logs)

    @property
    def spans(self) -> list[tuple[str | None, Any]]:
        with self.server.lock:
            return list(self.server.spans)

    def __enter__(self) -> "OtlpCollector":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class OtlpGrpcCollector:
    """The OTLP/gRPC logs and trace services (insecure, as the gateway dials `grpc` targets)."""

    def __init__(self) -> None:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        self.lock = threading.Lock()
        self._logs: list[Any] = []
        self._spans: list[Any] = []
        collector = self

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC method's name
                with collector.lock:
                    for resource_logs in request.resource_logs:
                        for scope_logs in resource_logs.scope_logs:
                            collector._logs.extend(scope_logs.log_records)
                return logs_service_pb2.ExportLogsServiceResponse()

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802
                with collector.lock:
                    for resource_spans in request.resource_spans:
                        for scope_spans in resource_spans.scope_spans:
                            collector._spans.extend(scope_spans.spans)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), self.server)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def logs(self) -> list[Any]:
        with self.lock:
            return list(self._logs)

    @property
    def spans(self) -> list[Any]:
        with self.lock:
            return list(self._spans)

    def __enter__(self) -> "OtlpGrpcCollector":
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(grace=None)
