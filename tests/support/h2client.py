"""A raw HTTP/2 client (the `h2` package) through the gateway: CONNECT, TLS with ALPN h2, then frames by hand.

For tests that must misbehave the way no ordinary client does: streams reset the instant they open, more streams
than the server allows, PING/SETTINGS floods, a header block that never ends. Every read is bounded by the
socket timeout; `events()` returns what the gateway sent, and `goaway` / `closed` say how it ended.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import ContinuationFrame, HeadersFrame

from tests.support.rawproxy import open_socket, read_response


class H2Client:
    def __init__(self, proxy: tuple[str, int], authority: str, cafile: Path, timeout: float = 10.0) -> None:
        self.authority = authority
        raw = open_socket(*proxy, timeout=timeout)
        raw.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        answer = read_response(raw, head_only=True)
        assert answer.status == 200, (answer.status, answer.headers)
        ctx = ssl.create_default_context(cafile=str(cafile))
        ctx.set_alpn_protocols(["h2"])
        self.sock = ctx.wrap_socket(raw, server_hostname=authority.rsplit(":", 1)[0])
        assert self.sock.selected_alpn_protocol() == "h2", "the gateway did not negotiate h2"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.received: list[h2.events.Event] = []
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.flush()

    # --- sending -------------------------------------------------------------------------------------------

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request_headers(self, path: str, method: str = "GET") -> list[tuple[str, str]]:
        return [(":method", method), (":scheme", "https"), (":authority", self.authority), (":path", path)]

    def open_stream(self, path: str, *, end_stream: bool = True, extra: list[tuple[str, str]] | None = None) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, self.request_headers(path) + (extra or []), end_stream=end_stream)
        return stream_id

    def rapid_reset(self, path: str, count: int, extra: list[tuple[str, str]] | None = None) -> int:
        """Open `count` streams and reset each at once (HEADERS then RST_STREAM CANCEL), in one write."""
        for _ in range(count):
            self.conn.reset_stream(self.open_stream(path, extra=extra), h2.errors.ErrorCodes.CANCEL)
        self.flush()
        return count

    def allow_streams_beyond_the_servers_limit(self) -> None:
        """Make our h2 state machine ignore the server's SETTINGS_MAX_CONCURRENT_STREAMS (a flooding client)."""
        self.conn.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 2**31 - 1
        self.conn.remote_settings.acknowledge()

    def unterminated_header_block(self, path: str, frames: int, size: int = 16384) -> None:
        """A HEADERS frame without END_HEADERS followed by `frames` CONTINUATION frames of `size` bytes, none ending it."""
        stream_id = self.conn.get_next_available_stream_id()
        block = self.conn.encoder.encode(self.request_headers(path))
        self.sock.sendall(HeadersFrame(stream_id, data=block).serialize())
        filler = b"\x00" * size
        for _ in range(frames):
            try:
                self.sock.sendall(ContinuationFrame(stream_id, data=filler).serialize())
            except OSError:
                self.closed = True
                return

    # --- receiving -----------------------------------------------------------------------------------------

    def events(self, timeout: float = 0.2) -> list[h2.events.Event]:
        """What arrives within `timeout` seconds (nothing blocks longer)."""
        self.sock.settimeout(timeout)
        out: list[h2.events.Event] = []
        try:
            data = self.sock.recv(1 << 20)
        except (TimeoutError, socket.timeout):
            return out
        except OSError:
            self.closed = True
            return out
        if not data:
            self.closed = True
            return out
        try:
            out = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            out = []
        self._note(out)
        try:
            self.flush()
        except OSError:
            self.closed = True
        return out

    def _note(self, events: list[h2.events.Event]) -> None:
        self.received += events
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or self.closed:
                return condition()
            self.events()
        return True

    def wait_closed(self, timeout: float = 10.0) -> bool:
        return self.wait_for(lambda: self.closed, timeout)

    def of_type(self, kind: type) -> list[h2.events.Event]:
        return [e for e in self.received if isinstance(e, kind)]

    def server_setting(self, code: h2.settings.SettingCodes) -> int | None:
        for event in self.of_type(h2.events.RemoteSettingsChanged):
            assert isinstance(event, h2.events.RemoteSettingsChanged)
            if code in event.changed_settings:
                return int(event.changed_settings[code].new_value)
        return None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
