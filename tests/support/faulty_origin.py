"""An origin on loopback that misbehaves on purpose, chosen by the request path (HTTP/1, optionally over TLS).

    with FaultyOrigin() as origin:            # or FaultyOrigin(tls=(cert, key))
        ... GET http://api.example.test:{origin.port}/reset-mid-body
        origin.served -> the paths whose request head arrived, in order

Paths (the query is ignored; anything else is a plain 200 "ok"):
- `/reset-mid-body`: headers announcing 100000 bytes and 1000 of them; once the test sets `release` (it has seen
  the headers: a reset any earlier could discard them unread in the gateway's socket), a TCP reset (SO_LINGER 0).
- `/close-mid-json`: JSON headers announcing 100000 bytes, 1000 of them, then an orderly close (FIN: unlike a
  reset it never discards bytes the gateway has not read, so the failure is surely after the headers).
- `/reset-before-headers`, `/close-before-headers`: the request is read, then a reset / an orderly close.
- `/stall`: the request is read and never answered; `/stall-body`: headers and 1000 of 100000 bytes, then nothing.
- `/garbage-status`, `/bad-chunked`, `/bad-header`: a response HTTP/1 parsers must refuse.

A stalled connection is held until the origin stops (the gateway's timeout, not the origin, must end it).
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from pathlib import Path

__all__ = ["FaultyOrigin"]

_HEAD_100K = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100000\r\n\r\n"
_ANSWERS = {
    "/garbage-status": b"HELLO THIS IS NOT HTTP\r\n\r\n",
    "/bad-chunked": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz-not-hex\r\nabc\r\n0\r\n\r\n",
    "/bad-header": b"HTTP/1.1 200 OK\r\nno colon in this header line\r\ncontent-length: 2\r\n\r\nok",
}


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FaultyOrigin:
    def __init__(self, host: str = "127.0.0.1", tls: tuple[Path, Path] | None = None) -> None:
        self.listener = socket.create_server((host, 0))
        self.host, self.port = self.listener.getsockname()[:2]
        self.served: list[str] = []
        self._ctx: ssl.SSLContext | None = None
        if tls is not None:
            self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ctx.load_cert_chain(str(tls[0]), str(tls[1]))
        self.release = threading.Event()
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            sock = self._ctx.wrap_socket(raw, server_side=True) if self._ctx else raw
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(65536)
                if not chunk:
                    sock.close()
                    return
                head += chunk
            path = head.split(b" ", 2)[1].decode().split("?", 1)[0]
            self.served.append(path)
            self._answer(sock, raw, path)
        except OSError:
            raw.close()

    def _answer(self, sock: socket.socket, raw: socket.socket, path: str) -> None:
        if path in ("/reset-mid-body", "/stall-body"):
            sock.sendall(_HEAD_100K + b"x" * 1000)
        if path == "/close-mid-json":
            sock.sendall(_HEAD_100K.replace(b"text/plain", b"application/json") + b"[" + b"1," * 499 + b"1")
            sock.close()
            return
        if path == "/reset-mid-body":
            self.release.wait(timeout=15)
        if path in ("/reset-mid-body", "/reset-before-headers"):
            _reset(raw)
        elif path == "/close-before-headers":
            sock.close()
        elif path in ("/stall", "/stall-body"):
            self._held.append(sock)
        elif path in _ANSWERS:
            sock.sendall(_ANSWERS[path])
            self._held.append(sock)  # no close: the gateway must not wait for one to notice the fault
        else:
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            self._held.append(sock)

    def __enter__(self) -> "FaultyOrigin":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.listener.close()
        for sock in self._held:
            sock.close()
