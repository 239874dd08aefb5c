"""Graceful stop: on SIGTERM or SIGINT, stop accepting, let in-flight requests finish (bounded), then exit.

mitmproxy's own shutdown sets `should_exit` at once: the event loop then closes with every connection task still
pending, which logs "Task was destroyed but it is pending" and exceptions from the connection handlers' callbacks,
and cuts requests mid-answer. Here the listening sockets close first (new connections are refused, so a load
balancer or the client's retry moves on), connections that wait for their next request head are closed as soon
as they are idle (an HTTP/1 keep-alive connection right after its response, an HTTP/2 connection when its last
stream ends), and whatever is still open when `grace` seconds have passed (a long stream, a passthrough tunnel)
is closed then. Only once every connection task has ended is mitmproxy asked to exit.

A second signal while draining stops at once (the operator insists).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from egressproxy.engine.mitmproxy_boundary import close_client, open_clients, stop_listening, undecided_clients, waiting_heads

__all__ = ["DEFAULT_GRACE", "Drain"]

log = logging.getLogger("egressproxy")

DEFAULT_GRACE = 5.0
# How often idle connections are looked for and closed while draining.
_TICK = 0.05
# After `grace`, how long closed connections get to run their cleanup (hooks, records) before mitmproxy exits.
_CLEANUP = 2.0


class Drain:
    """Stops `master` gracefully on the first call of `request`, at once on the second."""

    def __init__(self, master: Any, grace: float = DEFAULT_GRACE, on_stop: Callable[[], None] = lambda: None) -> None:
        """`on_stop` runs when the drain starts (the gateway turns /ready to 503 with it)."""
        self.master = master
        self.grace = grace
        self.on_stop = on_stop
        self._task: asyncio.Task[None] | None = None

    def request(self) -> None:
        if self._task is not None:
            log.warning("second stop signal: exiting without waiting for in-flight requests")
            self.master.shutdown()
            return
        self.on_stop()
        self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            await self.drain()
        except Exception:  # a failed drain must still stop the process
            log.exception("draining failed; exiting")
        finally:
            self.master.shutdown()

    async def drain(self) -> None:
        started = time.monotonic()
        await stop_listening()
        log.info("stopping: no new connections; waiting up to %gs for %d open connection(s)", self.grace, len(open_clients()))
        deadline = started + self.grace
        while open_clients() and time.monotonic() < deadline:
            close_idle()
            await asyncio.sleep(_TICK)
        left = open_clients()
        if left:
            log.warning("stopping: closing %d connection(s) still busy after %gs", len(left), self.grace)
            for client in left:
                close_client(client, "egress: shutting down")
        cleanup_until = time.monotonic() + _CLEANUP
        while open_clients() and time.monotonic() < cleanup_until:
            await asyncio.sleep(_TICK)
        log.info("stopped accepting and drained in %.2fs", time.monotonic() - started)


def close_idle() -> int:
    """Close every client connection that waits for a request head (its last answer is complete); how many."""
    closed = 0
    for client, _, head_since in [*waiting_heads(), *undecided_clients()]:
        if head_since is None and close_client(client, "egress: shutting down"):
            closed += 1
    return closed
