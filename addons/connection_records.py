"""Every client connection ends in one finished record for the sinks, with its bytes metered on the way.

At `client_connected` the connection's top layer is wrapped in a `MeteredLayer` (egressproxy/engine/metering.py):
whatever takes the connection later - a passthrough relay, an L4 relay, interception, the explicit proxy - is
then metered without any hook of its own, and who decides the connection and how is unchanged. When the client
connection is gone (`client_disconnected`, which mitmproxy fires once for every connection) its record is
finished and handed to the sinks.

This addon runs before the connection table, which forgets the record on disconnect.
"""

from __future__ import annotations

import time
from typing import Any

from mitmproxy import connection, ctx

from egressproxy.engine.guard import fail_closed
from egressproxy.engine.metering import meter_connection
from egressproxy.flowrecord import ConnectionRecord, FinishedConnection
from egressproxy.runtime.state import GatewayState

__all__ = ["ConnectionRecords"]


class ConnectionRecords:
    def __init__(self, state: GatewayState, proxyserver: Any = None) -> None:
        self.state = state
        self.proxyserver = proxyserver  # mitmproxy's Proxyserver addon (its `connections`), found when running

    @fail_closed
    def client_connected(self, client: connection.Client) -> None:
        if self.proxyserver is None:
            self.proxyserver = ctx.master.addons.get("proxyserver")
        meter_connection(self.proxyserver, client, self.state.connection(client.id))

    @fail_closed
    def client_disconnected(self, client: connection.Client) -> None:
        record = self.state.connections.get(client.id)
        if record is None:
            return
        self.state.sinks.connection_finished(self.finished(record, client))

    def finished(self, record: ConnectionRecord, client: connection.Client) -> FinishedConnection:
        snapshot = self.state.snapshot
        denied_host, denied_listener, denied_verdict = record.denied_connect or (None, None, None)
        return FinishedConnection(
            gateway=snapshot.gateway.name if snapshot is not None else "",
            listener=record.listener or record.request_listener or denied_listener,
            route=record.route or record.request_route,
            identity=record.identity,
            verdict=record.verdict or denied_verdict,
            host=record.host or denied_host,
            sni=record.sni,
            carries=record.carries,
            started=client.timestamp_start or time.time(),
            duration=max(0.0, time.monotonic() - record.opened),
            bytes_upstream=record.bytes_upstream,
            bytes_downstream=record.bytes_downstream,
            requests=record.requests,
            backend=record.backend,
        )
