"""Counting the bytes of every client connection, passthrough tunnels included, in one layer of ours.

mitmproxy's passthrough (`TCPLayer(ignore=True)`) creates no flow and fires no hooks, and HTTP flows know
nothing of the bytes on the wire; so no hook can meter a connection. Every event of a connection, though,
enters through its top layer (`ProxyConnectionHandler.layer`, which mitmproxy's server instance sets to the
mode's layer - HttpProxy, TransparentProxy, ... - without asking `next_layer`). `meter_connection` puts a
`MeteredLayer` on top of it at `client_connected`, before the connection's first event: whatever later takes
the connection (a passthrough or L4 relay, interception, the explicit proxy) is metered without a hook of its
own. The layer adds the length of each `DataReceived` to the connection's record - from the client: upstream;
from any server connection: downstream - and hands the event on.

It is the passthrough fast path, so the per-event work is one isinstance check and one integer addition, and
the child's generator is returned as is (no extra generator frame per event). The end of the connection is
noticed by the `client_disconnected` hook, which fires for every connection once mitmproxy is done with it.

This is the one place that reaches into mitmproxy's connection handlers (`Proxyserver.connections`, public
but undocumented); `tests/unit/test_metering.py` pins what it relies on.
"""

from __future__ import annotations

from typing import Any

from mitmproxy import connection
from mitmproxy.proxy import events, layer
from mitmproxy.proxy.context import Context

from egressproxy.flowrecord import ConnectionRecord

__all__ = ["MeteredLayer", "meter_connection"]


def meter_connection(proxyserver: Any, client: connection.Client, record: ConnectionRecord) -> bool:
    """Put a MeteredLayer on top of `client`'s connection handler; False when mitmproxy has no handler for it."""
    connections = getattr(proxyserver, "connections", None)
    handler: Any = connections.get(client.id) if isinstance(connections, dict) else None
    top = getattr(handler, "layer", None)
    if handler is None or not isinstance(top, layer.Layer) or isinstance(top, MeteredLayer):
        return False
    handler.layer = MeteredLayer(top.context, top, record)
    record.metered = True
    return True


class MeteredLayer(layer.Layer):
    """Counts received bytes per direction into `record`, then passes each event to `child` unchanged.

    It does not appear in `context.layers` (like mitmproxy's NextLayer), so layer-stack checks of mitmproxy and
    of our addons (`context.layers[0]` is the mode's layer) see the same stack with and without it.
    """

    def __init__(self, context: Context, child: layer.Layer, record: ConnectionRecord) -> None:
        super().__init__(context)
        context.layers.remove(self)
        self.child = child
        self.record = record
        self._client = context.client

    def __repr__(self) -> str:
        return f"MeteredLayer({self.child!r})"

    def handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if isinstance(event, events.DataReceived):
            if event.connection is self._client:
                self.record.bytes_upstream += len(event.data)
            else:
                self.record.bytes_downstream += len(event.data)
        return self.child.handle_event(event)

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:  # pragma: no cover
        return self.handle_event(event)
