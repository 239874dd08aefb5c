"""Transparent UDP: datagrams steered to us by an iptables TPROXY rule, relayed to what the routes allow.

mitmproxy's transparent mode is TCP only (SO_ORIGINAL_DST does not exist for UDP). With TPROXY the kernel
delivers the datagram unchanged to our IP_TRANSPARENT socket and tells us, per datagram, the destination the
workload addressed (IP_RECVORIGDSTADDR). Each (client, destination) pair is a session: it is decided once
with the same `decide_connection` the TCP side uses (a UDP listener, UDPRoutes and EgressL4Routes), then
relayed through a connected upstream socket; replies go back from a transparent socket bound to the original
destination, so the workload sees the answer come from where it sent. Sessions idle out after 60 s; a session
that ends is one finished connection record for the sinks (bytes each way, duration), like a TCP connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from dataclasses import dataclass, field

from egressproxy.decisions import Action, decide_connection, route_name
from egressproxy.flowrecord import UNKNOWN_IDENTITY, FinishedConnection, Verdict
from egressproxy.matching import Carries
from egressproxy.runtime.state import GatewayState

__all__ = ["TransparentUdpRelay", "parse_orig_dst"]

log = logging.getLogger("egressproxy")

IP_TRANSPARENT = 19
IP_RECVORIGDSTADDR = 20
IDLE_SECONDS = 60.0
MAX_SESSIONS = 4096
_CMSG_SPACE = socket.CMSG_SPACE(16)


def parse_orig_dst(ancillary: list[tuple[int, int, bytes]]) -> tuple[str, int] | None:
    """The IPv4 original destination from recvmsg's ancillary data (a struct sockaddr_in)."""
    for level, kind, data in ancillary:
        if level == socket.SOL_IP and kind == IP_RECVORIGDSTADDR and len(data) >= 8:
            port = struct.unpack("!H", data[2:4])[0]
            return socket.inet_ntoa(data[4:8]), port
    return None


@dataclass(eq=False)
class _Session:
    client: tuple[str, int]
    destination: tuple[str, int]
    upstream: socket.socket
    reply: socket.socket
    listener: str
    route: str | None
    gateway: str = ""
    verdict: Verdict | None = None
    last: float = field(default_factory=time.monotonic)
    opened: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.time)
    bytes_upstream: int = 0
    bytes_downstream: int = 0


class TransparentUdpRelay:
    def __init__(self, state: GatewayState, host: str, port: int) -> None:
        self.state = state
        self.host, self.port = host, port
        self.sock: socket.socket | None = None
        self.sessions: dict[tuple[tuple[str, int], tuple[str, int]], _Session] = {}
        self.denied: dict[tuple[tuple[str, int], tuple[str, int]], float] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> bool:
        """Bind the transparent socket; False (with a warning) when the process lacks CAP_NET_ADMIN."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            sock.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            log.warning("transparent UDP relay not started on %s:%s: %s (needs CAP_NET_ADMIN)", self.host, self.port, e)
            return False
        sock.setblocking(False)
        self.sock = sock
        loop = asyncio.get_running_loop()
        loop.add_reader(sock, self._on_datagram)
        self._sweeper = asyncio.ensure_future(self._sweep())
        log.info("transparent-udp listening on %s:%s", self.host, self.port)
        return True

    def stop(self) -> None:
        loop = asyncio.get_running_loop()
        if self.sock is not None:
            loop.remove_reader(self.sock)
            self.sock.close()
            self.sock = None
        for session in list(self.sessions.values()):
            self._close(session)
        if self._sweeper is not None:
            self._sweeper.cancel()

    def _on_datagram(self) -> None:
        assert self.sock is not None
        for _ in range(64):  # bounded batch per wake-up, so one busy client cannot starve the loop
            try:
                data, ancillary, _flags, client = self.sock.recvmsg(65535, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("transparent UDP receive failed: %s", e)
                return
            destination = parse_orig_dst(ancillary)
            if destination is None:
                continue
            try:
                self._relay(data, (client[0], client[1]), destination)
            except Exception:  # fail closed: drop the datagram, count, keep serving
                log.exception("UDP relay failed; dropping the datagram")
                self.state.metrics.hook_errors.labels("TransparentUdpRelay", "datagram").inc()

    def _relay(self, data: bytes, client: tuple[str, int], destination: tuple[str, int]) -> None:
        key = (client, destination)
        session = self.sessions.get(key)
        if session is None:
            if key in self.denied:
                return
            session = self._open(client, destination)
            if session is None:
                return
        session.last = time.monotonic()
        session.upstream.send(data)
        session.bytes_upstream += len(data)

    def _open(self, client: tuple[str, int], destination: tuple[str, int]) -> _Session | None:
        snapshot = self.state.snapshot
        if snapshot is None:
            return None
        decision = decide_connection(snapshot, Carries.UDP, destination[1], ip=destination[0])
        gateway = snapshot.gateway.name
        listener = decision.listener.name if decision.listener else "none"
        verdict = "allow" if decision.action is Action.UDP else "deny"
        self.state.metrics.connections.labels(gateway, listener, route_name(decision.route) or "none", "UDP", verdict).inc()
        if decision.action is not Action.UDP or len(self.sessions) >= MAX_SESSIONS:
            self.denied[(client, destination)] = time.monotonic()
            self.state.metrics.denials.labels(decision.verdict.reason or "no-route").inc()
            log.debug("UDP %s -> %s:%s denied: %s", client, *destination, decision.verdict.reason)
            return None
        upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        upstream.setblocking(False)
        upstream.connect(destination)
        reply = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        reply.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        reply.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reply.bind(destination)
        session = _Session(
            client, destination, upstream, reply, listener, route_name(decision.route), gateway, decision.verdict
        )
        self.sessions[(client, destination)] = session
        asyncio.get_running_loop().add_reader(upstream, self._on_reply, session)
        return session

    def _on_reply(self, session: _Session) -> None:
        for _ in range(64):
            try:
                data = session.upstream.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ICMP port unreachable surfaced as ECONNREFUSED
                return
            session.last = time.monotonic()
            session.reply.sendto(data, session.client)
            session.bytes_downstream += len(data)

    def _close(self, session: _Session) -> None:
        try:
            asyncio.get_running_loop().remove_reader(session.upstream)
        except RuntimeError:
            pass
        session.upstream.close()
        session.reply.close()
        if self.sessions.pop((session.client, session.destination), None) is not None:
            self.state.sinks.connection_finished(_finished(session))

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(5)
            now = time.monotonic()
            for session in [s for s in self.sessions.values() if now - s.last > IDLE_SECONDS]:
                self._close(session)
            for key in [k for k, t in self.denied.items() if now - t > IDLE_SECONDS]:
                del self.denied[key]


def _finished(session: _Session) -> FinishedConnection:
    return FinishedConnection(
        gateway=session.gateway,
        listener=session.listener,
        route=session.route,
        identity=UNKNOWN_IDENTITY,
        verdict=session.verdict,
        host=session.destination[0],
        sni=None,
        carries="UDP",
        started=session.started,
        duration=max(0.0, time.monotonic() - session.opened),
        bytes_upstream=session.bytes_upstream,
        bytes_downstream=session.bytes_downstream,
    )
