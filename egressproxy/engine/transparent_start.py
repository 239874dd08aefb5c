"""Transparent connections are classified at once, not only when the client first sends something.

mitmproxy's TransparentProxy asks `next_layer` only when client bytes arrive; with lazy upstream connections a
server-speaks-first protocol (SMTP, MySQL, FTP banners) then waits forever: the client waits for the banner, the
gateway waits for the client. This makes the first ask happen on start, with no bytes: the listener-matching
addon decides right away when only raw-TCP listeners could take the destination port, and otherwise halts the
hook chain (mitmproxy's NextLayer must not guess from zero bytes) and is asked again when data arrives.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.layers import modes

__all__ = ["install"]

_installed = False


def _handle_event(self: modes.TransparentProxy, event: events.Event) -> Generator[Any, Any, None]:
    assert isinstance(event, events.Start), event
    assert self.context.server.address, "No server address set."
    self.child_layer = layer.NextLayer(self.context, ask_on_start=True)
    err = yield from self.finish_start()
    if err:
        yield commands.CloseConnection(self.context.client)


def install() -> None:
    global _installed
    if not _installed:
        modes.TransparentProxy._handle_event = _handle_event  # type: ignore[method-assign]
        _installed = True
