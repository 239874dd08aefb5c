"""Everything egressproxy does to mitmproxy beyond its public addon API, in one place.

mitmproxy's addon hooks cannot express a few things an egress gateway needs, so we reach into its internals:
five patched methods, one patched function, two private names, two internal attributes. Each is a bet that
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
  through the normal response path, so HTTP/1 and HTTP/2 clients both get it. An upstream failure after the
  response headers (reset or broken body mid-response) is noted in `flow.metadata[RESPONSE_FAILURE_KEY]`, so
  the `error` hook can tell it from a client that went away; a buffered response that breaks mid-body has sent
  the client nothing yet, so it is answered like a failure before the headers.
- `HttpStream.state_consume_request_body`: mitmproxy buffers a request body whole before the `request` hook, and
  its only cap is the global `body_size_limit`. A flow whose `metadata[BODY_LIMIT_KEY]` holds `(max_bytes,
  answer)` (HTTPListenerPolicy `buffer.maxRequestBytes`, set in `requestheaders` for a body of unknown length)
  is answered with `answer()` as soon as the bytes read pass `max_bytes`; the rest of the upload is never read
  (HTTP/1: the connection closes after the answer; HTTP/2: the stream is reset).
- HTTP/2 abuse (a separate block at the end; budgets and counting in `egressproxy/h2_abuse.py`):
  `Http2Server.handle_h2_event` counts the client's RST_STREAM, PING and SETTINGS frames per connection and cuts a
  connection that spends a budget (GOAWAY ENHANCE_YOUR_CALM, then close); `BufferedH2Connection.receive_data`
  (server side) drops the request of a stream the client reset in the same read, so it never becomes a flow;
  `BufferedH2Connection._receive_headers_frame` (server side) answers a stream beyond our
  SETTINGS_MAX_CONCURRENT_STREAMS with RST_STREAM REFUSED_STREAM instead of h2's connection error, so it never
  reaches the origin and the client's other streams live on (until refusals spend their own budget);
  `HttpStream.make_server_connection` drops a request whose client reset it while the upstream was being dialled
  (mitmproxy checks for a reset after each hook, not after the dial, and would forward it).
- Client limits (`install_client_limits`, its own block below): `Http1Server.read_headers` is replaced while
  limits are installed. mitmproxy reads a request head until its blank line with no cap (its own "FIXME: protect
  against header size DoS") and answers a head it cannot parse with an HTML page that echoes the request line.
  Ours refuses a head over `maxRequestHeadBytes` while it is still arriving and one with more than
  `maxRequestHeaders` lines (431), and a malformed one (400; `CONNECT :443`, userinfo, a bad port), each with
  the gateway's JSON answer, then drains and drops what the client still sends and closes. `Http1Server.__init__`
  and `mark_done` are wrapped to stamp when a connection starts waiting for a head and when its first byte came,
  which `waiting_heads` reads for the idle and head timeouts; `Http1Server.wait` is wrapped so that a client
  sending more than a request head's worth ahead of its response (mitmproxy buffers it all) is cut;
  `Http2Server.__init__` and `_handle_event` are wrapped to stamp when an HTTP/2 connection's last stream closed; `undecided_clients` finds connections whose layer
  mitmproxy has not chosen yet (nothing or too little received); `close_client` ends such a connection.
- `mitmproxy.net.http.http1.read_request_head` (hostile input, issue 14): mitmproxy's header parser strips every
  kind of whitespace around a value and joins obs-fold lines, so `Transfer-Encoding: chunked\\x0b` is read as
  chunked while another hop sees an unknown coding. The patched reader first refuses a head with a folded line or
  a control character in a value (`egressproxy.request_head.head_lines_problem`: one scan of the joined head,
  line by line only when it holds a suspect byte); it is then answered like
  any head that does not parse (with client limits installed: our JSON 400 `malformed-request`, then close).
- `ConnectionHandler.handle_connection` (the direct relay, its own block at the end; issue 16): a copy of
  mitmproxy's read loop (its source is pinned by hash) in which a connection marked by `relay_directly` - both
  sides of a decided passthrough tunnel, once its upstream is open (`egressproxy/engine/direct_relay.py`) - is
  read in a lean loop (read, count, write to the peer, backpressure by the peer's high-water mark); only the ends
  of the streams reach the layers, and the end of one stream half-closes the other.
- `AddonManager.handle_lifecycle` (issue 16, its own block at the end): the methods of each hook are looked up
  once per addon chain instead of walked for every event, with mitmproxy's order and error isolation; a chain
  holding a container addon (mitmweb's script loader) keeps mitmproxy's own walk.
- `ConnectionHandler.server_event` (issue 16, its own block at the end; source pinned by hash): a copy of
  mitmproxy's in which a hook whose plan has no coroutine function runs after the event's commands and is
  completed in the same call, instead of becoming a task that takes the handler's lock again to complete it.
- `AsyncioServerInstance.listen` (only with `--workers N`): mitmproxy binds without SO_REUSEPORT and with
  asyncio's backlog of 100; several worker processes share one port only with it.

Private names and internals other modules use from here:
- `default_ciphers` (`mitmproxy.addons.tlsconfig._default_ciphers`) and `create_ssl_context`
  (`mitmproxy.net.tls._create_ssl_context`): our TLS contexts start from mitmproxy's defaults.
- `HttpUpstreamProxy` (`mitmproxy.proxy.layers.http._upstream_proxy`): the CONNECT-to-a-parent tunnel layer.
- `relabel_address`: writes `Server.address` on an open connection, which `Server.__setattr__` refuses.
- `close_upstream`: cancels the task of a flow's upstream connection through `Proxyserver.connections` and
  `ConnectionHandler.transports` (how timeouts end a wait mitmproxy offers no hook for).

Graceful stop (`egressproxy/runtime/drain.py`, its own block at the end): `stop_listening` closes the listening
sockets through `Proxyserver.servers.update([])`, `open_clients` lists `Proxyserver.connections` (a connection
leaves it once mitmproxy's cleanup for it has run).

Clients that gave up (`addons/abandoned_clients.py`, its own block at the end): `gave_up_waiting` reads the TCP
state of a just-accepted client's socket through `Proxyserver.connections` and `ConnectionHandler.transports`.

Hot-path caches (its own block at the end): `bound_cert_store` sets `CertStore.STORE_CAP` (a class attribute
mitmproxy offers no option for) to the gateway's `--cert-cache-size`.

`refuse_unsafe_options` is the start-up check of options that must stay off (mitmproxy 12.3's `emudhra` and
`emudhra_old` sign with a publicly known key).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import inspect
import logging
import os
import socket
import time
import types
import weakref
from collections.abc import Callable, Generator, Iterator
from typing import Any, Literal, Protocol

import h2.connection
import h2.errors
import h2.events
import h2.exceptions
from hyperframe.frame import HeadersFrame
from h11._receivebuffer import ReceiveBuffer

from mitmproxy import addonmanager, certs, connection, ctx, hooks, http
from mitmproxy import exceptions as mitmproxy_exceptions
from mitmproxy.connection import ConnectionState
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
    RequestProtocolError,
    RequestHeaders,
    ResponseData,
    ResponseEndOfMessage,
    ResponseHeaders,
    ResponseProtocolError,
    SendHttp,
)
from mitmproxy.proxy.layers.http import _http1, _http2
from mitmproxy.proxy.layers.http._base import ReceiveHttp
from mitmproxy.proxy.layers.http._http2 import Http2Server
from mitmproxy.proxy.layers.http._http_h2 import BufferedH2Connection
from mitmproxy.proxy.layers.http._upstream_proxy import HttpUpstreamProxy
from mitmproxy.proxy.server import ConnectionHandler, ConnectionIO
from mitmproxy.utils import asyncio_utils

from egressproxy.h2_abuse import DEFAULT_LIMITS, FrameKind, H2AbuseGuard, H2Limits
from egressproxy.client_limits import MALFORMED, SENT_AHEAD, ClientLimits, ahead_limit, head_refusal
from egressproxy.request_head import head_lines_problem

__all__ = [
    "BACKLOG",
    "BODY_LIMIT_KEY",
    "ByteMeter",
    "HANDLE_CONNECTION_SHA256",
    "HANDLE_HOOK_SHA256",
    "HOOK_TASK_SHA256",
    "SERVER_EVENT_SHA256",
    "RESPONSE_FAILURE_KEY",
    "ClientRefusal",
    "ErrorResponseFactory",
    "H2RefusalCounter",
    "HttpUpstreamProxy",
    "UNSAFE_OPTIONS",
    "UnsafeOptions",
    "close_client",
    "close_upstream",
    "create_ssl_context",
    "default_ciphers",
    "gave_up_waiting",
    "install",
    "install_client_limits",
    "open_clients",
    "original",
    "original_function",
    "refuse_unsafe_options",
    "relabel_address",
    "relay_directly",
    "relayed_directly",
    "stop_listening",
    "undecided_clients",
    "waiting_heads",
]

# (flow, mitmproxy's error message) -> our response, or None to keep mitmproxy's behaviour.
ErrorResponseFactory = Callable[[http.HTTPFlow, str], http.Response | None]

# reason -> None: counts an HTTP/2 connection cut or a stream refused for abuse (egress_client_refusals_total)
H2RefusalCounter = Callable[[str], None]

BACKLOG = 1024
# flow.metadata key: (max_bytes, answer) for a request body of unknown length (see the module docstring)
BODY_LIMIT_KEY = "egress.request_body_limit"
# Options that must stay False: each makes mitmproxy sign with a key anyone can download.
UNSAFE_OPTIONS = ("emudhra", "emudhra_old")

# (client connection, status, reason) -> the raw HTTP/1 answer to send (status 0: none, the connection is just
# cut); counts and logs the refusal.
ClientRefusal = Callable[[connection.Client, int, str], bytes]

_ORIGINAL: dict[str, Any] = {}
_error_factory: ErrorResponseFactory | None = None


class UnsafeOptions(Exception):
    """A mitmproxy option is set that the gateway refuses to run with."""


def install(
    *,
    error_answer: ErrorResponseFactory | None,
    reuse_port: bool = False,
    h2_refusal: H2RefusalCounter | None = None,
    h2_limits: H2Limits = DEFAULT_LIMITS,
) -> None:
    """Install the patches (idempotent; the last error factory, counter and limits installed win).

    `error_answer` builds the gateway's own response to an upstream failure (None keeps mitmproxy's page);
    `reuse_port` shares the proxy ports between worker processes; `h2_refusal` counts each HTTP/2 connection cut
    and stream refused for abuse, by reason; `h2_limits` are the per-connection budgets.
    """
    global _error_factory
    _install_h2_abuse(h2_refusal, h2_limits)
    _patch(modes.TransparentProxy, "_handle_event", _transparent_start)
    _error_factory = error_answer
    _patch(http_layers.HttpStream, "handle_protocol_error", _handle_protocol_error)
    _patch(http_layers.HttpStream, "state_consume_request_body", _consume_request_body)
    _patch_function(http1, "read_request_head", _read_request_head_strictly)
    _install_direct_relay()
    _install_hook_plans()
    _install_inline_hooks()
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
    _note_response_failure(self, event)  # faults block below: a response that broke after its headers
    replacement = None
    if (
        _error_factory is not None
        and isinstance(event, ResponseProtocolError)
        and _client_saw_no_response(self)  # faults block below
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


# --- responses that break after their headers (faults) ---------------------------------------------------------
# flow.metadata key: mitmproxy's message for an upstream failure after the response headers arrived
RESPONSE_FAILURE_KEY = "egress.response_failure"


def _note_response_failure(stream: Any, event: Any) -> None:
    """Leave the message of an upstream failure that came after the response headers on the flow.

    mitmproxy then fires `error` with `flow.response` already set, and a hook cannot tell an upstream that reset
    or sent a broken body from a client that went away: only the event's type (a `ResponseProtocolError` comes
    from the upstream side) says which. The gateway-errors addon counts and marks the former.
    """
    if isinstance(event, ResponseProtocolError) and not _client_saw_no_response(stream):
        stream.flow.metadata[RESPONSE_FAILURE_KEY] = event.message


def _client_saw_no_response(stream: Any) -> bool:
    """No response byte went to the client yet: none arrived, or it is being buffered whole (not streamed:
    mitmproxy sends a buffered response's headers only after its body), so the failure can still be answered."""
    return stream.flow.response is None or stream.server_state == stream.state_consume_response_body


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


def _read_request_head_strictly(lines: list[bytes]) -> http.Request:
    problem = head_lines_problem(lines)
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


# --- HTTP/2 abuse: rapid reset, stream floods, PING and SETTINGS floods -----------------------------------------
# Only the client side (mitmproxy's Http2Server and the server-side h2 connection it owns) is touched; upstream
# connections keep mitmproxy's behaviour. h2 4.x already bounds an unterminated header block (64 CONTINUATION
# frames, tests/unit/test_mitmproxy_boundary.py pins it), so there is no patch for that.

REFUSED_STREAM_REASON = "h2-refused-stream"
_H2_GUARD_ATTR = "_egress_h2_guard"
_H2_FRAME_KINDS: dict[type, FrameKind] = {
    h2.events.StreamReset: FrameKind.RESET,
    h2.events.PingReceived: FrameKind.PING,
    h2.events.PingAckReceived: FrameKind.PING,
    h2.events.RemoteSettingsChanged: FrameKind.SETTINGS,
}
_h2_refusal: H2RefusalCounter | None = None
_h2_limits: H2Limits = DEFAULT_LIMITS


def _install_h2_abuse(refusal: H2RefusalCounter | None, limits: H2Limits) -> None:
    global _h2_refusal, _h2_limits
    _h2_refusal, _h2_limits = refusal, limits
    _patch(Http2Server, "handle_h2_event", _h2_server_event)
    _patch(BufferedH2Connection, "receive_data", _h2_receive_data)
    _patch(BufferedH2Connection, "_receive_headers_frame", _h2_receive_headers_frame)
    _patch(http_layers.HttpStream, "make_server_connection", _make_server_connection)


def _count_h2_refusal(reason: str) -> None:
    if _h2_refusal is not None:
        try:
            _h2_refusal(reason)
        except Exception:  # counting must never break the connection handling
            pass


def h2_guard(conn: h2.connection.H2Connection) -> H2AbuseGuard:
    """The budgets of one client connection, created with it on first use."""
    guard: H2AbuseGuard | None = conn.__dict__.get(_H2_GUARD_ATTR)
    if guard is None:
        guard = H2AbuseGuard(_h2_limits)
        setattr(conn, _H2_GUARD_ATTR, guard)
    return guard


class _StreamFlood(h2.exceptions.DenialOfServiceError):
    """Raised inside h2's receive_data when refused streams spend their budget: h2 then sends GOAWAY
    ENHANCE_YOUR_CALM itself and hands the error to mitmproxy's layer, where `_h2_server_event` closes."""


def _h2_server_event(self: Any, event: h2.events.Event) -> Generator[Any, Any, bool]:
    if isinstance(event, _StreamFlood):
        yield from _h2_cut(self, str(event))
        yield commands.SendData(self.conn, self.h2_conn.data_to_send())  # h2's GOAWAY ENHANCE_YOUR_CALM
        yield from self.close_connection(f"HTTP/2 {event}")
        return True
    kind = _H2_FRAME_KINDS.get(type(event))
    if kind is not None and (spent := h2_guard(self.h2_conn).observe(kind)) is not None:
        yield from _h2_cut(self, spent.value)
        yield from self.protocol_error(f"HTTP/2 {spent.value}: closing the connection", h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        return True
    handled: bool = yield from _ORIGINAL["Http2Server.handle_h2_event"](self, event)
    return handled


def _h2_cut(server: Any, reason: str) -> Generator[Any, Any, None]:
    """Count and log a client connection cut for abuse (the peer address and the reason, nothing it sent)."""
    _count_h2_refusal(reason)
    peer = server.conn.peername
    where = f"{peer[0]}:{peer[1]}" if peer else "unknown"
    yield commands.Log(f"HTTP/2 client {where} cut: {reason}", logging.WARNING)


def _h2_receive_data(self: BufferedH2Connection, data: Any) -> list[h2.events.Event]:
    events: list[h2.events.Event] = _ORIGINAL["BufferedH2Connection.receive_data"](self, data)
    if self.config.client_side:
        return events
    return _without_reset_requests(self, events)


def _without_reset_requests(conn: BufferedH2Connection, events: list[h2.events.Event]) -> list[h2.events.Event]:
    """The events minus every event of a stream both opened and reset in this read (its StreamReset stays, so
    the reset is counted; mitmproxy ignores a reset of a stream it never saw). Their DATA is still acknowledged."""
    reset = {e.stream_id for e in events if isinstance(e, h2.events.StreamReset)}
    if not reset:
        return events
    dropped = {e.stream_id for e in events if isinstance(e, h2.events.RequestReceived) and e.stream_id in reset}
    if not dropped:
        return events
    kept: list[h2.events.Event] = []
    for event in events:
        stream_id = getattr(event, "stream_id", None)
        if stream_id not in dropped or isinstance(event, h2.events.StreamReset):
            kept.append(event)
        elif isinstance(event, h2.events.DataReceived) and event.flow_controlled_length:
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    return kept


def _h2_receive_headers_frame(self: BufferedH2Connection, frame: HeadersFrame) -> tuple[list[Any], list[Any]]:
    over_limit = (
        not self.config.client_side
        and frame.stream_id not in self.streams
        and self.open_inbound_streams + 1 > self.local_settings.max_concurrent_streams
    )
    if not over_limit:
        result: tuple[list[Any], list[Any]] = _ORIGINAL["BufferedH2Connection._receive_headers_frame"](self, frame)
        return result
    return _refuse_stream(self, frame)


def _refuse_stream(conn: BufferedH2Connection, frame: HeadersFrame) -> tuple[list[Any], list[Any]]:
    """RFC 9113 5.1.2: a stream beyond SETTINGS_MAX_CONCURRENT_STREAMS is a stream error (REFUSED_STREAM).

    The header block is still decoded (HPACK state is shared by the connection) and the stream is opened in h2's
    state machine only to be reset at once, so h2 answers later frames of it as frames of a reset stream. No
    event comes out: mitmproxy never sees the request. Refusals past their budget end the connection.
    """
    headers = h2.connection._decode_headers(conn.decoder, frame.data)
    conn.state_machine.process_input(h2.connection.ConnectionInputs.RECV_HEADERS)
    stream = conn._get_or_create_stream(frame.stream_id, h2.connection.AllowedStreamIDs.ODD)
    stream.receive_headers(headers, "END_STREAM" in frame.flags, conn.config.header_encoding)
    conn.reset_stream(frame.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
    _count_h2_refusal(REFUSED_STREAM_REASON)
    if (spent := h2_guard(conn).observe(FrameKind.REFUSED)) is not None:
        raise _StreamFlood(spent.value)
    return [], []


def _make_server_connection(self: Any) -> Generator[Any, Any, bool]:
    """mitmproxy's dial, then the check it makes after each hook: a reset that arrived while the upstream
    connection was opened waits in the stream's queue, and the request must not go out (the dial is kept)."""
    ok: bool = yield from _ORIGINAL["HttpStream.make_server_connection"](self)
    if ok and any(isinstance(e, RequestProtocolError) for e in self._paused_event_queue):
        yield from self.check_killed(True)
        return False
    return ok
# --- client limits: request heads capped while they arrive, waits stamped for the timeouts -----------------------
# (egressproxy/client_limits.py holds the rules; addons/client_limits.py applies the timeouts and the connection cap)

_limits_of: Callable[[], ClientLimits | None] | None = None
_refusal: ClientRefusal | None = None
# Every live HTTP/1 server side: the timeout sweep reads their clocks (weak: a closed connection drops out).
_head_readers: weakref.WeakSet[Any] = weakref.WeakSet()
# Every live HTTP/2 server side: idle (no open stream) since when, for the idle timeout.
_h2_servers: weakref.WeakSet[Any] = weakref.WeakSet()
# Bytes a refused client may still send (drained and dropped, so it can read our answer) before a hard close.
_LINGER_BYTES = 1 << 20


def install_client_limits(limits: Callable[[], ClientLimits | None], refusal: ClientRefusal) -> None:
    """Cap HTTP/1 request heads and stamp head waits (idempotent; the last callbacks installed win).

    `limits()` is read for every head, so a reload applies to the next head read; None means no limits.
    """
    global _limits_of, _refusal
    _limits_of, _refusal = limits, refusal
    _patch(_http1.Http1Server, "__init__", _server_init)
    _patch(_http1.Http1Server, "read_headers", _read_request_head)
    _patch(_http1.Http1Server, "mark_done", _server_mark_done)
    _patch(_http1.Http1Server, "wait", _server_wait)
    _patch(_http2.Http2Server, "__init__", _h2_server_init)
    _patch(_http2.Http2Server, "_handle_event", _h2_idle_clock_event)


def _server_init(self: Any, context: Any) -> None:
    _ORIGINAL["Http1Server.__init__"](self, context)
    self._egress_waiting_since = time.monotonic()
    self._egress_head_since = None
    _head_readers.add(self)


def _server_mark_done(self: Any, *, request: bool = False, response: bool = False) -> Generator[Any, Any, None]:
    yield from _ORIGINAL["Http1Server.mark_done"](self, request=request, response=response)
    if self.state == self.read_headers and not self.buf:  # keep-alive: the wait for the next head starts now
        self._egress_waiting_since = time.monotonic()
        self._egress_head_since = None


def _h2_server_init(self: Any, context: Any) -> None:
    _ORIGINAL["Http2Server.__init__"](self, context)
    self._egress_idle_since = time.monotonic()
    _h2_servers.add(self)


def _h2_idle_clock_event(self: Any, event: events.Event) -> Generator[Any, Any, None]:
    yield from _ORIGINAL["Http2Server._handle_event"](self, event)
    if self.h2_conn.open_inbound_streams:
        self._egress_idle_since = None
    elif self._egress_idle_since is None:  # the last open stream just closed
        self._egress_idle_since = time.monotonic()


def _server_wait(self: Any, event: events.Event) -> Generator[Any, Any, None]:
    """While a request waits for its response, mitmproxy keeps reading and appends whatever the client sends
    next to its buffer, without bound; past `ahead_limit` the client is cut (its request is ended as if it had
    disconnected)."""
    limits = _limits_of() if _limits_of is not None else None
    if limits is None or _refusal is None or not isinstance(event, events.DataReceived):
        yield from _ORIGINAL["Http1Server.wait"](self, event)
        return
    if len(self.buf) <= ahead_limit(limits):
        return
    _refusal(self.conn, 0, SENT_AHEAD)
    self.buf = ReceiveBuffer()
    self._egress_lingered = _LINGER_BYTES  # anything more is dropped
    self.state = _linger.__get__(self)
    message = "client sent too much ahead of its response"
    yield ReceiveHttp(http_layers.RequestProtocolError(self.stream_id, message, code=ErrorCode.CLIENT_DISCONNECTED))
    _close_soon(self.conn, SENT_AHEAD)


def _read_request_head(self: Any, event: events.Event) -> Generator[Any, Any, None]:
    limits = _limits_of() if _limits_of is not None else None
    if limits is None or _refusal is None or not isinstance(event, events.DataReceived):
        yield from _ORIGINAL["Http1Server.read_headers"](self, event)
        return
    if self.buf and getattr(self, "_egress_head_since", None) is None:
        self._egress_head_since = time.monotonic()
    lines = self.buf.maybe_extract_lines()
    if not lines:  # still arriving (None), or a stray blank line before the head ([]), as mitmproxy allows
        if reason := head_refusal(limits, len(self.buf), None):
            yield from _refuse_head(self, 431, reason)
        return
    if reason := head_refusal(limits, sum(len(line) + 2 for line in lines), len(lines) - 1):
        yield from _refuse_head(self, 431, reason)
        return
    try:
        self.request = http1.read_request_head([bytes(x) for x in lines])
        expected_body_size = http1.expected_http_body_size(self.request)
    except ValueError:  # mitmproxy's message quotes the request line, which may carry userinfo: never echo it
        self.request = None
        yield from _refuse_head(self, 400, MALFORMED)
        return
    yield ReceiveHttp(RequestHeaders(self.stream_id, self.request, expected_body_size == 0))
    self.body_reader = _http1.make_body_reader(expected_body_size)
    self.state = self.read_body
    yield from self.state(event)


def _refuse_head(self: Any, status: int, reason: str) -> Generator[Any, Any, None]:
    assert _refusal is not None
    answer = _refusal(self.conn, status, reason)
    self.buf = ReceiveBuffer()
    self._egress_lingered = 0
    self.state = self._egress_linger = _linger.__get__(self)
    yield commands.SendData(self.conn, answer)
    # Half-close: a full close with unread bytes in the socket makes the kernel reset the connection, and the
    # client would lose the answer; the rest of its head is read and dropped until it closes or sends too much.
    yield commands.CloseTcpConnection(self.conn, half_close=True)


def _linger(self: Any, event: events.Event) -> Generator[Any, Any, None]:
    if isinstance(event, events.DataReceived):
        self._egress_lingered += len(self.buf)
        self.buf = ReceiveBuffer()
        if self._egress_lingered > _LINGER_BYTES:
            _close_soon(self.conn, "linger")
        return
    yield commands.CloseConnection(self.conn)


def _close_soon(client: connection.Client, reason: str) -> None:
    """Close the client from outside its own event: a CloseConnection command cancels the client's reader task
    from inside itself, and while the client keeps sending, that task does not reach a point where it notices
    (seen: the socket stayed open with 140 KB unread)."""
    asyncio.get_running_loop().call_soon(close_client, client, f"egress: {reason}")


def waiting_heads() -> Iterator[tuple[connection.Client, float, float | None]]:
    """(client, waiting since, first head byte at or None) of each HTTP/1 connection waiting for a request head,
    and (client, idle since, None) of each HTTP/2 connection with no open stream.

    Times are `time.monotonic()`. Connections reading a body, waiting for a response, or piped into a tunnel or
    WebSocket are not waiting for a head and are never listed.
    """
    for server in list(_head_readers):
        conn = server.conn
        if server.state == server.read_headers and conn.state & connection.ConnectionState.CAN_READ:
            yield conn, server._egress_waiting_since, server._egress_head_since
    for h2_server in list(_h2_servers):  # HTTP/2: only the idle clock, while no stream is open
        conn, idle_since = h2_server.conn, h2_server._egress_idle_since
        if idle_since is not None and conn.state & connection.ConnectionState.CAN_READ:
            yield conn, idle_since, None


def undecided_clients() -> Iterator[tuple[connection.Client, float, float | None]]:
    """(client, accepted at, accepted at or None) of each TCP client whose protocol is not decided yet.

    mitmproxy picks a connection's layer only when its first bytes arrive (a regular-mode client that connects
    and sends nothing has no HTTP/1 reader yet), and waits for more while the bytes do not tell (half a request
    line, half a ClientHello). Such a connection is on the idle clock from accept while it sent nothing, on the
    head clock from accept once it sent something (times are `time.monotonic()`).
    """
    proxyserver = ctx.master.addons.get("proxyserver")
    if proxyserver is None:
        return
    wall_to_monotonic = time.monotonic() - time.time()
    for handler in list(proxyserver.connections.values()):
        client = handler.client
        if client.transport_protocol != "tcp" or not client.state & connection.ConnectionState.CAN_READ:
            continue
        pending = _undecided(getattr(handler, "layer", None))
        if pending is not None:
            accepted = client.timestamp_start + wall_to_monotonic
            has_data = any(isinstance(e, events.DataReceived) for e in pending.events)
            yield client, accepted, accepted if has_data else None


def _undecided(top: Any) -> layer.NextLayer | None:
    """The NextLayer still waiting to choose in a connection's layer chain, if any."""
    current = top
    while current is not None:
        if isinstance(current, layer.NextLayer):
            if current.layer is None:
                return current
            current = current.layer
        elif (child := getattr(current, "child_layer", None) or getattr(current, "child", None)) is not None:
            current = child  # `child`: our MeteredLayer (egressproxy/engine/metering.py)
        else:  # HttpProxy keeps its child only as its `_handle_event`, bound to the child
            delegate = getattr(getattr(current, "_handle_event", None), "__self__", None)
            current = delegate if isinstance(delegate, layer.Layer) and delegate is not current else None
    return None


def close_client(client: connection.Client, reason: str) -> bool:
    """Close a client connection from outside its event flow (as mitmproxy's own inactivity timeout does)."""
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = proxyserver.connections.get(client.id) if proxyserver is not None else None
    io = getattr(handler, "transports", {}).get(client) if handler is not None else None
    if io is None:
        return False
    if io.writer is not None and not io.writer.is_closing():
        # Closing the socket ends the reader task the ordinary way (end of stream, then mitmproxy's own cleanup);
        # cancelling that task instead can skip the cleanup when it is waiting to hand an event to its layers.
        io.writer.close()
        return True
    if io.handler is None:
        return False
    io.handler.cancel(reason)
    return True


# --- graceful stop: listeners closed, open client connections listed (egressproxy/runtime/drain.py) -------------


async def stop_listening() -> None:
    """Close every listening socket of the running master's modes (open connections are not touched)."""
    proxyserver = ctx.master.addons.get("proxyserver")
    if proxyserver is not None:
        await proxyserver.servers.update([])


def open_clients() -> list[connection.Client]:
    """The client of every connection the running master still handles (until its cleanup has finished)."""
    proxyserver = ctx.master.addons.get("proxyserver")
    if proxyserver is None:
        return []
    return [handler.client for handler in list(proxyserver.connections.values())]


# --- clients that gave up before they were accepted (addons/abandoned_clients.py) --------------------------------

_TCP_CLOSE_WAIT = 8  # linux/tcp_states.h: the peer sent FIN, we have not closed


def gave_up_waiting(client: connection.Client) -> bool:
    """True when `client` closed its side of the TCP connection before the gateway first looked at it, having
    sent nothing or only a CONNECT (a tunnel whose client cannot send any more is of no use to it).

    Go's HTTP transport dials a spare connection when no idle one is ready and closes it as soon as an idle one
    frees up first; under load the kernel's accept queue fills with such connections. Read from the socket's
    TCP_INFO state (Linux) and a peek at its first bytes; False whenever that cannot be read.
    """
    proxyserver = ctx.master.addons.get("proxyserver")
    handler = proxyserver.connections.get(client.id) if proxyserver is not None else None
    io = getattr(handler, "transports", {}).get(client) if handler is not None else None
    sock = io.writer.get_extra_info("socket") if io is not None and io.writer is not None else None
    if sock is None or client.transport_protocol != "tcp":
        return False
    try:
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != _TCP_CLOSE_WAIT:
            return False
        with socket.socket(fileno=os.dup(sock.fileno())) as peek:
            head = peek.recv(8, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (OSError, AttributeError, IndexError):
        return False
    return head == b"" or head.startswith(b"CONNECT ")


# --- direct relay: a decided tunnel's bytes skip the layer stack (issue 16, egressproxy/engine/direct_relay.py) ---
# mitmproxy hands every chunk a connection reads to its layers as an event (a lock, the inactivity watchdog, a
# generator per layer, a command per chunk) and then drains every writer of the connection. Once a passthrough
# tunnel is decided and its upstream is open, none of that decides anything. `relay_directly` marks the pair;
# the patched `ConnectionHandler.handle_connection` then reads such a connection in a lean loop (read, count,
# write to the peer, wait only when the peer's write buffer is over its high-water mark) and hands the end of the
# stream back to mitmproxy's own code, so half-close, close, hooks and cleanup are mitmproxy's, unchanged.

_RELAY_ATTR = "_egress_direct_relay"
# The source of mitmproxy's `ConnectionHandler.handle_connection` our copy below follows (tests pin its hash).
HANDLE_CONNECTION_SHA256 = "95c3f93e9824e527cd3c1af9656c0e04690562abcd23f0b029d547257fb53f94"


class ByteMeter(Protocol):
    """Where a relay counts bytes: read from the client (upstream) and from the server (downstream)."""

    bytes_upstream: int
    bytes_downstream: int


class _Ends:
    """How many sides of a relayed pair have seen their stream end, and the wait of the first for the second."""

    __slots__ = ("count", "both")

    def __init__(self) -> None:
        self.count = 0
        self.both: asyncio.Future[None] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _Relay:
    peer: connection.Connection
    meter: ByteMeter
    from_client: bool
    ends: _Ends


def relay_directly(client: connection.Client, server: connection.Server, meter: ByteMeter) -> None:
    """From the next read on, bytes between `client` and `server` skip the layer stack, counted into `meter`.

    Only for a pair whose layer would forward every chunk unchanged (a passthrough TCPLayer). The end of one
    side's stream half-closes the other (`write_eof`), also inside an explicit proxy's CONNECT tunnel, where
    mitmproxy's HTTP layer would turn it into a full close; the layers see both ends once both streams have ended.
    A failed read (a reset), a cancelled task (close, inactivity timeout, drain) or a peer that is gone reach the
    layers at once, which close the pair.
    """
    ends = _Ends()
    client.__dict__[_RELAY_ATTR] = _Relay(server, meter, True, ends)
    server.__dict__[_RELAY_ATTR] = _Relay(client, meter, False, ends)


def relayed_directly(conn: connection.Connection) -> bool:
    return _RELAY_ATTR in conn.__dict__


def _install_direct_relay() -> None:
    _patch(ConnectionHandler, "handle_connection", _handle_connection)


async def _handle_connection(self: Any, conn: connection.Connection) -> None:
    """mitmproxy 12.3.1's `ConnectionHandler.handle_connection` (`connection` renamed `conn`), plus the lines
    marked `egress`: a connection marked by `relay_directly` is read by `_relay` instead."""
    cancelled = None
    reader = self.transports[conn].reader
    assert reader
    while True:
        relay = conn.__dict__.get(_RELAY_ATTR)  # egress
        if relay is not None:  # egress
            ended, cancelled = await _relay(self, conn, reader, relay)  # egress
            if ended:  # egress
                break  # egress
        try:
            data = await reader.read(65535)
            if not data:
                raise OSError("Connection closed by peer.")
        except OSError:
            break
        except asyncio.CancelledError as e:
            cancelled = e
            break

        await self.server_event(events.DataReceived(conn, data))

        try:
            await self.drain_writers()
        except asyncio.CancelledError as e:
            cancelled = e
            break

    if cancelled is None and conn.transport_protocol == "tcp":
        # TCP connections can be half-closed.
        conn.state &= ~ConnectionState.CAN_READ
    else:
        conn.state = ConnectionState.CLOSED

    await self.server_event(events.ConnectionClosed(conn))

    if conn.state is ConnectionState.CAN_WRITE:
        # we may still use this connection to *send* stuff,
        # even though the remote has closed their side of the connection.
        # to make this work we keep this task running and wait for cancellation.
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError as e:
            cancelled = e

    try:
        writer = self.transports[conn].writer
        assert writer
        writer.close()
    except OSError:
        pass
    self.transports.pop(conn)

    if cancelled:
        raise cancelled


async def _relay(handler: Any, conn: connection.Connection, reader: Any, relay: _Relay) -> tuple[bool, asyncio.CancelledError | None]:
    """Copy `conn`'s bytes to its peer until the stream ends: (True, the CancelledError if the task was cancelled,
    else None); (False, None) when the peer has no transport (the caller goes on the ordinary way).

    Per chunk: one read, one byte count, the inactivity watchdog's clock, one write; the peer's high-water mark
    gives backpressure (no read while its write buffer is full). Once the peer's socket is closing, what this side
    sends can go nowhere: the relay stops reading, and mitmproxy's close handling ends the pair.
    """
    peer_io = handler.transports.get(relay.peer)
    writer = peer_io.writer if peer_io is not None else None
    if not isinstance(writer, asyncio.StreamWriter):
        del conn.__dict__[_RELAY_ATTR]
        return False, None
    transport = writer.transport
    own = handler.transports[conn].writer.transport
    high_water = transport.get_write_buffer_limits()[1]
    watchdog = handler.timeout_watchdog
    meter, from_client, clock = relay.meter, relay.from_client, time.time
    while True:
        try:
            data = await reader.read(65535)
        except OSError:
            return True, None
        except asyncio.CancelledError as e:
            return True, e
        if not data:  # the end of the stream: the peer's, or ours closing this socket (drain, close_client)
            return (True, None) if own.is_closing() else await _half_close(writer, relay.ends)
        if transport.is_closing():
            return True, None
        if from_client:
            meter.bytes_upstream += len(data)
        else:
            meter.bytes_downstream += len(data)
        watchdog.last_activity = clock()
        transport.write(data)
        if transport.get_write_buffer_size() > high_water:
            try:
                await writer.drain()
            except OSError as e:
                if peer_io.handler is not None:
                    peer_io.handler.cancel(f"Error sending data: {e}")
                return True, None
            except asyncio.CancelledError as e:
                return True, e


async def _half_close(peer: asyncio.StreamWriter, ends: _Ends) -> tuple[bool, asyncio.CancelledError | None]:
    """This side's stream ended: end the peer's sending side (after what is queued for it), then wait until the
    peer's stream ends too, so that the layers, which close the pair on the first end they see, see both."""
    if not peer.transport.is_closing() and peer.can_write_eof():
        try:
            peer.write_eof()
        except OSError:
            return True, None
    ends.count += 1
    if ends.count >= 2:
        if ends.both is not None and not ends.both.done():
            ends.both.set_result(None)
        return True, None
    ends.both = asyncio.get_running_loop().create_future()
    try:
        await ends.both
    except asyncio.CancelledError as e:
        return True, e
    return True, None
# --- hot-path caches: mitmproxy's certificate store bounded like ours (issue 16, item 5) ------------------------


def bound_cert_store(size: int) -> None:
    """Bound mitmproxy's own leaf cache (`CertStore.STORE_CAP`, 100 and no option) like ours.

    Our CertMint presents every intercepted leaf; TlsConfig's CertStore only mints when no gateway CA applies
    (mitmweb's own flows), but a store that evicts at 100 while ours keeps `size` would make that path mint again
    long before ours does. A class attribute: it applies to the store mitmproxy already built, too.
    """
    certs.CertStore.STORE_CAP = max(1, size)
# --- hook dispatch: one plan per hook instead of mitmproxy's walk of the addon chain (issue 16) ------------------
#
# For every hook of every connection mitmproxy's `AddonManager.handle_lifecycle` walks the whole chain: per chain
# entry a coroutine, a `safecall` context manager, a `traverse` generator and a `getattr`, per method found a
# fresh `Hook.args()` (a `dataclasses.fields` walk); then, for a flow, the same walk again for `update`, which in
# `egressproxy run` nobody defines. The patched `handle_lifecycle` looks the methods up once per chain and hook
# (the plan) and calls them in the same order with the same isolation: a method that raises is logged as
# mitmproxy's "Addon error" and ends only its own chain entry's turn, `AddonHalt` ends the event (then `update`
# runs, as before), `OptionsError` propagates. The plan is kept while the chain holds the same addons and no
# addon in it is a container (an `addons` attribute: mitmproxy's script loader, whose children change on a
# reload); any other chain, mitmweb's among them, takes mitmproxy's own walk unchanged.

_addon_log = logging.getLogger("mitmproxy.addonmanager")  # where mitmproxy's `safecall` logs an addon's failure

HookPlan = tuple[tuple[Callable[..., Any], ...], ...]  # per chain entry, its methods for one hook


class _HookPlans:
    """The methods of a fixed chain of addons, per hook name (looked up at the first event of each hook)."""

    def __init__(self, chain: tuple[Any, ...]) -> None:
        self.chain = chain
        self.static = not any(hasattr(a, "addons") for a in chain)
        self.by_hook: dict[str, HookPlan] = {}
        # per hook: (its plan, update's plan) when both are all synchronous (may run inline), else False
        self.synchronous: dict[str, tuple[HookPlan, HookPlan] | Literal[False]] = {}

    def plan(self, name: str) -> HookPlan:
        found = self.by_hook.get(name)
        if found is None:
            found = self.by_hook[name] = tuple(m for m in (_entry_methods(a, name) for a in self.chain) if m)
        return found


def _entry_methods(addon: Any, name: str) -> tuple[Callable[..., Any], ...]:
    """What mitmproxy's `_iter_hooks` finds on one chain entry (no children: containers are not planned)."""
    func = getattr(addon, name, None)
    if not func or isinstance(func, types.ModuleType):
        return ()
    if not callable(func):
        error = mitmproxy_exceptions.AddonManagerError(f"Addon handler {name} ({addon}) not callable")

        def not_callable(*_: Any) -> None:
            raise error  # logged at each event, as mitmproxy's walk does

        return (not_callable,)
    return (func,)


def _hook_plans(manager: Any) -> _HookPlans:
    plans: _HookPlans | None = manager.__dict__.get("_egress_hook_plans")
    chain = tuple(manager.chain)
    if plans is None or plans.chain != chain:
        plans = manager.__dict__["_egress_hook_plans"] = _HookPlans(chain)
    return plans


async def _handle_lifecycle(self: Any, event: hooks.Hook) -> None:
    plans = _hook_plans(self)
    if not plans.static:
        await original(addonmanager.AddonManager, "handle_lifecycle")(self, event)
        return
    args = event.args()
    await _run_plan(plans.plan(event.name), args)
    message = args[0]
    if isinstance(message, mflow.Flow):
        update = plans.plan("update")
        if update:
            await _run_plan(update, [[message]])


async def _run_plan(plan: HookPlan, args: list[Any]) -> None:
    for methods in plan:
        try:
            for method in methods:
                result = method(*args)
                if result is not None and inspect.isawaitable(result):
                    await result
        except mitmproxy_exceptions.AddonHalt:
            return
        except mitmproxy_exceptions.OptionsError:
            raise
        except Exception as e:
            _addon_log.error(f"Addon error: {e}", exc_info=(type(e), e, e.__traceback__))


def _install_hook_plans() -> None:
    _patch(addonmanager.AddonManager, "handle_lifecycle", _handle_lifecycle)


# --- finishing after the response is written (issue 16, egressproxy/deferred_work.py) ---------------------------
#
# Read only, nothing patched. mitmproxy runs each hook in a task of its own, `ConnectionHandler.hook_task` (started
# eagerly by mitmproxy's eager task factory, so the addons run inside the event that asked for the hook): the
# addons run, then the task feeds `HookCompleted` back through `server_event`, which waits for the connection's
# event lock and then resumes the layer, writing what it sends (the response, after the `response` hook). The end
# of that task therefore follows the write. The task is recognised by its coroutine: its name is set only after
# the eager start, when the hook's addons have already run.

_HOOK_TASK = ConnectionHandler.hook_task.__qualname__


def current_hook_task() -> "asyncio.Task[Any] | None":
    """The mitmproxy hook task running now (its end follows the write of what its hook let through), or None."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop
        return None
    if task is None:
        return None
    return task if getattr(task.get_coro(), "__qualname__", None) == _HOOK_TASK else None
# --- synchronous hooks run inline: no task, no second trip through the lock (issue 16) ---------------------------
#
# mitmproxy's `ConnectionHandler.server_event` starts every hook a layer asks for (`StartHook`) as an asyncio task
# (`hook_task`: the watchdog's `disarm()`, `handle_lifecycle`, `wait_for_resume`), and that task hands the
# layer its `HookCompleted` through a second `server_event`, which takes the handler's `asyncio.Lock` again. A
# request's four hooks cost four tasks and four extra lock round trips, though most hooks (responseheaders,
# response, the TLS and connection hooks) only call synchronous methods. The copy below is mitmproxy's
# `server_event` with one change: a hook of a `ProxyConnectionHandler` whose plan (the block above) is all
# synchronous is not made a task; it is run once the event's commands are all handled (where the task would have
# started: after them), and its `HookCompleted` is fed to the layer in the same `server_event`, under the lock
# already held. Everything else keeps mitmproxy's path:
#
# - a chain that is not plannable, or a hook with a coroutine function in its plan (or in `update`'s), is a task;
# - a synchronous method that returns an awaitable (mitmproxy awaits those) hands the rest of the hook, from
#   there on, to a task; so does a flow an addon intercepted (the task waits for its resume);
# - order and isolation are the plan's: chain order, "Addon error" logged and the next entry run, `AddonHalt`
#   ends the hook, then `update`; an `OptionsError` is logged as the task's failure would be, and, as then,
#   the hook is not completed.

# The sources our copy and its shortcut follow (tests/unit/test_mitmproxy_boundary.py pins them).
SERVER_EVENT_SHA256 = "a2b42657ebe8bf6de9b9064d7b3dde2403a744bb8f75df03691a5c0e735544d7"
HOOK_TASK_SHA256 = "9ac79701605262685df6bc57fdba46bc84894961665e5b32d90defebd0780092"
HANDLE_HOOK_SHA256 = "9f8b52fd798203c9d2401c3e5d8c7f9976c490ac124b17cd55d8afce73b66acf"

_PROXY_HANDLE_HOOK = mode_servers.ProxyConnectionHandler.handle_hook
_server_log = logging.getLogger("mitmproxy.proxy.server")


def _plan_is_synchronous(plan: HookPlan) -> bool:
    return not any(inspect.iscoroutinefunction(m) for methods in plan for m in methods)


def _inline_plans(handler: Any, hook: commands.StartHook) -> tuple[HookPlan, HookPlan] | None:
    """The plans of `hook` and of its `update` when the hook may run inline, else None (mitmproxy's task)."""
    if type(handler).handle_hook is not _PROXY_HANDLE_HOOK:
        return None
    plans = _hook_plans(handler.master.addons)
    if not plans.static:
        return None
    found = plans.synchronous.get(hook.name)
    if found is None:
        plan, update = plans.plan(hook.name), plans.plan("update")
        sync = _plan_is_synchronous(plan) and _plan_is_synchronous(update)
        found = plans.synchronous[hook.name] = (plan, update) if sync else False
    return found or None


def _run_plan_now(plan: HookPlan, args: list[Any]) -> Any:
    """`_run_plan` without a coroutine: None when done, else a coroutine finishing the plan (a method returned an
    awaitable: it is awaited there, then the rest of the plan runs, as `_run_plan` would)."""
    for at, methods in enumerate(plan):
        for index, method in enumerate(methods):
            try:
                result = method(*args)
            except mitmproxy_exceptions.AddonHalt:
                return None
            except mitmproxy_exceptions.OptionsError:
                raise
            except Exception as e:
                _addon_log.error(f"Addon error: {e}", exc_info=(type(e), e, e.__traceback__))
                break
            if result is not None and inspect.isawaitable(result):
                rest = (methods[index + 1 :], *plan[at + 1 :])
                return _finish_plan(result, rest, args)
    return None


async def _finish_plan(pending: Any, rest: HookPlan, args: list[Any]) -> None:
    try:
        await pending
    except mitmproxy_exceptions.AddonHalt:
        return
    except mitmproxy_exceptions.OptionsError:
        raise
    except Exception as e:
        _addon_log.error(f"Addon error: {e}", exc_info=(type(e), e, e.__traceback__))
        rest = rest[1:]  # the failing entry's turn ends
    await _run_plan(rest, args)


def _hook_inline(handler: Any, hook: commands.StartHook, plans: tuple[HookPlan, HookPlan]) -> bool:
    """Run `hook` by its plans now; True when it is done (or handed to a task that completes it)."""
    args = hook.args()
    if len(args) != 1:
        return False  # mitmproxy's handle_hook refuses it (in its task)
    plan, update = plans
    message = args[0]
    is_flow = isinstance(message, mflow.Flow)
    try:
        rest = _run_plan_now(plan, args)
        if rest is None and is_flow and update:
            rest = _run_plan_now(update, [[message]])
        elif rest is not None and is_flow and update:
            rest = _then_update(rest, update, message)
    except mitmproxy_exceptions.OptionsError as e:
        handler.log(f"hook {hook.name} failed: {e}", logging.ERROR, exc_info=(type(e), e, e.__traceback__))
        return True  # not completed, as when mitmproxy's hook task fails
    if rest is None and not (is_flow and message.intercepted):
        if hook.blocking:
            handler._egress_completed.append(events.HookCompleted(hook))
        return True
    asyncio_utils.create_task(
        _finish_hook(handler, hook, rest, message if is_flow else None),
        name=f"handle_hook({hook.name})",
        keep_ref=True,
        client=handler.client.peername,
    )
    return True


async def _then_update(rest: Any, update: HookPlan, flow: mflow.Flow) -> None:
    await rest
    await _run_plan(update, [[flow]])


async def _finish_hook(handler: Any, hook: commands.StartHook, rest: Any, flow: mflow.Flow | None) -> None:
    """The end of mitmproxy's `hook_task` for a hook that began inline."""
    with handler.timeout_watchdog.disarm():
        if rest is not None:
            await rest
        if flow is not None:
            await flow.wait_for_resume()
    if hook.blocking:
        await handler.server_event(events.HookCompleted(hook))


async def _server_event(self: Any, event: events.Event) -> None:
    # mitmproxy's ConnectionHandler.server_event (see SERVER_EVENT_SHA256), plus the inline hooks: ours are
    # marked "egress".
    async with self._server_event_lock:
        # No `await` beyond this point.

        self.timeout_watchdog.register_activity()
        self._egress_completed = completed = collections.deque([event])  # egress: events fed in this call
        while completed:  # egress
            event = completed.popleft()  # egress
            inline: list[tuple[commands.StartHook, tuple[HookPlan, HookPlan]]] = []  # egress: after the commands
            try:
                layer_commands = self.layer.handle_event(event)
                for command in layer_commands:
                    if isinstance(command, commands.OpenConnection):
                        assert command.connection not in self.transports
                        handler = asyncio_utils.create_task(
                            self.open_connection(command),
                            name=f"server connection handler {command.connection.address}",
                            keep_ref=False,
                            client=self.client.peername,
                        )
                        self.transports[command.connection] = ConnectionIO(handler=handler)
                    elif isinstance(command, commands.RequestWakeup):
                        task = asyncio_utils.create_task(
                            self.wakeup(command),
                            name=f"wakeup timer ({command.delay:.1f}s)",
                            keep_ref=False,
                            client=self.client.peername,
                        )
                        assert task is not None
                        self.wakeup_timer.add(task)
                    elif isinstance(command, commands.ConnectionCommand) and command.connection not in self.transports:
                        pass  # The connection has already been closed.
                    elif isinstance(command, commands.SendData):
                        writer = self.transports[command.connection].writer
                        assert writer
                        if not writer.is_closing():
                            writer.write(command.data)
                    elif isinstance(command, commands.CloseTcpConnection):
                        self.close_connection(command.connection, command.half_close)
                    elif isinstance(command, commands.CloseConnection):
                        self.close_connection(command.connection, False)
                    elif isinstance(command, commands.StartHook):
                        if (plans := _inline_plans(self, command)) is not None:  # egress
                            inline.append((command, plans))
                            continue
                        asyncio_utils.create_task(
                            self.hook_task(command),
                            name=f"handle_hook({command.name})",
                            keep_ref=True,
                            client=self.client.peername,
                        )
                    elif isinstance(command, commands.Log):
                        self.log(command.message, command.level)
                    else:
                        raise RuntimeError(f"Unexpected command: {command}")
            except Exception:
                self.log("mitmproxy has crashed!", logging.ERROR, exc_info=True)
            _run_inline(self, inline)  # egress


def _run_inline(handler: Any, hooks_now: list[tuple[commands.StartHook, tuple[HookPlan, HookPlan]]]) -> None:
    """The hooks an event's commands started, in order (even when a later command failed: their tasks would
    have run too)."""
    for hook, plans in hooks_now:
        try:
            if not _hook_inline(handler, hook, plans):
                asyncio_utils.create_task(
                    handler.hook_task(hook), name=f"handle_hook({hook.name})", keep_ref=True, client=handler.client.peername
                )
        except Exception:
            handler.log("mitmproxy has crashed!", logging.ERROR, exc_info=True)


def _install_inline_hooks() -> None:
    _patch(ConnectionHandler, "server_event", _server_event)
