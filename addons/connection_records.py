"""Every client connection ends in one finished record for the sinks, with its bytes metered on the way.

At a connection's first `next_layer` (its root) the layer that will decide it is wrapped in a `MeteredLayer`:
whatever takes the connection later - a passthrough relay, an L4 relay, interception, the explicit proxy - is
then metered without any hook of its own. When the client connection is gone (`client_disconnected`, which
mitmproxy fires once for every connection) its record is finished and handed to the sinks.

This addon runs before the connection table (which forgets the record on disconnect) and before the listener
matcher; in either position of mitmweb's script order it wraps a fresh NextLayer, so who decides the connection
and how is unchanged.
"""

from __future__ import annotations

import time

from mitmproxy import connection
from mitmproxy.proxy import layer

from egressproxy.engine.guard import fail_closed
from egressproxy.engine.metering import MeteredLayer
from egressproxy.flowrecord import ConnectionRecord, FinishedConnection
from egressproxy.runtime.state import GatewayState

__all__ = ["ConnectionRecords"]


class ConnectionRecords:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    @fail_closed
    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        context = nextlayer.context
        if context.layers and context.layers[0] is not nextlayer.layer:
            return  # a layer above this one: not the connection's root, which already meters everything
        record = self.state.connection(context.client.id)
        if record.metered:
            return
        record.metered = True
        # Another addon may already have decided (an addon order of a host tool); else decide in a fresh
        # NextLayer below ours, which asks the next_layer hook again with the same data.
        child = nextlayer.layer or layer.NextLayer(context, ask_on_start=True)
        nextlayer.layer = MeteredLayer(context, child, record)

    @fail_closed
    def client_disconnected(self, client: connection.Client) -> None:
        record = self.state.connections.get(client.id)
        if record is None:
            return
        self.state.sinks.connection_finished(self.finished(record, client))

    def finished(self, record: ConnectionRecord, client: connection.Client) -> FinishedConnection:
        snapshot = self.state.snapshot
        return FinishedConnection(
            gateway=snapshot.gateway.name if snapshot is not None else "",
            listener=record.listener or record.request_listener,
            route=record.route or record.request_route,
            identity=record.identity,
            verdict=record.verdict,
            host=record.host,
            sni=record.sni,
            carries=record.carries,
            started=client.timestamp_start or time.time(),
            duration=max(0.0, time.monotonic() - record.opened),
            bytes_upstream=record.bytes_upstream,
            bytes_downstream=record.bytes_downstream,
            requests=record.requests,
            backend=record.backend,
        )
