"""The passthrough relay (egressproxy/engine/direct_relay.py): once a tunnel is decided and its upstream is open,
its bytes skip mitmproxy's layers. What must still hold: every byte arrives, in order, each way; the end of one
side's stream reaches the other (half-close); a slow reader holds the origin back instead of filling the
gateway's memory; the bytes are metered exactly; a client that goes away takes the upstream connection with it.

The origins here speak raw TCP after a real ClientHello (the passthrough listener routes on its SNI and never
reads further), so each test can state exactly which bytes crossed.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.test_connection_records import PINNED_ROUTE, TLS_PASSTHROUGH, client_hello, metric, wait_for_metric
from tests.support.procstats import sample
from tests.support.rawproxy import connect

pytestmark = pytest.mark.e2e

GATEWAY = f"""
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: deny-all
  listeners:
{TLS_PASSTHROUGH}
  upstreamTLS:
    hostAliases:
    - ip: 127.0.0.1
      hostnames: [pinned.example.test]
"""
ROUTE = dict(gateway="default/eg", listener="tls", route="default/pinned")
CHUNK = 65536


class Origin:
    """Accepts one connection on 127.0.0.1 and runs `serve(conn, origin)` on it in a thread."""

    def __init__(self, serve: Callable[[socket.socket, Origin], None]) -> None:
        self.serve = serve
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.received = bytearray()
        self.sent = 0
        self.go = threading.Event()  # a test's signal to start sending
        self.ended = threading.Event()
        self.error: BaseException | None = None
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(60)
                self.serve(conn, self)
        except OSError as e:
            self.error = e
        finally:
            self.ended.set()

    def read_hello(self, conn: socket.socket, size: int) -> None:
        while len(self.received) < size:
            chunk = conn.recv(CHUNK)
            if not chunk:
                raise ConnectionError("end of stream before the hello")
            self.received += chunk


@pytest.fixture
def origins() -> Iterator[Callable[[Callable[[socket.socket, Origin], None]], Origin]]:
    started: list[Origin] = []

    def start(serve: Callable[[socket.socket, Origin], None]) -> Origin:
        started.append(Origin(serve))
        return started[-1]

    yield start
    for o in started:
        o.listener.close()


def open_tunnel(gw: object, origin: Origin, hello: bytes) -> tuple[socket.socket, int]:
    """CONNECT to the origin through the passthrough listener and send the hello; (socket, CONNECT head size)."""
    authority = f"pinned.example.test:{origin.port}"
    sock, answer = connect(gw.host, gw.port, authority, timeout=60)  # type: ignore[attr-defined]
    assert answer.status == 200, (answer.status, answer.body)
    assert answer.body == b""
    sock.sendall(hello)
    return sock, len(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())


def read_to_end(sock: socket.socket) -> bytes:
    received = bytearray()
    while chunk := sock.recv(CHUNK):
        received += chunk
    return bytes(received)


def test_a_large_transfer_each_way_arrives_byte_exact_and_is_metered_exactly(gateway, origins):
    """8 MiB of random bytes up, echoed back down while still arriving; the client's end of stream reaches the
    origin, whose end of stream reaches the client; the metered bytes are exactly what crossed."""
    hello = client_hello("pinned.example.test")
    payload = hello + os.urandom(8 << 20)

    def echo(conn: socket.socket, origin: Origin) -> None:
        while chunk := conn.recv(CHUNK):
            origin.received += chunk
            conn.sendall(chunk)
        conn.shutdown(socket.SHUT_WR)

    origin = origins(echo)
    gw = gateway(GATEWAY, PINNED_ROUTE)
    sock, head = open_tunnel(gw, origin, hello)

    def upload() -> None:
        view = memoryview(payload)[len(hello):]
        for at in range(0, len(view), CHUNK):
            sock.sendall(view[at : at + CHUNK])
        sock.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=upload, daemon=True)
    sender.start()
    with sock:
        received = read_to_end(sock)
    sender.join(30)

    assert origin.ended.wait(30)
    assert len(received) == len(payload) and received == payload, (len(received), len(payload), gw.logs()[-3000:])
    assert origin.error is None, origin.error
    assert bytes(origin.received) == payload
    text = wait_for_metric(gw, "egress_connection_duration_seconds_count", 1, **ROUTE)
    assert metric(text, "egress_connection_bytes_total", **ROUTE, direction="upstream") == head + len(payload)
    assert metric(text, "egress_connection_bytes_total", **ROUTE, direction="downstream") == len(payload)


def test_the_end_of_the_clients_stream_reaches_the_origin_which_can_still_answer(gateway, origins):
    """Half-close: the client shuts its sending side; the origin reads to the end, then answers in full (also
    through an explicit proxy's CONNECT tunnel, where mitmproxy's own relay closes both sides instead)."""
    hello = client_hello("pinned.example.test")
    request = b"question " * 10_000

    def answer_after_end(conn: socket.socket, origin: Origin) -> None:
        origin.read_hello(conn, len(hello))
        conn.sendall(b"ready; ")  # the tunnel is open end to end (the relay starts once the upstream is open)
        while chunk := conn.recv(CHUNK):
            origin.received += chunk
        conn.sendall(b"read %d bytes; " % len(origin.received) + b"answer " * 50_000)

    origin = origins(answer_after_end)
    gw = gateway(GATEWAY, PINNED_ROUTE)
    sock, head = open_tunnel(gw, origin, hello)
    with sock:
        assert sock.recv(7) == b"ready; "
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        received = b"ready; " + read_to_end(sock)

    expected = b"ready; read %d bytes; " % (len(hello) + len(request)) + b"answer " * 50_000
    assert len(received) == len(expected) and received == expected, (len(received), len(expected))
    text = wait_for_metric(gw, "egress_connection_duration_seconds_count", 1, **ROUTE)
    assert metric(text, "egress_connection_bytes_total", **ROUTE, direction="upstream") == head + len(hello) + len(request)
    assert metric(text, "egress_connection_bytes_total", **ROUTE, direction="downstream") == len(expected)


def wait_until_stalled(origin: Origin, quiet: float = 1.0, timeout: float = 30.0) -> int:
    """The origin's sent count once it has not moved for `quiet` seconds (its socket buffer is full)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline and not origin.ended.is_set():
        if origin.sent != last:
            last, since = origin.sent, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return last
        time.sleep(0.05)  # polling a condition, bounded by the deadline
    raise AssertionError(f"the origin never stalled: sent {origin.sent} bytes, ended={origin.ended.is_set()}")


