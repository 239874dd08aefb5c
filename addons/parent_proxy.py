"""Parent mode: credentials on the CONNECT the gateway sends to its parent proxy.

Which traffic goes through a parent is decided with the route (addons/listener_match.py for tunnels,
addons/http_routes.py for requests); this addon only adds `Proxy-Authorization: Basic` from the parent
Backend's `authSecretRef` (keys `username`/`password`) to the CONNECT mitmproxy sends upstream. The header value
is compiled with the snapshot (`Snapshot.compiled.parent_authorization`), by the parent's address.
"""

from __future__ import annotations

from mitmproxy import http

from egressproxy.engine.guard import fail_closed
from egressproxy.runtime.state import GatewayState


class ParentProxyAuth:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    @fail_closed
    def http_connect_upstream(self, flow: http.HTTPFlow) -> None:
        snapshot = self.state.snapshot
        address = flow.server_conn.address
        if snapshot is None or address is None:
            return
        authorization = snapshot.compiled.parent_authorization(str(address[0]), int(address[1]))
        if authorization is not None:
            flow.request.headers["proxy-authorization"] = authorization
