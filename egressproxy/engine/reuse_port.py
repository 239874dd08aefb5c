"""SO_REUSEPORT on the proxy's TCP listeners, so `--workers N` processes share one port.

mitmproxy binds with `asyncio.start_server` and offers no option for it; the kernel then spreads new
connections over every process bound to the port. The listen backlog is raised from asyncio's 100 too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mitmproxy.proxy import mode_servers

__all__ = ["install", "BACKLOG"]

BACKLOG = 1024
_original: Any = None


async def _listen(self: Any, host: str, port: int) -> list[Any]:
    if self.mode.transport_protocol == "tcp" and port != 0:
        server = await asyncio.start_server(self.handle_stream, host or None, port, reuse_port=True, backlog=BACKLOG)
        return [server]
    return list(await _original(self, host, port))


def install() -> None:
    global _original
    if _original is None:
        _original = mode_servers.AsyncioServerInstance.listen
        mode_servers.AsyncioServerInstance.listen = _listen  # type: ignore[method-assign]
