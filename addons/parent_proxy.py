"""Parent mode on the wire: how a request the routes sent through a parent proxy reaches it (DESIGN.md 4.1).

Which traffic goes through a parent is decided with the route (addons/listener_match.py for tunnels,
addons/http_routes.py for requests, which set `server_conn.via` to the parent). This addon turns that into what
proxies expect:

- TLS (intercepted or passthrough) goes in a CONNECT tunnel; `http_connect_upstream` adds
  `Proxy-Authorization: Basic` from the parent Backend's `authSecretRef` (keys `username`/`password`).
- Plain HTTP goes absolute-form (`GET http://host:port/path`), with the credentials on the request itself.
  mitmproxy would CONNECT to the origin's port 80 and send the request inside the tunnel, which the most common
  parent, Squid, refuses by default (`http_access deny CONNECT !SSL_ports`). So the request is re-addressed to
  the parent, its target keeps the origin's authority (an HTTP/1 request with an authority is sent
  absolute-form), and `via` is cleared. It runs in `requestheaders` after the routes addon set the destination.
  A 407 from the parent to such a request is the gateway's credentials failing, not the client's: the client
  gets the same 502 `upstream-unreachable` as when the parent refuses a CONNECT, never the parent's challenge.
"""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.net.http import url

from egressproxy.engine.answers import error_response
from egressproxy.engine.guard import fail_closed
from egressproxy.runtime.state import GatewayState

__all__ = ["ParentProxyAuth"]


class ParentProxyAuth:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self._absolute: set[str] = set()  # flows sent to a parent absolute-form, until their response

    def _authorization(self, host: str, port: int) -> str | None:
        """The compiled `Proxy-Authorization` for the parent at host:port (Snapshot.compiled, seam 3)."""
        snapshot = self.state.snapshot
        return snapshot.compiled.parent_authorization(host, port) if snapshot is not None else None

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        via = flow.server_conn.via
        req = flow.request
        if via is None or flow.response is not None or req.scheme != "http" or req.is_http2 or req.is_http3:
            return  # no parent, answered already, or TLS (which goes in a CONNECT tunnel)
        _, (parent_host, parent_port) = via
        req.authority = url.hostport("http", req.host, req.port)  # the origin, in the request target
        req.data.host, req.data.port = str(parent_host), int(parent_port)  # dial the parent (Host stays the origin's)
        flow.server_conn.via = None
        self._absolute.add(flow.id)
        req.headers.pop("proxy-authorization", None)
        credentials = self._authorization(str(parent_host), int(parent_port))
        if credentials is not None:
            req.headers["proxy-authorization"] = credentials

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.id in self._absolute and flow.response is not None and flow.response.status_code == 407:
            flow.response.stream = False  # read whole, then replaced in `response`

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        if flow.id not in self._absolute:
            return
        self._absolute.discard(flow.id)
        if flow.response is not None and flow.response.status_code == 407:
            detail = "the parent proxy refused the gateway's credentials (407)"
            flow.response = error_response(flow, "upstream-unreachable", detail)

    def error(self, flow: http.HTTPFlow) -> None:
        self._absolute.discard(flow.id)

    @fail_closed
    def http_connect_upstream(self, flow: http.HTTPFlow) -> None:
        address = flow.server_conn.address
        if address is None:
            return
        credentials = self._authorization(str(address[0]), int(address[1]))
        if credentials is not None:
            flow.request.headers["proxy-authorization"] = credentials
