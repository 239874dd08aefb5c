"""Client limits at the connection level: the per-address connection cap and the idle / request-head timeouts.

The rules are `egressproxy/client_limits.py`; head sizes are checked inside mitmproxy's HTTP/1 reader
(`mitmproxy_boundary.install_client_limits`, installed by the composition roots with `limits` and `refuse`
below). mitmproxy's own `tcp_timeout` watchdog is reset by every byte, so a client trickling its head one byte a
second is never cut by it; here one sweep task reads the clock of every connection waiting for a head.
"""

from __future__ import annotations

import asyncio
import logging
import time

from mitmproxy import connection, http
from mitmproxy.net.http import http1

from egressproxy.client_limits import TOO_MANY_CONNECTIONS, ClientLimits, ConnectionCounts, overdue
from egressproxy.engine.guard import fail_closed
from egressproxy.engine.mitmproxy_boundary import close_client, undecided_clients, waiting_heads
from egressproxy.responses import client_refusal
from egressproxy.runtime.state import GatewayState

__all__ = ["ClientLimitGuard"]

log = logging.getLogger("egressproxy")

# Sweep period bounds: a quarter of the shortest timeout, so a timeout fires within 25% of its value.
_MIN_TICK, _MAX_TICK = 0.05, 1.0


class ClientLimitGuard:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.counts = ConnectionCounts()
        self.admitted: dict[str, str] = {}  # client id -> source address counted in `counts`
        self._sweeper: asyncio.Task[None] | None = None

    def limits(self) -> ClientLimits | None:
        snapshot = self.state.snapshot
        return snapshot.gateway.client_limits if snapshot is not None else None

    def refuse(self, client: connection.Client, status: int, reason: str) -> bytes:
        """Count and log a refusal; the raw HTTP/1 answer for the boundary patch to send (none for status 0)."""
        self._count(client, reason)
        if not status:
            return b""
        answer = client_refusal(status, reason)
        return http1.assemble_response(http.Response.make(answer.status, answer.body, dict(answer.headers)))

    def _count(self, client: connection.Client, reason: str) -> None:
        self.state.metrics.client_refusals.labels(reason).inc()
        log.info("client %s refused: %s", _address(client), reason)  # never the head: it may hold credentials

    @fail_closed
    def client_connected(self, client: connection.Client) -> None:
        limits = self.limits()
        address = client.peername[0] if client.peername else ""
        cap = limits.max_connections_per_client if limits is not None else 0
        if not self.counts.admit(address, cap):
            client.error = f"{TOO_MANY_CONNECTIONS}: {cap} connections from this address are open"
            self._count(client, TOO_MANY_CONNECTIONS)
            return
        self.admitted[client.id] = address

    def client_disconnected(self, client: connection.Client) -> None:
        address = self.admitted.pop(client.id, None)
        if address is not None:
            self.counts.release(address)

    def running(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    def done(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def _sweep_forever(self) -> None:
        while True:
            limits = self.limits()
            try:
                if limits is not None:
                    self.sweep(limits, time.monotonic())
            except Exception:  # the sweep must outlive one bad tick; the next one retries
                log.exception("client-limit sweep failed")
            await asyncio.sleep(_tick(limits))

    def sweep(self, limits: ClientLimits, now: float) -> int:
        """Close every connection over its idle or request-head timeout; how many were closed."""
        closed = 0
        for client, waiting_since, head_since in [*waiting_heads(), *undecided_clients()]:
            reason = overdue(limits, now, waiting_since, head_since)
            if reason is not None and close_client(client, f"egress: {reason}"):
                self._count(client, reason)
                closed += 1
        return closed


def _tick(limits: ClientLimits | None) -> float:
    timeouts = [t for t in (limits.idle_timeout, limits.request_head_timeout) if t > 0] if limits else []
    return min(_MAX_TICK, max(_MIN_TICK, min(timeouts) / 4)) if timeouts else _MAX_TICK


def _address(client: connection.Client) -> str:
    peer = client.peername
    return f"{peer[0]}:{peer[1]}" if peer else "?"
