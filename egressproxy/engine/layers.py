"""A layer that closes the client connection at once: how a denied transparent connection ends."""

from __future__ import annotations

from mitmproxy.proxy import commands, events, layer

__all__ = ["CloseLayer"]


class CloseLayer(layer.Layer):
    """Closes the client connection on its first event, without opening anything upstream."""

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if not getattr(self, "_closed", False):
            self._closed = True
            yield commands.CloseConnection(self.context.client)
