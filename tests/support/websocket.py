"""A tiny WebSocket echo origin and client (wsproto, RFC 6455), plain or over TLS, for end-to-end tests.

The origin answers the upgrade on any path, echoes each text message as `echo:<text>` and records the
handshake request's path and headers; the client speaks through an already-open socket (e.g. a CONNECT tunnel).
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)


class WebSocketOrigin:
    """Echo origin on loopback; `tls=(cert, key)` makes it wss."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, tls: tuple[Path, Path] | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.host, self.port = self.sock.getsockname()[:2]
        self.ctx: ssl.SSLContext | None = None
        if tls is not None:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.ctx.set_alpn_protocols(["http/1.1"])
        self.handshakes: list[tuple[str, dict[str, str]]] = []
        self.messages: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "WebSocketOrigin":
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

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            if self.ctx is not None:
                conn = self.ctx.wrap_socket(conn, server_side=True)
            ws = WSConnection(ConnectionType.SERVER)
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        self.handshakes.append((event.target, {k.decode().lower(): v.decode() for k, v in event.extra_headers}))
                        conn.sendall(ws.send(AcceptConnection()))
                    elif isinstance(event, TextMessage):
                        self.messages.append(event.data)
                        conn.sendall(ws.send(Message(data="echo:" + event.data)))
                    elif isinstance(event, BytesMessage):
                        conn.sendall(ws.send(Message(data=b"echo:" + bytes(event.data))))
                    elif isinstance(event, Ping):
                        conn.sendall(ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        conn.sendall(ws.send(event.response()))
                        return
        except (OSError, ssl.SSLError):
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass


class WebSocketClient:
    """A client over an open (possibly TLS) socket: handshake, send text, receive text, close."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket, host: str, target: str = "/") -> None:
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host=host, target=target)))
        event = self._next_event()
        if isinstance(event, RejectConnection):
            raise ConnectionError(f"WebSocket upgrade rejected with status {event.status_code}")
        if not isinstance(event, AcceptConnection):
            raise ConnectionError(f"unexpected WebSocket handshake event {event!r}")

    def _next_event(self) -> object:
        while True:
            for event in self.ws.events():
                return event
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed during the WebSocket exchange")
            self.ws.receive_data(data)

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(Message(data=text)))

    def receive_text(self) -> str:
        parts: list[str] = []
        while True:
            event = self._next_event()
            if isinstance(event, TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    return "".join(parts)
            elif isinstance(event, CloseConnection):
                raise ConnectionError(f"WebSocket closed: {event.code} {event.reason}")

    def close(self) -> None:
        try:
            self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        except OSError:
            pass
