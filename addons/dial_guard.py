"""No upstream connection opens unless a decision allowed exactly that destination; hostAliases apply here.

Every dial mitmproxy makes passes through `server_connect`, so this is where "decide before dialling" is
enforced: the connection's record must hold an allowing verdict whose destination is the address being
dialled (or a request decision must have added it). hostAliases then map the allowed name to its configured
address: the name stays the TLS SNI, only the TCP destination changes.
"""

from __future__ import annotations

import logging

from mitmproxy import connection
from mitmproxy.proxy import server_hooks

from egressproxy.engine.guard import fail_closed
from egressproxy.hostnames import InvalidHostname, canonical_host
from egressproxy.runtime.state import GatewayState

log = logging.getLogger("egressproxy")


class DialGuard:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    @fail_closed
    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        server: connection.Server = data.server
        if server.address is None:
            server.error = "egress: no destination"
            return
        host, port = str(server.address[0]), int(server.address[1])
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
        aliases = snapshot.gateway.host_aliases.get(host) if snapshot is not None else None
        if aliases:
            if server.sni is None and not _is_ip(host):
                server.sni = host
            server.address = (aliases[0], port)

    @staticmethod
    def _allowed(record: object, host: str, port: int) -> bool:
        verdict = getattr(record, "verdict", None)
        if verdict is not None and not verdict.allowed:
            return False
        return (host, port) in getattr(record, "allowed_upstreams", ())


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
