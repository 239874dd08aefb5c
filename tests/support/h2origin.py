"""An HTTP/2-only TLS origin (the `h2` package): answers every stream with JSON describing the request.

The JSON says which protocol the origin spoke (`"http_version": "HTTP/2"`), so a test can tell whether the
gateway reached it over HTTP/2; the origin only offers ALPN `h2`, so an HTTP/1.1-only client fails the handshake.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions


class H2Origin:
    def __init__(self, tls: tuple[Path, Path], host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.host, self.port = self.sock.getsockname()[:2]
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(tls[0]), str(tls[1]))
        self.ctx.set_alpn_protocols(["h2"])
        self.requests: list[dict[str, str]] = []  # pseudo-headers and headers of each stream
        self.connections = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "H2Origin":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.sock.close()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        self.connections += 1
        h2conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        h2conn.initiate_connection()
        try:
            conn.sendall(h2conn.data_to_send())
            headers: dict[int, dict[str, str]] = {}
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                for event in h2conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        headers[event.stream_id] = {k: v for k, v in event.headers}  # type: ignore[misc]
                        if event.stream_ended is not None:
                            self._answer(h2conn, event.stream_id, headers.pop(event.stream_id))
                    elif isinstance(event, h2.events.DataReceived):
                        h2conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id in headers:
                        self._answer(h2conn, event.stream_id, headers.pop(event.stream_id))
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        conn.sendall(h2conn.data_to_send())
                        return
                conn.sendall(h2conn.data_to_send())
        except (OSError, ssl.SSLError, h2.exceptions.ProtocolError):
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _answer(self, h2conn: h2.connection.H2Connection, stream_id: int, request: dict[str, str]) -> None:
        self.requests.append(request)
        body = json.dumps({"http_version": "HTTP/2", "path": request.get(":path"), "authority": request.get(":authority")}).encode()
        h2conn.send_headers(
            stream_id,
            [(":status", "200"), ("content-type", "application/json"), ("content-length", str(len(body))), ("x-origin", "h2")],
        )
        h2conn.send_data(stream_id, body, end_stream=True)
