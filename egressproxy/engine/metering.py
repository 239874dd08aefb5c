"""Counting the bytes of every client connection, passthrough tunnels included, in one layer of ours.

mitmproxy's passthrough (`TCPLayer(ignore=True)`) creates no flow and fires no hooks, and HTTP flows know
nothing of the bytes on the wire; so no hook can meter a connection. Every event of a connection, though,
enters through its root layer. `MeteredLayer` sits there, around whatever layer decides the connection (a
relay, an interception stack, the explicit proxy), adds the length of each `DataReceived` to the connection's
record - from the client: upstream; from any server connection: downstream - and hands the event on.

It is the passthrough fast path, so the per-event work is one isinstance check and one integer addition, and
the child's generator is returned as is (no extra generator frame per event). The end of the connection is
noticed by the `client_disconnected` hook, which fires for every connection once mitmproxy is done with it.
"""

from __future__ import annotations

from mitmproxy.proxy import events, layer
from mitmproxy.proxy.context import Context

from egressproxy.flowrecord import ConnectionRecord

__all__ = ["MeteredLayer"]


class MeteredLayer(layer.Layer):
    """Counts received bytes per direction into `record`, then passes each event to `child` unchanged.

    It does not appear in `context.layers` (like mitmproxy's NextLayer), so layer-stack checks of mitmproxy and
    of our addons see the same stack with and without it.
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
