"""Everything egressproxy does to mitmproxy beyond its public addon API, in one place.

mitmproxy's addon hooks cannot express a few things an egress gateway needs, so we reach into its internals:
four patched methods, one patched function, two private names, two internal attributes. Each is a bet that
mitmproxy does not change underneath us. Keeping them here, installed once by the composition root (`egressproxy run`'s master and mitmweb's
`addons/egress.py`), never from an addon's `load()`, means an upgrade has one file to review, and
`tests/unit/test_mitmproxy_boundary.py` pins each bet (signature, attribute, a small behaviour) so that a
mitmproxy release that breaks one fails the unit tests instead of the data plane. pyproject.toml pins the
mitmproxy range these tests passed on.

Patches (`install`):
- `TransparentProxy._handle_event`: mitmproxy asks `next_layer` only when client bytes arrive; with lazy upstream
  connections a server-speaks-first protocol (SMTP, MySQL, FTP banners) then waits forever. The patched start
  asks at once, with no bytes: the listener-matching addon decides when only raw-TCP listeners could take the
  port, and otherwise halts the hook chain and is asked again when data arrives.
- `HttpStream.handle_protocol_error`: mitmproxy answers an upstream failure from deep inside its HTTP layer with
  a fixed text/html page no hook can change. While the client has not seen response headers, the flow is
  answered instead with the `http.Response` the gateway's error factory builds (502/504 with `x-egress-error`),
  through the normal response path, so HTTP/1 and HTTP/2 clients both get it.
- `HttpStream.state_consume_request_body`: mitmproxy buffers a request body whole before the `request` hook, and
  its only cap is the global `body_size_limit`. A flow whose `metadata[BODY_LIMIT_KEY]` holds `(max_bytes,
  answer)` (HTTPListenerPolicy `buffer.maxRequestBytes`, set in `requestheaders` for a body of unknown length)
  is answered with `answer()` as soon as the bytes read pass `max_bytes`; the rest of the upload is never read
  (HTTP/1: the connection closes after the answer; HTTP/2: the stream is reset).
- `mitmproxy.net.http.http1.read_request_head` (hostile input, issue 14): mitmproxy's header parser strips every
  kind of whitespace around a value and joins obs-fold lines, so `Transfer-Encoding: chunked\\x0b` is read as
  chunked while another hop sees an unknown coding. The patched reader first refuses a head with a folded line or
  a control character in a value (`egressproxy.request_head.header_line_problem`); mitmproxy answers 400 and
  closes, as for any head it cannot parse.
- `AsyncioServerInstance.listen` (only with `--workers N`): mitmproxy binds without SO_REUSEPORT and with
  asyncio's backlog of 100; several worker processes share one port only with it.

Private names and internals other modules use from here:
- `default_ciphers` (`mitmproxy.addons.tlsconfig._default_ciphers`) and `create_ssl_context`
  (`mitmproxy.net.tls._create_ssl_context`): our TLS contexts start from mitmproxy's defaults.
- `HttpUpstreamProxy` (`mitmproxy.proxy.layers.http._upstream_proxy`): the CONNECT-to-a-parent tunnel layer.
- `relabel_address`: writes `Server.address` on an open connection, which `Server.__setattr__` refuses.
- `close_upstream`: cancels the task of a flow's upstream connection through `Proxyserver.connections` and
  `ConnectionHandler.transports` (how timeouts end a wait mitmproxy offers no hook for).

`refuse_unsafe_options` is the start-up check of options that must stay off (mitmproxy 12.3's `emudhra` and
`emudhra_old` sign with a publicly known key).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import Any

from mitmproxy import connection, ctx, http
from mitmproxy import flow as mflow
from mitmproxy.addons.tlsconfig import _default_ciphers as default_ciphers
from mitmproxy.net.tls import _create_ssl_context as create_ssl_context
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands, events, layer, mode_servers
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers import modes
from mitmproxy.proxy.layers.http import (
    DropStream,
    ErrorCode,
    HttpErrorHook,
    HttpResponseHeadersHook,
    RequestData,
    ResponseData,
    ResponseEndOfMessage,
    ResponseHeaders,
    ResponseProtocolError,
    SendHttp,
)
from mitmproxy.proxy.layers.http._upstream_proxy import HttpUpstreamProxy

from egressproxy.request_head import header_line_problem

__all__ = [
    "BACKLOG",
    "BODY_LIMIT_KEY",
    "ErrorResponseFactory",
    "HttpUpstreamProxy",
    "UNSAFE_OPTIONS",
    "UnsafeOptions",
    "close_upstream",
    "create_ssl_context",
    "default_ciphers",
    "install",
    "original",
    "original_function",
    "refuse_unsafe_options",
    "relabel_address",
]

# (flow, mitmproxy's error message) -> our response, or None to keep mitmproxy's behaviour.
ErrorResponseFactory = Callable[[http.HTTPFlow, str], http.Response | None]

BACKLOG = 1024
# flow.metadata key: (max_bytes, answer) for a request body of unknown length (see the module docstring)
BODY_LIMIT_KEY = "egress.request_body_limit"
# Options that must stay False: each makes mitmproxy sign with a key anyone can download.
UNSAFE_OPTIONS = ("emudhra", "emudhra_old")

_ORIGINAL: dict[str, Any] = {}
_error_factory: ErrorResponseFactory | None = None


class UnsafeOptions(Exception):
    """A mitmproxy option is set that the gateway refuses to run with."""


def install(*, error_answer: ErrorResponseFactory | None, reuse_port: bool = False) -> None:
    """Install the patches (idempotent; the last error factory installed wins).

    `error_answer` builds the gateway's own response to an upstream failure (None keeps mitmproxy's page);
    `reuse_port` shares the proxy ports between worker processes.
    """
    global _error_factory
    _patch(modes.TransparentProxy, "_handle_event", _transparent_start)
    _error_factory = error_answer
    _patch(http_layers.HttpStream, "handle_protocol_error", _handle_protocol_error)
    _patch(http_layers.HttpStream, "state_consume_request_body", _consume_request_body)
    _patch_function(http1, "read_request_head", _read_request_head)
    if reuse_port:
        _patch(mode_servers.AsyncioServerInstance, "listen", _listen_reuse_port)


def _patch(cls: type, name: str, replacement: Callable[..., Any]) -> None:
    key = f"{cls.__qualname__}.{name}"
    if key not in _ORIGINAL:
        _ORIGINAL[key] = getattr(cls, name)
        setattr(cls, name, replacement)


def original(cls: type, name: str) -> Any:
    """The unpatched method (for tests and the wrappers that fall back to it)."""
    return _ORIGINAL.get(f"{cls.__qualname__}.{name}", getattr(cls, name))


def refuse_unsafe_options(options: Any) -> None:
    """Raise UnsafeOptions naming every option of UNSAFE_OPTIONS that is set (absent ones are fine)."""
    enabled = [name for name in UNSAFE_OPTIONS if name in options and getattr(options, name)]
    if enabled:
        raise UnsafeOptions(
            f"refusing to run with {', '.join(enabled)} enabled: it signs certificates with a publicly known key, "
            "so anyone could impersonate the gateway's upstreams or clients (set it to false)"
        )


# --- transparent connections are classified on start ---------------------------------------------------------


def _transparent_start(self: modes.TransparentProxy, event: events.Event) -> Generator[Any, Any, None]:
    assert isinstance(event, events.Start), event
    assert self.context.server.address, "No server address set."
    self.child_layer = layer.NextLayer(self.context, ask_on_start=True)
    err = yield from self.finish_start()
    if err:
        yield commands.CloseConnection(self.context.client)


# --- gateway error responses ----------------------------------------------------------------------------------


def _handle_protocol_error(self: Any, event: Any) -> Generator[Any, Any, None]:
    replacement = None
    if (
        _error_factory is not None
        and isinstance(event, ResponseProtocolError)
        and self.flow.response is None
        and self.client_state != self.state_errored
        and self.server_state not in (self.state_done, self.state_errored)
    ):
        try:
            replacement = _error_factory(self.flow, event.message)
        except Exception:  # the factory must never make things worse than mitmproxy's own page
            replacement = None
    if replacement is None:
        yield from _ORIGINAL["HttpStream.handle_protocol_error"](self, event)
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


# --- request bodies capped while they are read ------------------------------------------------------------------


def _consume_request_body(self: Any, event: Any) -> Generator[Any, Any, None]:
    yield from _ORIGINAL["HttpStream.state_consume_request_body"](self, event)
    cap = self.flow.metadata.get(BODY_LIMIT_KEY)
    if cap is None or not isinstance(event, RequestData) or self.flow.response is not None:
        return
    max_bytes, answer = cap
    if len(self.request_body_buf) <= max_bytes or self.client_state != self.state_consume_request_body:
        return
    self.request_body_buf.clear()
    self.client_state = self.state_errored  # whatever else the client sends is dropped, never buffered
    self.flow.response = answer()
    yield HttpResponseHeadersHook(self.flow)
    yield from self.send_response()
    yield SendHttp(ResponseEndOfMessage(self.stream_id), self.context.client)
    message = f"request body exceeds {max_bytes} bytes"
    yield SendHttp(ResponseProtocolError(self.stream_id, message, ErrorCode.REQUEST_TOO_LARGE), self.context.client)
    self.server_state = self.state_errored
    self.flow.live = False
    yield DropStream(self.stream_id)


# --- hostile input: request header lines refused before mitmproxy parses them (issue 14, item 3) ----------------


def _patch_function(module: Any, name: str, replacement: Callable[..., Any]) -> None:
    """Replace a module-level function (callers must look it up on the module, as `_http1.py` does `http1.X`)."""
    key = f"{module.__name__}.{name}"
    if key not in _ORIGINAL:
        _ORIGINAL[key] = getattr(module, name)
        setattr(module, name, replacement)


def original_function(module: Any, name: str) -> Any:
    """The unpatched module-level function (for tests)."""
    return _ORIGINAL.get(f"{module.__name__}.{name}", getattr(module, name))


def _read_request_head(lines: list[bytes]) -> http.Request:
    for line in lines[1:]:
        problem = header_line_problem(line)
        if problem is not None:
            raise ValueError(problem)
    request: http.Request = _ORIGINAL[f"{http1.__name__}.read_request_head"](lines)
    return request


# --- SO_REUSEPORT for worker processes ------------------------------------------------------------------------


async def _listen_reuse_port(self: Any, host: str, port: int) -> list[Any]:
    if self.mode.transport_protocol == "tcp" and port != 0:
        server = await asyncio.start_server(self.handle_stream, host or None, port, reuse_port=True, backlog=BACKLOG)
        return [server]
    return list(await _ORIGINAL["AsyncioServerInstance.listen"](self, host, port))


# --- internals read or written outside mitmproxy's event flow -------------------------------------------------


def relabel_address(server: connection.Server, address: tuple[str, int]) -> None:
    """Give an open upstream connection another `address` label (the peer stays `peername`).

    We dial hostAliases and our own DNS answers by setting `server.address` to an IP in `server_connect`.
    mitmproxy reuses an upstream connection only for a request whose (host, port) equals the connection's
    `address`, so a connection left labelled with the IP is never reused. Once the socket is open the address is
    only a label; `Server.__setattr__` refuses to change it on an open connection, so this bypasses that check.
    """
    object.__setattr__(server, "address", address)


def close_upstream(flow: http.HTTPFlow, reason: str) -> bool:
    """Cancel the task of the flow's upstream connection (matched by identity, else by address).

    mitmproxy has no per-request or connect timeout, and a background `flow.kill()` has no effect while its HTTP
    layer waits for the origin; cancelling the task that owns the upstream connection is handled as "connection
    closed" or "connect failed", and the error-response patch then answers when no response has started.
    """
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
