"""A plain-TCP HTTP/1 origin that keeps every byte it receives, for request-smuggling tests.

`HttpOrigin` (http.server) parses what it gets, so two requests glued into one body look like one request, or a
malformed one is silently dropped. This origin records the raw stream of each connection and counts request
lines in it, whatever framing the bytes claim: a test asserts on what actually crossed the wire.
"""

from __future__ import annotations

import re
import socket
import threading

__all__ = ["RecordingOrigin"]

# A request line anywhere in the stream (at the start or after a line break), the way a lenient origin reads one.
_REQUEST_LINE = re.compile(rb"(?:^|\n)[A-Z]{3,10} \S+ HTTP/\d\.\d\r?\n")
_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class RecordingOrigin:
    """Accepts connections on 127.0.0.1; answers each request head with `200 ok`; records all bytes."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._streams: list[bytearray] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> RecordingOrigin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()

    def clear(self) -> None:
        with self._lock:
            self._streams.clear()

    @property
    def received(self) -> bytes:
        """Everything received so far, connections separated by a blank marker line."""
        with self._lock:
            return b"\n--next connection--\n".join(bytes(s) for s in self._streams)

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._streams)

    def request_lines(self) -> list[bytes]:
        """Every request line in every stream (a smuggled request counts, whatever its claimed framing)."""
        with self._lock:
            streams = [bytes(s) for s in self._streams]
        return [m.group(0).strip() for s in streams for m in _REQUEST_LINE.finditer(s)]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            stream = bytearray()
            with self._lock:
                self._streams.append(stream)
            threading.Thread(target=self._serve, args=(conn, stream), daemon=True).start()

    def _serve(self, conn: socket.socket, stream: bytearray) -> None:
        """Answer once per request line seen (framing ignored on purpose: the count is what matters)."""
        answered = 0
        with conn:
            conn.settimeout(30)
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                with self._lock:
                    stream.extend(chunk)
                    seen = len(_REQUEST_LINE.findall(bytes(stream)))
                try:
                    while answered < seen and b"\r\n\r\n" in stream:
                        conn.sendall(_ANSWER)
                        answered += 1
                except OSError:
                    return
