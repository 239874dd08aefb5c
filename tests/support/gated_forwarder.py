"""A TCP forwarder on loopback that holds each accepted connection until released: an upstream "still dialling".

`accepted` is set when the gateway's connection arrives; nothing is forwarded (so no TLS handshake completes)
until `release` is set, then bytes flow both ways to the target port. Every wait is bounded.
"""

from __future__ import annotations

import socket
import threading


class GatedForwarder:
    def __init__(self, target_port: int, host: str = "127.0.0.1", hold_limit: float = 15.0) -> None:
        self.target = (host, target_port)
        self.hold_limit = hold_limit
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.release = threading.Event()
        self._open: list[socket.socket] = []

    def __enter__(self) -> "GatedForwarder":
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        for s in [self.sock, *self._open]:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._open.append(conn)
            self.accepted.set()
            threading.Thread(target=self._forward, args=(conn,), daemon=True).start()

    def _forward(self, conn: socket.socket) -> None:
        if not self.release.wait(self.hold_limit):
            conn.close()
            return
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            conn.close()
            return
        self._open.append(upstream)
        threading.Thread(target=_pump, args=(upstream, conn), daemon=True).start()
        _pump(conn, upstream)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
