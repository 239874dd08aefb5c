"""Real origins on loopback for end-to-end tests: an HTTPS/HTTP echo server, raw TCP and UDP echo servers.

The HTTP origin answers:
- any path: JSON {"method", "path", "headers", "body", "origin"} (the request as the origin saw it);
- `/sse?events=N&interval=S`: text/event-stream, N events S seconds apart;
- `/slow?seconds=S`: waits S seconds before answering;
- `/status/<code>`: that status.
"""

from __future__ import annotations

import json
import socket
import socketserver
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        self.send_header("x-origin", self.server.name)
        self.end_headers()
        self.wfile.write(payload)

    def _note_connection(self) -> None:
        """Once per accepted connection: whether its TLS handshake resumed a session (None: plain HTTP)."""
        if not getattr(self, "_noted", False):
            self._noted = True
            self.server.connections.append(getattr(self.request, "session_reused", None))

    def _handle(self) -> None:
        self._note_connection()
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        body = self._body()
        self.server.requests.append((self.command, self.path, dict(self.headers.items())))
        if url.path == "/sse":
            self._sse(int(query.get("events", ["3"])[0]), float(query.get("interval", ["0.5"])[0]))
            return
        if url.path == "/slow":
            time.sleep(float(query.get("seconds", ["2"])[0]))
        status = 200
        if url.path.startswith("/status/"):
            status = int(url.path.rsplit("/", 1)[1])
        payload = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
            "origin": self.server.name,
        }
        self._reply(status, json.dumps(payload).encode())

    def _sse(self, events: int, interval: float) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for i in range(events):
            chunk = f"data: event {i} at {time.time():.3f}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
            if i < events - 1:
                time.sleep(interval)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    name = "origin"
    requests: list[tuple[str, str, dict[str, str]]]
    connections: list[bool | None]


class _Server6(_Server):
    address_family = socket.AF_INET6


class HttpOrigin:
    """An HTTP(S) origin in a background thread. `tls=(cert_path, key_path)` makes it HTTPS."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: tuple[Path, Path] | None = None,
        name: str = "origin",
        *,
        client_ca: Path | None = None,
    ) -> None:
        """`client_ca` (with `tls`): require a client certificate issued by that CA (mTLS origin)."""
        self.server = (_Server6 if ":" in host else _Server)((host, port), _Handler)
        self.server.name = name
        self.server.requests = []
        self.server.connections = []  # one entry per connection that sent a request: TLS session resumed?
        self.sni_seen: list[str | None] = []  # the SNI of each TLS handshake
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            ctx.sni_callback = lambda _sock, server_name, _ctx: self.sni_seen.append(server_name)
            if client_ca is not None:
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(cafile=str(client_ca))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
            self._ctx = ctx
        self.host, self.port = self.server.server_address[:2]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def requests(self) -> list[tuple[str, str, dict[str, str]]]:
        return self.server.requests

    @property
    def connections(self) -> list[bool | None]:
        """Per accepted connection (that sent a request), in order: True when its TLS handshake was resumed."""
        return self.server.connections

    def __enter__(self) -> "HttpOrigin":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class _TcpEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(10)
        greeting = getattr(self.server, "greeting", b"")
        if greeting:
            self.request.sendall(greeting)
        while True:
            try:
                data = self.request.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.request.sendall(b"echo:" + data)


class _ThreadingTCP(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class TcpEcho:
    """A raw TCP server answering `echo:<bytes>`; `greeting` is sent first (a server-speaks-first protocol)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, greeting: bytes = b"") -> None:
        self.server = _ThreadingTCP((host, port), _TcpEcho)
        self.server.greeting = greeting  # type: ignore[attr-defined]
        self.host, self.port = self.server.server_address[:2]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "TcpEcho":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class UdpEcho:
    """A UDP server answering each datagram with `echo:<bytes>`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.sock.sendto(b"echo:" + data, addr)

    def __enter__(self) -> "UdpEcho":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.sock.close()
