"""The passthrough relay: once a tunnel is decided and its upstream is open, its bytes skip the layer stack.

A passthrough tunnel (a TLS Passthrough listener's connection, relayed without a parent proxy) is decided before
its upstream is dialled, and nothing after that looks at its bytes: mitmproxy's `TCPLayer(ignore=True)` forwards
every chunk unchanged. Handing each chunk through mitmproxy's event loop and layers costs far more than the copy
itself, so `DirectRelayLayer` is that TCPLayer which, as soon as the upstream connection is open, marks the pair
for the direct relay in `egressproxy/engine/mitmproxy_boundary.py` (`relay_directly`): from then on each side is
read in a lean loop (read, count into the connection's record, write to the other side, wait while the other
side's write buffer is over its high-water mark).

The end of either stream is still an event of this layer, so half-close (end of stream on one side, `write_eof`
on the other), closing, mitmproxy's inactivity timeout, the graceful drain and the connection's finished record
behave as for any other connection. Bytes that arrived before the mark (the ClientHello, anything the client sent
while the upstream was dialled) went through the layers and the metering layer as usual.
"""

from __future__ import annotations

from mitmproxy.proxy import events, layer, layers
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.utils import expect

from egressproxy.engine.mitmproxy_boundary import ByteMeter, relay_directly

__all__ = ["DirectRelayLayer"]


class DirectRelayLayer(layers.TCPLayer):
    """A passthrough TCPLayer whose pair is relayed directly, counted into `meter`, once the upstream is open."""

    def __init__(self, context: Context, meter: ByteMeter) -> None:
        super().__init__(context, ignore=True)
        self.meter = meter

    @expect(events.Start)
    def start(self, event: events.Event) -> layer.CommandGenerator[None]:
        yield from super().start(event)
        if self._handle_event == self.relay_messages:  # the upstream is open (else the client is being closed)
            relay_directly(self.context.client, self.context.server, self.meter)

    _handle_event = start
