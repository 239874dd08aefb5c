"""No upstream connection opens unless a decision allowed exactly that destination, at an address we checked.

Every dial mitmproxy makes passes through `server_connect`, so this is where "decide before dialling" is
enforced:

1. the connection's record must hold an allowing verdict whose destination is the (host, port) being dialled
   (or a request decision must have added it), else the dial is refused;
2. the name becomes the one checked address (egressproxy/engine/destinations.py: hostAliases, DNS with the
   effective DNSPolicy, the SSRF guard, reverse DNS), or the address the CONNECT gate already checked and
   pinned; it is written into `server.address` and is what mitmproxy connects to. There is no second lookup:
   a DNS answer that changes (rebinding) cannot slip an address past the check.

The name stays the TLS SNI. Once connected the Server's `address` is relabelled with the name again (its
`peername` keeps the IP), so mitmproxy reuses the connection for the next request to the same name exactly
as it would have without us.

A refused or failed dial leaves its typed outcome (egressproxy/outcomes.py) in the connection record under the
dialled (host, port): a denial Verdict (403 `destination-address-denied` / `reverse-dns-mismatch`) or a
GatewayFailure (502 `upstream-unreachable` when the name does not resolve to an address of the allowed family
or the connect itself fails, 504 `upstream-timeout`). `server.error` only carries text for mitmproxy's logs;
mitmproxy then fails whatever wanted the connection and `addons/gateway_errors.py` answers HTTP requests from
the record. A raw TCP/UDP relay or a TLS passthrough tunnel is closed (through the explicit proxy such a tunnel
was already checked, and refused with 403, by the CONNECT gate).

Resolution has its own time limit (destinations.RESOLVE_TIMEOUT). A cancellation of the connecting task (the request
timeout) that lands while this hook awaits DNS is turned into `server.error` here: mitmproxy would otherwise
never report the dial as finished and the request would hang.
"""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import connection
from mitmproxy.proxy import server_hooks

from egressproxy.engine.guard import fail_closed
from egressproxy.engine.mitmproxy_boundary import relabel_address
from egressproxy.flowrecord import ConnectionRecord
from egressproxy.hostnames import InvalidHostname, canonical_host, is_ip_literal
from egressproxy.outcomes import GatewayFailure, readable_connect_error
from egressproxy.runtime.state import GatewayState

log = logging.getLogger("egressproxy")

class DialGuard:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self._names: dict[str, tuple[str, int]] = {}  # server id -> (name, port) while it connects by address
        self._dials: dict[str, tuple[ConnectionRecord, tuple[str, int]]] = {}  # server id -> record, (host, port)
        self._connect_timers: dict[str, asyncio.TimerHandle] = {}  # server id -> its connect timeout

    @fail_closed
    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        server: connection.Server = data.server
        if server.address is None:
            server.error = "egress: no destination"
            return
        original = server.address
        host, port = str(original[0]), int(original[1])
        try:
            host = canonical_host(host)
        except InvalidHostname:
            server.error = f"egress: invalid destination {host!r}"
            return
        record = self.state.connections.get(data.client.id)
        if record is None or not self._allowed(record, host, port):
            self.state.metrics.denials.labels("dial-not-allowed").inc()
            server.error = f"egress: dial to {host}:{port} was not allowed by any decision"
            log.warning("refused an undecided dial to %s:%s", host, port)
            return
        snapshot = self.state.snapshot
        if snapshot is None:
            server.error = "egress: dial refused: no configuration loaded"
            return
        record.dial_outcomes.pop((host, port), None)  # a new dial: the previous one's outcome no longer applies
        try:
            destination = await self.state.dialer.destination(snapshot, record, host, port)
        except asyncio.CancelledError as e:
            # The request timeout (or the client going away) cancelled the connecting task while we awaited DNS.
            # Swallow it here and fail the dial instead, so mitmproxy reports the connection attempt as finished.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            cause = str(e) or "cancelled"
            failure = GatewayFailure("upstream-timeout", f"dial to {host}:{port} cancelled while resolving ({cause})")
            record.dial_outcomes[(host, port)] = failure
            server.error = failure.server_error
            return
        if destination.address is None:
            if destination.outcome is not None:
                record.dial_outcomes[(host, port)] = destination.outcome
            server.error = destination.error
            return
        address = destination.address
        self._dials[server.id] = (record, (host, port))
        if server.sni is None and not is_ip_literal(host):
            server.sni = host
        if address != str(original[0]):  # always dial the checked spelling, never a variant getaddrinfo parses
            server.address = (address, port)
            self._names[server.id] = original
        self._arm_connect_timeout(server, host, port, snapshot.gateway.connect_timeout)

    def _arm_connect_timeout(self, server: connection.Server, host: str, port: int, timeout: float) -> None:
        """mitmproxy connects without a timeout (a blackholed SYN waits for the kernel's retries, minutes).

        This hook runs inside the task that connects next, so cancelling that task after `timeout` ends the
        attempt; mitmproxy reports it as a failed connect with our message (504 `upstream-timeout` for HTTP).
        Armed last in the hook, so the cancellation cannot land inside a hook.
        """
        task = asyncio.current_task()
        if task is None or timeout <= 0:
            return
        failure = GatewayFailure("upstream-timeout", f"connecting to {host}:{port} did not complete within {timeout:g}s")
        loop = asyncio.get_running_loop()
        self._connect_timers[server.id] = loop.call_later(timeout, self._connect_expired, server.id, task, failure)

    def _connect_expired(self, server_id: str, task: asyncio.Task[object], failure: GatewayFailure) -> None:
        self.state.metrics.upstream_errors.labels(failure.reason).inc()
        dial = self._dials.get(server_id)
        if dial is not None:
            dial[0].dial_outcomes[dial[1]] = failure
        task.cancel(failure.server_error)

    def _disarm(self, server_id: str) -> None:
        timer = self._connect_timers.pop(server_id, None)
        if timer is not None:
            timer.cancel()

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._disarm(data.server.id)
        self._dials.pop(data.server.id, None)
        name = self._names.pop(data.server.id, None)
        if name is not None and data.server.address != name:
            # Open connections refuse a new address (a guard against redirecting them); this only puts back the
            # label, the peer is `peername`. Requests to the same name then reuse this connection.
            relabel_address(data.server, name)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        """The checked address did not accept the connection: an `upstream-unreachable` naming the destination
        (unless the connect timeout already recorded why)."""
        self._disarm(data.server.id)
        self._names.pop(data.server.id, None)
        dial = self._dials.pop(data.server.id, None)
        if dial is None:
            return
        record, (host, port) = dial
        if (host, port) not in record.dial_outcomes:
            peer = data.server.address[0] if data.server.address else "?"
            cause = readable_connect_error(data.server.error) if data.server.error else "connection failed"
            detail = f"connecting to {host}:{port} ({peer}) failed: {cause}"
            record.dial_outcomes[(host, port)] = GatewayFailure("upstream-unreachable", detail)
            self.state.metrics.upstream_errors.labels("upstream-unreachable").inc()

    def server_disconnected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._disarm(data.server.id)
        self._names.pop(data.server.id, None)
        self._dials.pop(data.server.id, None)

    @staticmethod
    def _allowed(record: object, host: str, port: int) -> bool:
        verdict = getattr(record, "verdict", None)
        if verdict is not None and not verdict.allowed:
            return False
        return (host, port) in getattr(record, "upstreams", ())
