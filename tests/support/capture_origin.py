"""An HTTPS origin for capture tests: JSON with a Set-Cookie, plain text, and an SSE stream that holds its
later events back until the test says the client has seen the first one (proof that nothing is buffered)."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

GATE_TIMEOUT = 10.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        path = self.path.split("?", 1)[0]
        if path == "/sse-gated":
            self._sse()
            return
        if path == "/text":
            self._reply(b"plain words back", "text/plain")
            return
        payload = json.dumps({"ok": True, "path": self.path, "got": len(body)}).encode()
        self._reply(payload, "application/json", [("set-cookie", "session=SETCOOKIE-SECRET; HttpOnly")])

    def _reply(self, payload: bytes, content_type: str, extra: list[tuple[str, str]] | None = None) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        for name, value in extra or []:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _sse(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self._chunk(b"data: first\n\n")
        # The rest only once the client has the first event: a gateway that buffered would deadlock here.
        self.server.gate_opened = self.server.gate.wait(GATE_TIMEOUT)
        self._chunk(b"data: second\n\n")
        self._chunk(b"data: third\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    do_GET = do_POST = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[tuple[str, str, dict[str, str], bytes]]
    gate: threading.Event
    gate_opened: bool | None


class CaptureOrigin:
    def __init__(self, cert: Path, key: Path) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.seen = []
        self.server.gate = threading.Event()
        self.server.gate_opened = None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "CaptureOrigin":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
