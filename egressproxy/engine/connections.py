"""Closing a live flow's upstream connection from outside mitmproxy's event flow (used by timeouts).

mitmproxy has no per-request or connect timeout, and a background `flow.kill()` or `flow.response` has no
effect while its HTTP layer waits for the origin. What does work is cancelling the asyncio task that owns the
upstream connection (mitmproxy handles that cancellation as "connection closed" or "connect failed"); the
gateway-errors wrapper then answers 504 when no response has started. This reaches into
`Proxyserver.connections` and `ConnectionHandler.transports`, which is why it lives here and only here.
"""

from __future__ import annotations

from mitmproxy import connection, ctx, http

__all__ = ["close_upstream", "relabel_address"]


def close_upstream(flow: http.HTTPFlow, reason: str) -> bool:
    """Cancel the task of the flow's upstream connection (matched by identity, else by address)."""
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = proxyserver.connections.get(flow.client_conn.id) if proxyserver is not None else None
    if handler is None:
        return False
    target = (flow.request.host, flow.request.port)
    for conn, io in list(getattr(handler, "transports", {}).items()):
        if conn is flow.client_conn or io.handler is None:
            continue
        if conn is flow.server_conn or getattr(conn, "address", None) == target:
            io.handler.cancel(reason)
            return True
    return False


def relabel_address(server: connection.Server, address: tuple[str, int]) -> None:
    """Give an open upstream connection back the address it was requested with (the decided name).

    We dial hostAliases (and, later, our own DNS answers) by setting `server.address` to an IP in
    `server_connect`. mitmproxy reuses an upstream connection only for a request whose (host, port) equals the
    connection's `address`, so a connection left labelled with the IP is never reused: every request on a
    keep-alive client connection would open a new upstream connection. Once the socket is open, the address is
    only a label; mitmproxy refuses to change it on an open connection through `__setattr__`, so this bypasses
    that check deliberately.
    """
    object.__setattr__(server, "address", address)
