"""Parent mode: credentials on the CONNECT the gateway sends to its parent proxy.

Which traffic goes through a parent is decided with the route (addons/listener_match.py for tunnels,
addons/http_routes.py for requests); this addon only adds `Proxy-Authorization: Basic` from the parent
Backend's `authSecretRef` (keys `username`/`password`) to the CONNECT mitmproxy sends upstream.
"""

from __future__ import annotations

import base64

from mitmproxy import http

from egressproxy.engine.guard import fail_closed
from egressproxy.runtime.state import GatewayState
from egressproxy.snapshot import ParentProxy, Snapshot


def parents_by_address(snapshot: Snapshot) -> dict[tuple[str, int], ParentProxy]:
    out: dict[tuple[str, int], ParentProxy] = {}
    backends = list(snapshot.backends.values())
    if snapshot.gateway.parent is not None:
        backends.append(snapshot.gateway.parent)
    for backend in backends:
        parent = backend.parent
        if parent is not None and parent.address is not None:
            out[(parent.address.host, parent.address.port)] = parent
    return out


class ParentProxyAuth:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self._index: tuple[int, dict[tuple[str, int], ParentProxy]] = (-1, {})

    def _parents(self) -> dict[tuple[str, int], ParentProxy]:
        snapshot = self.state.snapshot
        if snapshot is None:
            return {}
        if self._index[0] != snapshot.generation:
            self._index = (snapshot.generation, parents_by_address(snapshot))
        return self._index[1]

    @fail_closed
    def http_connect_upstream(self, flow: http.HTTPFlow) -> None:
        address = flow.server_conn.address
        if address is None:
            return
        parent = self._parents().get((str(address[0]), int(address[1])))
        if parent is not None and parent.username is not None:
            token = base64.b64encode(f"{parent.username}:{parent.password or ''}".encode()).decode()
            flow.request.headers["proxy-authorization"] = f"Basic {token}"
