"""Marks the gateway ready once every proxy listener is bound, logging one line per bound address."""

from __future__ import annotations

import logging
from collections.abc import Callable

from mitmproxy import ctx

from egressproxy.runtime.state import GatewayState

log = logging.getLogger("egressproxy")


class Readiness:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.failed: list[str] = []
        # Called once every listener is bound (a worker under --workers tells worker 0, egressproxy/commands/run.py).
        self.on_bound: list[Callable[[], None]] = []

    def running(self) -> None:
        proxyserver = ctx.master.addons.get("proxyserver")
        if proxyserver is None:
            return
        self.failed = []
        for server in proxyserver.servers:
            if server.is_running:
                for addr in server.listen_addrs:
                    log.info("%s listening on %s:%s", server.mode.type_name, addr[0], addr[1])
            else:
                self.failed.append(f"{server.mode.full_spec}: {server.last_exception}")
        for failure in self.failed:
            log.error("could not bind %s", failure)
        if self.failed:
            ctx.master.shutdown()  # a gateway missing a listener must not look healthy
        self.state.listeners_bound = not self.failed and len(proxyserver.servers) > 0
        if self.state.listeners_bound:
            for callback in self.on_bound:
                callback()
