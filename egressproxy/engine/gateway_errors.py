"""Gateway error responses (502/504 with `x-egress-error`) in place of mitmproxy's HTML error pages.

mitmproxy answers an upstream failure from deep inside its HTTP layer (`HttpStream.handle_protocol_error` sends
a `ResponseProtocolError`, which the HTTP/1 and HTTP/2 server layers turn into a fixed text/html page); no hook
can change that page. We wrap that one method: when the client has not yet seen response headers, the flow is
answered with a real `http.Response` built by the registered factory, through the normal response path, so
HTTP/1 and HTTP/2 clients both get our status, headers and JSON body. Everything else is left to mitmproxy.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http import (
    DropStream,
    HttpErrorHook,
    ResponseData,
    ResponseEndOfMessage,
    ResponseHeaders,
    ResponseProtocolError,
    SendHttp,
)

__all__ = ["install", "ErrorResponseFactory"]

# (flow, mitmproxy's error message) -> our response, or None to keep mitmproxy's behaviour.
ErrorResponseFactory = Callable[[http.HTTPFlow, str], http.Response | None]

_factory: ErrorResponseFactory | None = None
_original: Any = None


def install(factory: ErrorResponseFactory) -> None:
    """Route gateway errors through `factory` (idempotent; the last factory installed wins)."""
    global _factory, _original
    _factory = factory
    if _original is None:
        _original = http_layers.HttpStream.handle_protocol_error
        http_layers.HttpStream.handle_protocol_error = _handle_protocol_error  # type: ignore[method-assign]


def _handle_protocol_error(self: Any, event: Any) -> Generator[Any, Any, None]:
    replacement = None
    if (
        _factory is not None
        and isinstance(event, ResponseProtocolError)
        and self.flow.response is None
        and self.client_state != self.state_errored
        and self.server_state not in (self.state_done, self.state_errored)
    ):
        try:
            replacement = _factory(self.flow, event.message)
        except Exception:  # the factory must never make things worse than mitmproxy's own page
            replacement = None
    if replacement is None:
        yield from _original(self, event)
        return
    self.flow.error = mflow.Error(event.message)
    self.flow.response = replacement  # set first, so error-hook observers see the status the client gets
    yield HttpErrorHook(self.flow)
    body = replacement.raw_content or b""
    yield SendHttp(ResponseHeaders(self.stream_id, replacement, end_stream=not body), self.context.client)
    if body:
        yield SendHttp(ResponseData(self.stream_id, body), self.context.client)
        yield SendHttp(ResponseEndOfMessage(self.stream_id), self.context.client)
    self.server_state = self.state_errored
    self.flow.live = False
    yield DropStream(self.stream_id)