def test_a_slow_reader_holds_the_origin_back_instead_of_filling_the_gateways_memory(gateway, origins):
    """The client reads nothing while the origin pushes 96 MiB: the gateway stops reading once its write buffer
    toward the client is full, so the origin stalls after what the sockets' kernel buffers hold, and the
    gateway's resident memory stays flat. Then the client reads everything, byte-exact and in order."""
    hello = client_hello("pinned.example.test")
    total = 96 << 20
    block = bytes(range(256)) * (CHUNK // 256)

    def push(conn: socket.socket, origin: Origin) -> None:
        origin.read_hello(conn, len(hello))
        origin.go.wait(30)
        while origin.sent < total:
            conn.sendall(block)
            origin.sent += len(block)
        conn.shutdown(socket.SHUT_WR)

    origin = origins(push)
    gw = gateway(GATEWAY, PINNED_ROUTE)
    sock, _ = open_tunnel(gw, origin, hello)
    with sock:
        pid = gw.proc.pid
        before = sample(pid)
        origin.go.set()
        stalled = wait_until_stalled(origin)
        during = sample(pid)
        assert stalled < total // 2, f"the origin sent {stalled} bytes to a client that read none"
        assert during.rss_kib - before.rss_kib < 16 * 1024, (before, during)

        received = read_to_end(sock)
    assert len(received) == total
    assert received == block * (total // len(block))
    text = wait_for_metric(gw, "egress_connection_duration_seconds_count", 1, **ROUTE)
    assert metric(text, "egress_connection_bytes_total", **ROUTE, direction="downstream") == total


def test_a_client_that_goes_away_mid_transfer_takes_the_upstream_connection_with_it(gateway, origins):
    """The origin streams without end; the client reads a little and closes. The gateway must close the
    upstream connection (the origin's send fails) rather than keep reading an answer nobody can receive."""
    hello = client_hello("pinned.example.test")
    block = b"z" * CHUNK

    def stream_forever(conn: socket.socket, origin: Origin) -> None:
        origin.read_hello(conn, len(hello))
        while True:  # ends when the gateway closes the connection (the send raises)
            conn.sendall(block)
            origin.sent += len(block)

    origin = origins(stream_forever)
    gw = gateway(GATEWAY, PINNED_ROUTE)
    sock, _ = open_tunnel(gw, origin, hello)
    got = 0
    while got < 1 << 20:
        got += len(sock.recv(CHUNK))
    sock.close()  # with unread data queued: the kernel resets the connection

    assert origin.ended.wait(15), f"the upstream connection stayed open; the origin sent {origin.sent} bytes"
    assert isinstance(origin.error, OSError)
    wait_for_metric(gw, "egress_connection_duration_seconds_count", 1, **ROUTE)


def test_a_relayed_tunnel_still_open_at_the_drain_deadline_is_closed_and_the_exit_is_quiet(gateway, origins):
    """SIGTERM with a tunnel whose origin never ends its stream: the drain closes it at the deadline (the origin
    sees its connection end), and the gateway exits 0 without asyncio's complaints about pending tasks."""
    from tests.e2e.test_graceful_stop import UNCLEAN

    hello = client_hello("pinned.example.test")

    def idle_until_closed(conn: socket.socket, origin: Origin) -> None:
        origin.read_hello(conn, len(hello))
        conn.sendall(b"ready")
        while conn.recv(CHUNK):  # ends when the gateway closes the upstream connection
            pass

    origin = origins(idle_until_closed)
    gw = gateway(GATEWAY, PINNED_ROUTE, extra_args=["--drain-seconds", "1s"])
    sock, _ = open_tunnel(gw, origin, hello)
    with sock:
        assert sock.recv(5) == b"ready"  # relayed end to end
        gw.proc.send_signal(signal.SIGTERM)
        code = gw.proc.wait(timeout=15)
        assert read_to_end(sock) == b""  # the gateway closed the client's side too
    logs = gw.logs()
    assert code == 0, logs
    assert origin.ended.wait(10) and origin.error is None, origin.error
    assert "closing 1 connection(s) still busy" in logs
    assert [line for line in logs.splitlines() if any(u in line for u in UNCLEAN)] == [], logs
