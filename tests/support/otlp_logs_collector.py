"""A decoding OTLP/HTTP logs collector on loopback: it parses each protobuf ExportLogsServiceRequest (with
opentelemetry-proto's own message types) and keeps every log record with its attributes and the export's headers."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


@dataclass
class ReceivedLog:
    headers: dict[str, str]
    path: str
    body: str
    event_name: str
    attributes: dict[str, Any]
    resource: dict[str, Any] = field(default_factory=dict)


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers.get("content-length") or 0))
        request = ExportLogsServiceRequest()
        request.ParseFromString(data)
        headers = {k.lower(): v for k, v in self.headers.items()}
        for resource_logs in request.resource_logs:
            resource = {a.key: _value(a.value) for a in resource_logs.resource.attributes}
            for scope_logs in resource_logs.scope_logs:
                for rec in scope_logs.log_records:
                    with self.server.lock:
                        self.server.logs.append(
                            ReceivedLog(
                                headers, self.path, rec.body.string_value, rec.event_name,
                                {a.key: _value(a.value) for a in rec.attributes}, resource,
                            )
                        )
        payload = ExportLogsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    logs: list[ReceivedLog]
    lock: threading.Lock


class OtlpCollector:
    def __init__(self) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.logs = []
        self.server.lock = threading.Lock()
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def logs(self) -> list[ReceivedLog]:
        with self.server.lock:
            return list(self.server.logs)

    def __enter__(self) -> "OtlpCollector":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
