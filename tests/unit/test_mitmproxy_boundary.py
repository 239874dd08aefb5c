"""Every bet egressproxy makes on mitmproxy internals, pinned (egressproxy/engine/mitmproxy_boundary.py).

Each test fails when the mitmproxy release underneath changes what we patch or read: the patched method's
signature, the attributes our replacement uses, and a small behaviour driven through mitmproxy's own classes.
A failure here means: read the new mitmproxy source before widening the pin in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import time
from collections.abc import Callable

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
import pytest
from mitmproxy import connection, http, options
from mitmproxy.addons import proxyserver, tlsconfig
from mitmproxy.net import tls as net_tls
from mitmproxy.proxy import commands, context, events, layer, mode_servers, server
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers import modes
from mitmproxy.proxy.layers.http import _upstream_proxy
from mitmproxy.proxy.layers.http._http2 import Http2Server
from mitmproxy.proxy.layers.http._http_h2 import BufferedH2Connection
from mitmproxy.net.http import http1
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from egressproxy.engine import mitmproxy_boundary as boundary


def _params(fn: object) -> list[str]:
    return list(inspect.signature(fn).parameters)  # type: ignore[arg-type]


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    boundary.install(error_answer=None, reuse_port=True)


def _proxy_options() -> options.Options:
    """mitmproxy's options including the proxy core's (Proxyserver registers them), lazy as in the gateway."""
    with taddons.context(proxyserver.Proxyserver()) as tctx:
        tctx.options.connection_strategy = "lazy"
        return tctx.options


def _transparent_context() -> context.Context:
    client = tflow.tclient_conn()
    ctx = context.Context(client, _proxy_options())
    ctx.server.address = ("192.0.2.1", 25)
    return ctx


# --- the transparent start patch ------------------------------------------------------------------------------


def test_transparent_start_replaces_a_start_handler_of_the_same_shape() -> None:
    assert _params(boundary.original(modes.TransparentProxy, "_handle_event")) == ["self", "event"]
    assert modes.TransparentProxy._handle_event is boundary._transparent_start
    assert "ask_on_start" in _params(layer.NextLayer.__init__)
    assert callable(modes.TransparentProxy.finish_start)


def test_transparent_start_asks_next_layer_before_any_client_byte() -> None:
    """Server-speaks-first protocols: the listener decision is asked for on start, with no data."""
    ctx = _transparent_context()
    proxy = modes.TransparentProxy(ctx)
    emitted = list(proxy.handle_event(events.Start()))
    hooks = [c for c in emitted if isinstance(c, layer.NextLayerHook)]
    assert len(hooks) == 1, emitted
    assert hooks[0].data.data_client() == b""
    assert isinstance(proxy.child_layer, layer.NextLayer)


def test_unpatched_transparent_start_would_wait_for_client_bytes() -> None:
    """Why the patch exists: mitmproxy's own start asks nothing until the client sends (else drop the patch)."""
    ctx = _transparent_context()
    proxy = modes.TransparentProxy(ctx)
    original = boundary.original(modes.TransparentProxy, "_handle_event")
    emitted = list(original(proxy, events.Start()))
    assert not [c for c in emitted if isinstance(c, layer.NextLayerHook)]


# --- the gateway error response patch -------------------------------------------------------------------------


def test_protocol_error_handler_keeps_its_signature_and_state_names() -> None:
    assert _params(boundary.original(http_layers.HttpStream, "handle_protocol_error")) == ["self", "event"]
    for name in ("state_errored", "state_done", "state_uninitialized"):
        assert hasattr(http_layers.HttpStream, name), name
    assert _params(http_layers.ResponseHeaders) == ["stream_id", "response", "end_stream"]
    assert _params(http_layers.ResponseData) == ["stream_id", "data"]
    assert _params(http_layers.ResponseEndOfMessage) == ["stream_id"]
    assert _params(http_layers.ResponseProtocolError)[:2] == ["stream_id", "message"]
    assert _params(http_layers.DropStream) == ["stream_id"]


def _errored_stream() -> http_layers.HttpStream:
    ctx = context.Context(tflow.tclient_conn(), _proxy_options())
    stream = http_layers.HttpStream(ctx, 1)
    stream.flow = tflow.tflow()
    stream.flow.response = None
    stream.client_state = stream.state_wait_for_request_headers
    stream.server_state = stream.state_wait_for_response_headers
    return stream


def test_an_upstream_failure_is_answered_with_the_factory_response() -> None:
    answer = http.Response.make(502, b'{"error": "x"}', {"x-egress-error": "upstream-unreachable"})
    seen: list[str] = []

    def factory(flow: http.HTTPFlow, message: str) -> http.Response:
        seen.append(message)
        return answer

    boundary.install(error_answer=factory)
    try:
        stream = _errored_stream()
        emitted = list(stream.handle_protocol_error(http_layers.ResponseProtocolError(1, "connect failed", http_layers.ErrorCode.CONNECT_FAILED)))
    finally:
        boundary.install(error_answer=None)
    assert seen == ["connect failed"]
    sent = [c.event for c in emitted if isinstance(c, http_layers.SendHttp)]
    assert isinstance(sent[0], http_layers.ResponseHeaders) and sent[0].response is answer
    assert [type(e) for e in sent[1:]] == [http_layers.ResponseData, http_layers.ResponseEndOfMessage]
    assert stream.flow.response is answer and stream.flow.error is not None and not stream.flow.live
    assert isinstance(emitted[-1], http_layers.DropStream)


def test_without_a_factory_answer_mitmproxy_sends_its_own_error() -> None:
    boundary.install(error_answer=lambda flow, message: None)
    try:
        stream = _errored_stream()
        emitted = list(stream.handle_protocol_error(http_layers.ResponseProtocolError(1, "connect failed", http_layers.ErrorCode.CONNECT_FAILED)))
    finally:
        boundary.install(error_answer=None)
    sent = [c.event for c in emitted if isinstance(c, http_layers.SendHttp)]
    assert [type(e) for e in sent] == [http_layers.ResponseProtocolError]


# --- responses that break after their headers (faults) ---------------------------------------------------------


def _streaming_stream() -> http_layers.HttpStream:
    """A stream whose response headers arrived (and, streamed, went to the client)."""
    stream = _errored_stream()
    stream.flow.response = http.Response.make(200, b"")
    stream.server_state = stream.state_stream_response_body
    return stream


def test_an_upstream_failure_after_the_headers_is_noted_on_the_flow() -> None:
    stream = _streaming_stream()
    list(stream.handle_protocol_error(http_layers.ResponseProtocolError(1, "server closed connection", http_layers.ErrorCode.GENERIC_SERVER_ERROR)))
    assert stream.flow.metadata[boundary.RESPONSE_FAILURE_KEY] == "server closed connection"
    assert stream.flow.error is not None  # mitmproxy's own path still runs: the `error` hook fires


def test_a_client_failure_or_one_before_the_headers_is_not_noted() -> None:
    stream = _streaming_stream()
    list(stream.handle_protocol_error(http_layers.RequestProtocolError(1, "client disconnected", http_layers.ErrorCode.CLIENT_DISCONNECTED)))
    assert boundary.RESPONSE_FAILURE_KEY not in stream.flow.metadata
    early = _errored_stream()
    list(early.handle_protocol_error(http_layers.ResponseProtocolError(1, "connect failed", http_layers.ErrorCode.CONNECT_FAILED)))
    assert boundary.RESPONSE_FAILURE_KEY not in early.flow.metadata


# --- request bodies capped while read -------------------------------------------------------------------------


def test_consume_request_body_keeps_its_signature_and_the_attributes_the_replacement_uses() -> None:
    assert _params(boundary.original(http_layers.HttpStream, "state_consume_request_body")) == ["self", "event"]
    for name in ("send_response", "state_errored", "state_consume_request_body"):
        assert hasattr(http_layers.HttpStream, name), name
    assert _params(http_layers.RequestData) == ["stream_id", "data"]
    assert http_layers.ErrorCode.REQUEST_TOO_LARGE.http_status_code() == 413


def _consuming_stream(limit: int | None) -> tuple[http_layers.HttpStream, list[int]]:
    ctx = context.Context(tflow.tclient_conn(), _proxy_options())
    stream = http_layers.HttpStream(ctx, 1)
    stream.flow = tflow.tflow()
    stream.flow.response = None
    stream.client_state = stream.state_consume_request_body
    stream.server_state = stream.state_wait_for_response_headers
    answered: list[int] = []
    if limit is not None:
        def answer() -> http.Response:
            answered.append(1)
            return http.Response.make(413, b'{"reason": "body-too-large"}')
        stream.flow.metadata[boundary.BODY_LIMIT_KEY] = (limit, answer)
    return stream, answered


def test_a_body_past_its_limit_is_answered_while_it_is_read() -> None:
    stream, answered = _consuming_stream(8)
    assert list(stream.state_consume_request_body(http_layers.RequestData(1, b"12345678"))) == []
    emitted = list(stream.state_consume_request_body(http_layers.RequestData(1, b"9")))
    assert answered == [1] and stream.flow.response is not None and stream.flow.response.status_code == 413
    sent = [c.event for c in emitted if isinstance(c, http_layers.SendHttp)]
    assert [type(e) for e in sent] == [
        http_layers.ResponseHeaders, http_layers.ResponseData, http_layers.ResponseEndOfMessage, http_layers.ResponseProtocolError,
    ]
    assert len(stream.request_body_buf) == 0 and stream.client_state == stream.state_errored
    assert isinstance(emitted[-1], http_layers.DropStream)


def test_without_a_limit_the_body_is_buffered_as_mitmproxy_does() -> None:
    stream, _ = _consuming_stream(None)
    assert list(stream.state_consume_request_body(http_layers.RequestData(1, b"x" * 100))) == []
    assert len(stream.request_body_buf) == 100 and stream.flow.response is None


# --- SO_REUSEPORT ---------------------------------------------------------------------------------------------


def test_listen_keeps_its_signature_and_the_attributes_the_replacement_uses() -> None:
    assert _params(boundary.original(mode_servers.AsyncioServerInstance, "listen")) == ["self", "host", "port"]
    assert mode_servers.AsyncioServerInstance.listen is boundary._listen_reuse_port
    assert callable(mode_servers.ServerInstance.handle_stream)
    assert ProxyMode.parse("regular@8080").transport_protocol == "tcp"


def test_patched_listen_binds_with_so_reuseport() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()

    class Instance:
        mode = ProxyMode.parse(f"regular@127.0.0.1:{port}")

        async def handle_stream(self, reader: object, writer: object) -> None:  # pragma: no cover - no client
            pass

    async def bind() -> int:
        servers = await mode_servers.AsyncioServerInstance.listen(Instance(), "127.0.0.1", port)  # type: ignore[arg-type]
        try:
            sock = servers[0].sockets[0]
            return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))
        finally:
            servers[0].close()

    assert asyncio.run(bind())


# --- private names --------------------------------------------------------------------------------------------


def test_default_ciphers_is_mitmproxys_cipher_choice() -> None:
    assert boundary.default_ciphers is tlsconfig._default_ciphers
    ciphers = boundary.default_ciphers(net_tls.Version.TLS1_2)
    assert isinstance(ciphers, tuple) and ciphers and all(isinstance(c, str) for c in ciphers)


def test_create_ssl_context_builds_a_context_from_mitmproxys_defaults() -> None:
    assert _params(boundary.create_ssl_context) == ["method", "min_version", "max_version", "cipher_list", "ecdh_curve"]
    ssl_ctx = boundary.create_ssl_context(
        method=net_tls.Method.TLS_CLIENT_METHOD,
        min_version=net_tls.Version.TLS1_2,
        max_version=net_tls.Version.UNBOUNDED,
        cipher_list=None,
        ecdh_curve=None,
    )
    assert ssl_ctx is not None


def test_upstream_proxy_layer_sends_connect_to_the_parent() -> None:
    assert boundary.HttpUpstreamProxy is _upstream_proxy.HttpUpstreamProxy
    assert _params(boundary.HttpUpstreamProxy.make) == ["ctx", "send_connect"]
    ctx = context.Context(tflow.tclient_conn(), _proxy_options())
    ctx.server.address = ("example.com", 443)
    ctx.server.via = ("http", ("parent.test", 3128))
    stack = boundary.HttpUpstreamProxy.make(ctx, True)
    top = stack[0]
    assert isinstance(top, boundary.HttpUpstreamProxy)
    assert top.tunnel_connection.address == ("parent.test", 3128)


# --- connection internals -------------------------------------------------------------------------------------


def test_open_server_refuses_a_new_address_and_relabel_address_bypasses_that() -> None:
    server_conn = tflow.tserver_conn()
    server_conn.state = connection.ConnectionState.OPEN
    with pytest.raises(RuntimeError):
        server_conn.address = ("other.test", 443)
    boundary.relabel_address(server_conn, ("name.test", 443))
    assert server_conn.address == ("name.test", 443)


def test_close_upstream_reads_the_proxyservers_connection_handlers() -> None:
    assert "connections" in inspect.get_annotations(proxyserver.Proxyserver)
    assert "transports" in inspect.get_annotations(server.ConnectionHandler)
    assert "handler" in inspect.get_annotations(server.ConnectionIO)


def test_close_upstream_cancels_the_upstream_task_of_the_flow() -> None:
    flow = tflow.tflow()

    class Task:
        cancelled: str | None = None

        def cancel(self, msg: str) -> None:
            self.cancelled = msg

    upstream, client_io = server.ConnectionIO(), server.ConnectionIO()
    upstream.handler, client_io.handler = Task(), Task()  # type: ignore[assignment]

    class Handler:
        transports = {flow.client_conn: client_io, flow.server_conn: upstream}

    ps = proxyserver.Proxyserver()
    with taddons.context(ps):
        ps.connections[flow.client_conn.id] = Handler()  # type: ignore[assignment]
        assert boundary.close_upstream(flow, "egress: timeout")
        assert upstream.handler.cancelled == "egress: timeout"  # type: ignore[union-attr]
        assert client_io.handler.cancelled is None  # type: ignore[union-attr]
        del ps.connections[flow.client_conn.id]
        assert not boundary.close_upstream(flow, "egress: timeout")


# --- options that must stay off -------------------------------------------------------------------------------


def test_the_unsafe_options_exist_and_default_to_off() -> None:
    with taddons.context(tlsconfig.TlsConfig()) as tctx:
        for name in boundary.UNSAFE_OPTIONS:
            assert name in tctx.options and getattr(tctx.options, name) is False
        boundary.refuse_unsafe_options(tctx.options)


@pytest.mark.parametrize("name", boundary.UNSAFE_OPTIONS)
def test_an_unsafe_option_is_refused_by_name(name: str) -> None:
    with taddons.context(tlsconfig.TlsConfig()) as tctx:
        tctx.options.update(**{name: True})
        with pytest.raises(boundary.UnsafeOptions, match=name):
            boundary.refuse_unsafe_options(tctx.options)



# --- HTTP/2 abuse (rapid reset, stream floods, PING/SETTINGS floods) ---------------------------------------------


def _h2_client() -> h2.connection.H2Connection:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    return client


def _h2_server_conn() -> BufferedH2Connection:
    conn = BufferedH2Connection(Http2Server.h2_conf)
    conn.initiate_connection()
    conn.data_to_send()
    return conn


def _request(path: str) -> list[tuple[str, str]]:
    return [(":method", "GET"), (":scheme", "https"), (":authority", "a.test"), (":path", path)]


def test_h2_patches_keep_their_signatures_and_the_h2_internals_they_use() -> None:
    assert _params(boundary.original(Http2Server, "handle_h2_event")) == ["self", "event"]
    assert _params(Http2Server.protocol_error) == ["self", "message", "error_code"]
    assert _params(boundary.original(BufferedH2Connection, "receive_data")) == ["self", "data"]
    assert _params(boundary.original(BufferedH2Connection, "_receive_headers_frame")) == ["self", "frame"]
    assert Http2Server.handle_h2_event is boundary._h2_server_event
    assert BufferedH2Connection.receive_data is boundary._h2_receive_data
    assert BufferedH2Connection._receive_headers_frame is boundary._h2_receive_headers_frame
    assert callable(h2.connection._decode_headers)
    assert h2.connection.ConnectionInputs.RECV_HEADERS and h2.connection.AllowedStreamIDs.ODD == 1
    assert _params(h2.connection.H2Connection._get_or_create_stream) == ["self", "stream_id", "allowed_ids"]


def test_h2_advertises_100_concurrent_streams_and_bounds_continuation_frames() -> None:
    """The bets behind 'no patch needed': h2's default SETTINGS_MAX_CONCURRENT_STREAMS and CONTINUATION cap."""
    assert _h2_server_conn().local_settings.max_concurrent_streams == 100
    assert h2.frame_buffer.CONTINUATION_BACKLOG == 64


def test_a_stream_opened_and_reset_in_one_read_never_becomes_a_request() -> None:
    client, server = _h2_client(), _h2_server_conn()
    reset = client.get_next_available_stream_id()
    client.send_headers(reset, _request("/reset"), end_stream=True)
    client.reset_stream(reset, h2.errors.ErrorCodes.CANCEL)
    kept = client.get_next_available_stream_id()
    client.send_headers(kept, _request("/kept"), end_stream=True)
    events = server.receive_data(client.data_to_send())
    requests = [e.stream_id for e in events if isinstance(e, h2.events.RequestReceived)]
    assert requests == [kept]
    assert [e.stream_id for e in events if isinstance(e, h2.events.StreamReset)] == [reset]


def test_a_stream_beyond_the_limit_is_refused_and_hpack_stays_in_step() -> None:
    client, server = _h2_client(), _h2_server_conn()
    client.receive_data(server.data_to_send() or b"")
    client.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 1000
    client.remote_settings.acknowledge()
    ids: list[int] = []
    for i in range(101):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, [*_request(f"/{i}"), ("x-new", f"v{i}")], end_stream=False)
        ids.append(sid)
    events = server.receive_data(client.data_to_send())
    assert [e.stream_id for e in events if isinstance(e, h2.events.RequestReceived)] == ids[:100]
    answer = client.receive_data(server.data_to_send())
    assert [(e.stream_id, e.error_code) for e in answer if isinstance(e, h2.events.StreamReset)] == [
        (ids[100], h2.errors.ErrorCodes.REFUSED_STREAM)
    ]
    client.end_stream(ids[0])
    server.receive_data(client.data_to_send())
    server.send_headers(ids[0], [(":status", "200")], end_stream=True)  # closed on both sides: a slot is free
    client.receive_data(server.data_to_send())
    later = client.get_next_available_stream_id()
    client.send_headers(later, [*_request("/later"), ("x-new", "v100")], end_stream=True)  # indexed by both sides
    events = server.receive_data(client.data_to_send())
    (request,) = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    assert (b"x-new", b"v100") in request.headers and (b":path", b"/later") in request.headers


def test_refusals_past_their_budget_end_the_connection_with_enhance_your_calm() -> None:
    client, server = _h2_client(), _h2_server_conn()
    client.receive_data(server.data_to_send() or b"")
    client.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 1000
    client.remote_settings.acknowledge()
    for i in range(100 + 101):
        client.send_headers(client.get_next_available_stream_id(), _request(f"/{i}"), end_stream=False)
    with pytest.raises(h2.exceptions.DenialOfServiceError, match="h2-stream-flood"):
        server.receive_data(client.data_to_send())
    answer = client.receive_data(server.data_to_send())
    assert [e.error_code for e in answer if isinstance(e, h2.events.ConnectionTerminated)] == [
        h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    ]
    assert len([e for e in answer if isinstance(e, h2.events.StreamReset)]) == 101  # each refused, then GOAWAY


def test_a_ping_flood_is_cut_with_enhance_your_calm_and_counted() -> None:
    counted: list[str] = []
    boundary.install(error_answer=None, reuse_port=True, h2_refusal=counted.append)
    try:
        server = Http2Server(context.Context(tflow.tclient_conn(), _proxy_options()))
        list(server.handle_event(events.Start()))
        client = _h2_client()
        for i in range(101):
            client.ping(i.to_bytes(8, "big"))
        emitted = list(server.handle_event(events.DataReceived(server.conn, client.data_to_send())))
        sent = b"".join(c.data for c in emitted if isinstance(c, commands.SendData))
        assert any(isinstance(c, commands.Log) and c.level == logging.WARNING and "h2-ping-flood" in c.message for c in emitted)
        assert any(isinstance(c, commands.CloseConnection) for c in emitted)
        terminated = [e for e in client.receive_data(sent) if isinstance(e, h2.events.ConnectionTerminated)]
        assert [e.error_code for e in terminated] == [h2.errors.ErrorCodes.ENHANCE_YOUR_CALM]
        assert counted == ["h2-ping-flood"]
    finally:
        boundary.install(error_answer=None, reuse_port=True)


def test_make_server_connection_keeps_its_signature_and_the_names_the_replacement_uses() -> None:
    assert _params(boundary.original(http_layers.HttpStream, "make_server_connection")) == ["self"]
    assert http_layers.HttpStream.make_server_connection is boundary._make_server_connection
    assert _params(http_layers.HttpStream.check_killed) == ["self", "emit_error_hook"]
    assert hasattr(_errored_stream(), "_paused_event_queue")


def _dial(stream: http_layers.HttpStream) -> tuple[list[object], bool]:
    """Drive the (patched) dial: answer its GetHttpConnection with an open connection; (commands, result)."""
    gen = stream.make_server_connection()
    emitted: list[object] = [next(gen)]
    assert isinstance(emitted[0], http_layers.GetHttpConnection)
    try:
        emitted.append(gen.send((tflow.tserver_conn(), None)))
        while True:
            emitted.append(next(gen))
    except StopIteration as done:
        return emitted, bool(done.value)


def test_a_request_reset_while_the_upstream_was_dialled_is_not_sent() -> None:
    stream = _errored_stream()
    stream._paused_event_queue.append(http_layers.RequestProtocolError(1, "stream reset by client (CANCEL)", http_layers.ErrorCode.CANCEL))
    emitted, ok = _dial(stream)
    assert ok is False
    assert any(isinstance(c, http_layers.HttpErrorHook) for c in emitted)
    assert stream.client_state == stream.state_errored and not stream.flow.live


def test_a_request_not_reset_goes_out_after_the_dial() -> None:
    emitted, ok = _dial(_errored_stream())
    assert ok is True and len(emitted) == 1
def test_a_buffered_response_that_breaks_mid_body_is_still_answered_with_the_factory_response() -> None:
    """Not streamed, its headers never went to the client: our 502, not mitmproxy's page, and not a mid-body note."""
    answer = http.Response.make(502, b'{"error": "x"}', {"x-egress-error": "upstream-unreachable"})
    boundary.install(error_answer=lambda flow, message: answer)
    try:
        stream = _streaming_stream()
        stream.server_state = stream.state_consume_response_body
        emitted = list(stream.handle_protocol_error(http_layers.ResponseProtocolError(1, "peer closed", http_layers.ErrorCode.GENERIC_SERVER_ERROR)))
    finally:
        boundary.install(error_answer=None)
    sent = [c.event for c in emitted if isinstance(c, http_layers.SendHttp)]
    assert isinstance(sent[0], http_layers.ResponseHeaders) and sent[0].response is answer
    assert boundary.RESPONSE_FAILURE_KEY not in stream.flow.metadata
    assert hasattr(http_layers.HttpStream, "state_consume_response_body")
# --- client limits: HTTP/1 request heads, head waits, undecided connections -----------------------------------

from mitmproxy.proxy import commands  # noqa: E402
from mitmproxy.proxy.layers.http import _http1  # noqa: E402

from egressproxy.client_limits import ClientLimits  # noqa: E402

_limits: list[ClientLimits | None] = [None]
_refused: list[tuple[int, str]] = []


@pytest.fixture
def limited() -> object:
    """Client limits installed with small values; afterwards the patch falls back to mitmproxy's reader."""

    def refuse(client: connection.Client, status: int, reason: str) -> bytes:
        _refused.append((status, reason))
        return b"HTTP/1.1 %d X\r\ncontent-length: 0\r\n\r\n" % status

    boundary.install_client_limits(lambda: _limits[0], refuse)
    _limits[0] = ClientLimits(max_request_head_bytes=200, max_request_headers=3)
    _refused.clear()
    yield
    _limits[0] = None


def _reader() -> _http1.Http1Server:
    server_side = _http1.Http1Server(context.Context(tflow.tclient_conn(), _proxy_options()))
    assert list(server_side.handle_event(events.Start())) == []
    return server_side


def _feed(reader: _http1.Http1Server, data: bytes) -> list[commands.Command]:
    return list(reader.handle_event(events.DataReceived(reader.conn, data)))


def test_the_http1_reader_keeps_the_shape_the_replacement_relies_on() -> None:
    assert _params(boundary.original(_http1.Http1Server, "read_headers")) == ["self", "event"]
    assert _params(boundary.original(_http1.Http1Server, "mark_done")) == ["self", "request", "response"]
    assert _params(boundary.original(_http1.Http1Server, "__init__")) == ["self", "context"]
    for name in ("read_body", "done", "wait", "passthrough"):
        assert callable(getattr(_http1.Http1Server, name)), name
    assert callable(_http1.make_body_reader)
    reader = _reader()
    assert reader.state == reader.read_headers and hasattr(reader.buf, "maybe_extract_lines")


def test_a_head_over_the_byte_limit_is_refused_before_it_ends(limited: object) -> None:
    reader = _reader()
    assert _feed(reader, b"GET http://a.test/ HTTP/1.1\r\nX: " + b"a" * 100) == []
    emitted = _feed(reader, b"a" * 100)  # 230 bytes, no blank line yet
    assert _refused == [(431, "request-header-too-large")]
    assert [type(c) for c in emitted] == [commands.SendData, commands.CloseTcpConnection]
    assert emitted[1].half_close  # type: ignore[attr-defined]
    assert len(reader.buf) == 0


@pytest.fixture
def closed_soon(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    closed: list[str] = []
    monkeypatch.setattr(boundary, "_close_soon", lambda client, reason: closed.append(reason))
    return closed


def test_a_refused_client_is_drained_then_closed(limited: object, closed_soon: list[str]) -> None:
    reader = _reader()
    _feed(reader, b"GET / HTTP/1.1\r\nX: " + b"a" * 300)
    assert _feed(reader, b"b" * 1000) == [] and len(reader.buf) == 0  # read and dropped, never kept
    assert closed_soon == []
    assert _feed(reader, b"c" * (boundary._LINGER_BYTES + 1)) == [] and len(reader.buf) == 0
    assert closed_soon == ["linger"]
    closed = list(reader.handle_event(events.ConnectionClosed(reader.conn)))
    assert [type(c) for c in closed] == [commands.CloseConnection]


def test_bytes_sent_ahead_of_a_response_are_bounded(limited: object, closed_soon: list[str]) -> None:
    """mitmproxy's `wait` state appends whatever comes while a response is pending; past the bound: cut."""
    assert _params(boundary.original(_http1.Http1Server, "wait")) == ["self", "event"]
    reader = _reader()
    _feed(reader, b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert reader.state == reader.wait  # request complete, response pending
    assert _feed(reader, b"x" * 65536) == [] and closed_soon == []
    emitted = _feed(reader, b"x")
    assert _refused == [(0, "sent-ahead")] and closed_soon == ["sent-ahead"] and len(reader.buf) == 0
    errors = [c.event for c in emitted if isinstance(c, http_layers.ReceiveHttp)]
    assert isinstance(errors[0], http_layers.RequestProtocolError)
    assert _feed(reader, b"y" * 100) == [] and len(reader.buf) == 0  # dropped from now on


def test_more_header_lines_than_allowed_get_431(limited: object) -> None:
    reader = _reader()
    emitted = _feed(reader, b"GET http://a.test/ HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n")
    assert _refused == [(431, "request-header-too-many")]
    assert isinstance(emitted[0], commands.SendData) and emitted[0].data.startswith(b"HTTP/1.1 431")


@pytest.mark.parametrize("line", [b"CONNECT :443", b"CONNECT user:hunter2@a.test:443", b"CONNECT a.test:99999", b"CONNECT [::1"])
def test_a_malformed_request_line_gets_our_answer_without_an_echo(limited: object, line: bytes) -> None:
    reader = _reader()
    emitted = _feed(reader, line + b" HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert _refused == [(400, "malformed-request")]
    sent = b"".join(c.data for c in emitted if isinstance(c, commands.SendData))
    assert sent.startswith(b"HTTP/1.1 400") and b"hunter2" not in sent
    assert not any(isinstance(c, commands.Log) for c in emitted)


def test_a_head_within_the_limits_goes_on_as_mitmproxy_would(limited: object) -> None:
    reader = _reader()
    emitted = _feed(reader, b"GET http://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n")
    received = [c for c in emitted if isinstance(c, http_layers.ReceiveHttp)]
    assert isinstance(received[0].event, http_layers.RequestHeaders)
    assert received[0].event.request.path == "/x" and _refused == []


def test_without_limits_mitmproxys_own_reader_answers() -> None:
    reader = _reader()
    emitted = _feed(reader, b"CONNECT :443 HTTP/1.1\r\n\r\n")
    sent = b"".join(c.data for c in emitted if isinstance(c, commands.SendData))
    assert b"text/html" in sent  # the HTML page the client limits replace


def test_waiting_heads_lists_the_clocks_of_readers_waiting_for_a_head(limited: object) -> None:
    reader = _reader()
    mine = [w for w in boundary.waiting_heads() if w[0] is reader.conn]
    assert len(mine) == 1 and mine[0][2] is None  # idle: no byte yet
    _feed(reader, b"GET http://a.test/ HT")
    (_, waiting, head), = [w for w in boundary.waiting_heads() if w[0] is reader.conn]
    assert head is not None and head >= waiting
    _feed(reader, b"TP/1.1\r\nHost: a.test\r\n\r\n")
    assert not [w for w in boundary.waiting_heads() if w[0] is reader.conn]  # reading no head now


def test_undecided_finds_a_next_layer_behind_every_kind_of_parent() -> None:
    ctx = context.Context(tflow.tclient_conn(), _proxy_options())
    pending = layer.NextLayer(ctx)
    proxy = modes.HttpProxy(ctx)
    proxy._handle_event = pending.handle_event  # type: ignore[method-assign]  # what HttpProxy does on Start

    class Wrapper:
        child = proxy

    assert boundary._undecided(Wrapper()) is pending
    pending.layer = proxy  # decided (and no NextLayer further down)
    proxy._handle_event = lambda event: iter(())  # type: ignore[method-assign]
    assert boundary._undecided(Wrapper()) is None


def test_close_client_cancels_the_clients_own_task() -> None:
    client = tflow.tclient_conn()

    class Task:
        cancelled: str | None = None

        def cancel(self, msg: str) -> None:
            self.cancelled = msg

    io = server.ConnectionIO()
    io.handler = Task()  # type: ignore[assignment]

    class Handler:
        transports = {client: io}

    ps = proxyserver.Proxyserver()
    with taddons.context(ps):
        ps.connections[client.id] = Handler()  # type: ignore[assignment]
        assert boundary.close_client(client, "egress: idle-timeout")
        assert io.handler.cancelled == "egress: idle-timeout"  # type: ignore[union-attr]
        del ps.connections[client.id]
        assert not boundary.close_client(client, "egress: idle-timeout")


def test_close_client_closes_the_socket_when_it_has_one() -> None:
    """Closing the writer ends the reader task through end-of-stream and mitmproxy's own cleanup."""
    client = tflow.tclient_conn()

    class Writer:
        closed = False

        def is_closing(self) -> bool:
            return self.closed

        def close(self) -> None:
            self.closed = True

    io = server.ConnectionIO(writer=Writer())  # type: ignore[arg-type]

    class Handler:
        transports = {client: io}

    ps = proxyserver.Proxyserver()
    with taddons.context(ps):
        ps.connections[client.id] = Handler()  # type: ignore[assignment]
        assert boundary.close_client(client, "egress: idle-timeout")
        assert io.writer.closed  # type: ignore[union-attr]


def test_http2_servers_are_on_the_idle_clock_only_while_no_stream_is_open(limited: object) -> None:
    from mitmproxy.proxy.layers.http import _http2

    assert _params(boundary.original(_http2.Http2Server, "_handle_event")) == ["self", "event"]
    assert _params(boundary.original(_http2.Http2Server, "__init__")) == ["self", "context"]
    h2_server = _http2.Http2Server(context.Context(tflow.tclient_conn(), _proxy_options()))
    assert hasattr(h2_server.h2_conn, "open_inbound_streams")
    listed = [w for w in boundary.waiting_heads() if w[0] is h2_server.conn]
    assert len(listed) == 1 and listed[0][2] is None  # idle since it was made
    h2_server._egress_idle_since = None  # what a stream opening does
    assert not [w for w in boundary.waiting_heads() if w[0] is h2_server.conn]
# --- hostile input: request header lines checked before mitmproxy parses them ---------------------------------

_HEAD = [b"POST http://a.example/ HTTP/1.1", b"Host: a.example"]


def test_http1_server_looks_the_request_reader_up_on_the_module() -> None:
    """The patch replaces `http1.read_request_head`; it only takes effect while the server calls it that way."""
    assert "http1.read_request_head(" in inspect.getsource(_http1.Http1Server.read_headers)
    assert _params(boundary.original_function(http1, "read_request_head")) == ["lines"]


def test_unpatched_reader_strips_a_vertical_tab_and_joins_folded_lines() -> None:
    """The bet that makes the patch necessary: mitmproxy reads `chunked\\x0b` as `chunked`, and keeps obs-fold."""
    read = boundary.original_function(http1, "read_request_head")
    assert read([*_HEAD, b"Transfer-Encoding: chunked\x0b"]).headers["transfer-encoding"] == "chunked"
    assert read([*_HEAD, b"X-A: a", b" folded"]).headers["x-a"] == "a\r\n folded"


@pytest.mark.parametrize(
    "line",
    [b"Transfer-Encoding: chunked\x0b", b" folded", b"\tfolded", b"X-A: a\x00b", b"X-A: a\rb", b"X-A: \x0cb", b"X-A: a\x7f"],
)
def test_patched_reader_refuses_folded_lines_and_control_characters(line: bytes) -> None:
    lines = [*_HEAD, b"X-First: 1", line]
    with pytest.raises(ValueError) as refused:
        http1.read_request_head(lines)
    assert "\x00" not in str(refused.value) and "chunked" not in str(refused.value)  # names, never values


def test_patched_reader_passes_an_ordinary_head_with_tabs_in_values() -> None:
    request = http1.read_request_head([*_HEAD, b"X-A: a\tb", b"Content-Length: 0"])
    assert (request.host, request.headers["x-a"]) == ("a.example", "a\tb")


# --- graceful stop: listeners closed, open client connections listed --------------------------------------------


def test_open_clients_lists_the_client_of_every_connection_handler() -> None:
    client = tflow.tclient_conn()

    class Handler:
        pass

    handler = Handler()
    handler.client = client  # type: ignore[attr-defined]
    ps = proxyserver.Proxyserver()
    with taddons.context(ps):
        assert boundary.open_clients() == []
        ps.connections[client.id] = handler  # type: ignore[assignment]
        assert boundary.open_clients() == [client]


def test_stop_listening_closes_the_proxy_port_and_keeps_the_connections() -> None:
    """`Proxyserver.servers.update([])` stops every mode server: the port refuses, accepted sockets stay."""
    ps = proxyserver.Proxyserver()

    async def run() -> tuple[bool, bool]:
        with taddons.context(ps) as tctx:
            tctx.options.mode = ["regular@127.0.0.1:0"]
            await ps.setup_servers()
            port = ps.listen_addrs()[0][1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await boundary.stop_listening()
            try:
                await asyncio.open_connection("127.0.0.1", port)
                refused = False
            except ConnectionRefusedError:
                refused = True
            still_open = not reader.at_eof() and not writer.is_closing()
            writer.close()
            return refused, still_open

    assert asyncio.run(run()) == (True, True)


# --- clients that gave up before they were accepted --------------------------------------------------------------


def _accepted_after(client_does: Callable[[socket.socket], None]) -> tuple[socket.socket, socket.socket]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    peer = socket.create_connection(listener.getsockname())
    client_does(peer)
    accepted, _ = listener.accept()
    listener.close()
    return accepted, peer


def _gave_up(sock: socket.socket) -> bool:
    """`gave_up_waiting` for a client whose accepted socket is `sock`, as mitmproxy's handler holds it."""
    client = tflow.tclient_conn()

    class Writer:
        def get_extra_info(self, name: str) -> object:
            return sock if name == "socket" else None

    class Handler:
        transports = {client: server.ConnectionIO(writer=Writer())}  # type: ignore[arg-type]

    ps = proxyserver.Proxyserver()
    with taddons.context(ps):
        ps.connections[client.id] = Handler()  # type: ignore[assignment]
        return boundary.gave_up_waiting(client)


def _wait_for_fin(sock: socket.socket) -> None:
    for _ in range(200):
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 8:  # CLOSE_WAIT
            return
        time.sleep(0.005)


@pytest.mark.parametrize(
    ("sent", "closed", "gave_up"),
    [
        (b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n", True, True),  # Go's abandoned dial
        (b"", True, True),  # connected and closed without a byte
        (b"CONNECT 127.0.0.1:443 HTTP/1.1\r\n\r\n", False, False),  # still waiting for its answer
        (b"GET http://example.test/ HTTP/1.1\r\n\r\n", True, False),  # a half-closed request still wants its answer
    ],
)
def test_a_client_that_closed_before_it_was_accepted_is_told_apart(sent: bytes, closed: bool, gave_up: bool) -> None:
    def client_does(peer: socket.socket) -> None:
        peer.sendall(sent)
        if closed:
            peer.shutdown(socket.SHUT_WR)

    accepted, peer = _accepted_after(client_does)
    try:
        if closed:
            _wait_for_fin(accepted)
        assert _gave_up(accepted) is gave_up
        if sent:  # the peek left the bytes for mitmproxy to read
            assert accepted.recv(len(sent), socket.MSG_PEEK) == sent
    finally:
        accepted.close()
        peer.close()


def test_gave_up_waiting_is_false_without_a_socket() -> None:
    client = tflow.tclient_conn()
    with taddons.context(proxyserver.Proxyserver()):
        assert not boundary.gave_up_waiting(client)


# --- direct relay (issue 16): a decided tunnel's bytes skip the layer stack ---------------------------------------


def test_handle_connection_is_the_source_our_copy_follows() -> None:
    """Our `_handle_connection` is mitmproxy's, plus the direct relay: a changed original must be re-read."""
    import hashlib

    source = inspect.getsource(boundary.original(server.ConnectionHandler, "handle_connection"))
    assert hashlib.sha256(source.encode()).hexdigest() == boundary.HANDLE_CONNECTION_SHA256
    assert server.ConnectionHandler.handle_connection is boundary._handle_connection


def test_the_connection_handler_internals_the_relay_uses_are_there() -> None:
    assert _params(server.ConnectionHandler.drain_writers) == ["self"]
    assert {"handler", "reader", "writer"} <= set(server.ConnectionIO.__dataclass_fields__)
    watchdog = server.TimeoutWatchdog(600, lambda: asyncio.sleep(0))
    before = watchdog.last_activity
    watchdog.register_activity()
    assert before <= watchdog.last_activity <= time.time()  # a time.time() stamp, as the relay writes it
    client = tflow.tclient_conn()
    client.__dict__["_probe"] = 1  # connections keep a __dict__ (the relay's mark lives there)
    from mitmproxy.proxy.layers import tcp

    assert tcp.TCPLayer._handle_event is tcp.TCPLayer.start and hasattr(tcp.TCPLayer, "relay_messages")


class _Handler:
    """The parts of mitmproxy's ConnectionHandler the patched handle_connection uses, with the ending of a
    TCPLayer inside a CONNECT tunnel: the first end the layers see closes the pair (both tasks cancelled)."""

    def __init__(self) -> None:
        self.transports: dict[connection.Connection, server.ConnectionIO] = {}
        self.timeout_watchdog = server.TimeoutWatchdog(600, lambda: asyncio.sleep(0))
        self.events: list[events.Event] = []

    async def server_event(self, event: events.Event) -> None:
        self.events.append(event)
        if isinstance(event, events.DataReceived):  # the ordinary path: what a TCPLayer would forward
            peer = next(c for c in self.transports if c is not event.connection)
            self.transports[peer].writer.write(event.data)  # type: ignore[union-attr]
        if isinstance(event, events.ConnectionClosed):
            for io in self.transports.values():
                if io.handler is not None:
                    io.handler.cancel("closed by command")  # its own task too, as mitmproxy's close does

    async def drain_writers(self) -> None:
        for io in self.transports.values():
            await io.writer.drain()  # type: ignore[union-attr]


async def _pair() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.StreamReader, asyncio.StreamWriter]:
    """(gateway-side reader, writer, far-side reader, writer) of one loopback TCP connection."""
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.get_running_loop().create_future()
    srv = await asyncio.start_server(lambda r, w: accepted.set_result((r, w)), "127.0.0.1", 0)
    far_r, far_w = await asyncio.open_connection("127.0.0.1", srv.sockets[0].getsockname()[1])
    near_r, near_w = await accepted
    srv.close()
    return near_r, near_w, far_r, far_w


class _Meter:
    bytes_upstream = 0
    bytes_downstream = 0


async def _relayed(mark: bool) -> tuple[_Handler, _Meter, dict[str, object]]:
    handler, meter = _Handler(), _Meter()
    client, upstream = tflow.tclient_conn(), tflow.tserver_conn()
    c_r, c_w, app_r, app_w = await _pair()
    s_r, s_w, origin_r, origin_w = await _pair()
    handler.transports[client] = server.ConnectionIO(reader=c_r, writer=c_w)
    handler.transports[upstream] = server.ConnectionIO(reader=s_r, writer=s_w)
    if mark:
        boundary.relay_directly(client, upstream, meter)
    for conn in (client, upstream):
        handler.transports[conn].handler = asyncio.create_task(boundary._handle_connection(handler, conn))
    return handler, meter, dict(client=client, app=(app_r, app_w), origin=(origin_r, origin_w))


def test_a_relayed_pair_copies_each_way_counts_and_keeps_half_close_without_events() -> None:
    async def scenario() -> tuple[list[str], _Meter, bytes, bytes, bool]:
        handler, meter, ends = await _relayed(mark=True)
        app_r, app_w = ends["app"]  # type: ignore[misc]
        origin_r, origin_w = ends["origin"]  # type: ignore[misc]
        app_w.write(b"x" * 300_000)
        app_w.write_eof()  # the client is done sending ...
        up = await asyncio.wait_for(origin_r.read(), 10)  # ... the origin reads to the end of its stream
        assert not handler.events  # nothing went through the layers yet: the end waits for the other side
        origin_w.write(b"answer after the end")  # ... and can still answer
        origin_w.write_eof()
        down = await asyncio.wait_for(app_r.read(), 10)
        tasks = [io.handler for io in handler.transports.values()]
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        return [type(e).__name__ for e in handler.events], meter, up, down, not handler.transports

    names, meter, up, down, all_gone = asyncio.run(scenario())
    assert up == b"x" * 300_000 and down == b"answer after the end"
    assert (meter.bytes_upstream, meter.bytes_downstream) == (300_000, 20)
    assert names == ["ConnectionClosed", "ConnectionClosed"]  # no DataReceived: the layers saw only the ends
    assert all_gone  # mitmproxy's own cleanup ran: transports popped


def test_an_unmarked_pair_goes_the_ordinary_way_through_the_layers() -> None:
    async def scenario() -> tuple[list[str], bytes]:
        handler, _, ends = await _relayed(mark=False)
        app_r, app_w = ends["app"]  # type: ignore[misc]
        origin_r, _ = ends["origin"]  # type: ignore[misc]
        app_w.write(b"ping")
        got = await asyncio.wait_for(origin_r.readexactly(4), 10)
        for io in list(handler.transports.values()):
            io.handler.cancel()  # type: ignore[union-attr]
        await asyncio.gather(*(io.handler for io in list(handler.transports.values())), return_exceptions=True)
        return [type(e).__name__ for e in handler.events], got

    names, got = asyncio.run(scenario())
    assert got == b"ping" and names[0] == "DataReceived"


def test_a_peer_that_is_gone_ends_the_relay_and_the_layers_hear_of_it_at_once() -> None:
    """The client resets mid-transfer: its end reaches the layers (which close the pair) without waiting for
    the origin's stream to end."""

    async def scenario() -> list[str]:
        handler, _, ends = await _relayed(mark=True)
        _, app_w = ends["app"]  # type: ignore[misc]
        sock = app_w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        app_w.close()  # SO_LINGER 0: a reset
        tasks = [io.handler for io in handler.transports.values()]
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        return [type(e).__name__ for e in handler.events]

    assert asyncio.run(scenario()) == ["ConnectionClosed", "ConnectionClosed"]


def test_closing_the_gateways_own_side_ends_the_pair_without_waiting_for_the_origin() -> None:
    """The drain and close_client close a client's socket from our side: that is a close, not the client's
    half-close, so the pair ends at once even though the origin never ends its stream."""

    async def scenario() -> tuple[list[str], bytes]:
        handler, _, ends = await _relayed(mark=True)
        origin_r, _ = ends["origin"]  # type: ignore[misc]
        client = ends["client"]
        handler.transports[client].writer.close()  # type: ignore[index,union-attr]
        tasks = [io.handler for io in handler.transports.values()]
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        return [type(e).__name__ for e in handler.events], await asyncio.wait_for(origin_r.read(), 10)

    names, rest = asyncio.run(scenario())
    assert names == ["ConnectionClosed", "ConnectionClosed"] and rest == b""
# --- hot-path caches: mitmproxy's certificate store bounded like ours ---------------------------------------------


def test_bound_cert_store_sets_the_cap_mitmproxys_store_evicts_by(tmp_path) -> None:
    """`CertStore.STORE_CAP` is a class attribute `get_cert` -> `expire` reads: the bound applies to a store that
    already exists (TlsConfig builds one before our composition roots run)."""
    from mitmproxy import certs

    store = certs.CertStore.from_store(tmp_path, "mitmproxy", 2048)
    default = certs.CertStore.STORE_CAP
    assert default == 100
    try:
        boundary.bound_cert_store(2)
        for host in ("a.test", "b.test", "c.test"):
            store.get_cert(host, [])
        assert len(store.expire_queue) == 2
        assert certs.CertStore.STORE_CAP == 2
    finally:
        certs.CertStore.STORE_CAP = default
# --- hook dispatch by plan (AddonManager.handle_lifecycle) -------------------------------------------------------


class _Calls:
    """An addon recording every request, response and update it sees, sync or async as asked."""

    def __init__(self, name: str, seen: list[str], *, run_async: bool = False, fail: Exception | None = None) -> None:
        self.name, self.seen, self.fail = name, seen, fail
        if run_async:
            self.request = self._async_request  # type: ignore[method-assign]

    def request(self, flow: http.HTTPFlow) -> None:
        self.seen.append(f"{self.name}.request")
        if self.fail is not None:
            raise self.fail

    async def _async_request(self, flow: http.HTTPFlow) -> None:
        await asyncio.sleep(0)
        type(self).request(self, flow)

    def update(self, flows: list[http.HTTPFlow]) -> None:
        self.seen.append(f"{self.name}.update({len(flows)})")


class _Container:
    """A chain entry with children, as mitmproxy's script loader is."""

    def __init__(self, *children: object) -> None:
        self.addons = list(children)


def _lifecycle(tctx: taddons.context, hook: object) -> None:
    asyncio.run(tctx.master.addons.handle_lifecycle(hook))


def test_handle_lifecycle_keeps_the_shape_the_plan_relies_on() -> None:
    from mitmproxy import addonmanager, hooks

    assert boundary.original(addonmanager.AddonManager, "handle_lifecycle") is not addonmanager.AddonManager.handle_lifecycle
    original = boundary.original(addonmanager.AddonManager, "handle_lifecycle")
    assert _params(original) == ["self", "event"] and inspect.iscoroutinefunction(original)
    assert [f.name for f in __import__("dataclasses").fields(hooks.UpdateHook)] == ["flows"]
    with taddons.context(loadcore=False) as tctx:
        assert isinstance(tctx.master.addons.chain, list)
    # mitmproxy finds children only through an `addons` attribute (which is what makes a chain not plannable)
    assert list(addonmanager.traverse([_Container("child")])) [1:] == ["child"]
    # mitmproxy's own walk: the hook in chain order, then `update` for a flow
    seen: list[str] = []
    with taddons.context(_Calls("a", seen), _Calls("b", seen), loadcore=False) as tctx:
        asyncio.run(original(tctx.master.addons, http_layers.HttpRequestHook(tflow.tflow())))
    assert seen == ["a.request", "b.request", "a.update(1)", "b.update(1)"]


@pytest.mark.parametrize("patched", [True, False])
def test_the_plan_calls_what_mitmproxys_walk_calls_in_the_same_order(patched: bool) -> None:
    from mitmproxy import addonmanager

    seen: list[str] = []
    chain = [_Calls("a", seen), _Calls("b", seen, run_async=True), _Calls("c", seen)]
    with taddons.context(*chain, loadcore=False) as tctx:
        run = addonmanager.AddonManager.handle_lifecycle if patched else boundary.original(
            addonmanager.AddonManager, "handle_lifecycle"
        )
        asyncio.run(run(tctx.master.addons, http_layers.HttpRequestHook(tflow.tflow())))
        asyncio.run(run(tctx.master.addons, server.server_hooks.ClientConnectedHook(tflow.tclient_conn())))
    assert seen == ["a.request", "b.request", "c.request", "a.update(1)", "b.update(1)", "c.update(1)"]


def test_a_failing_addon_is_logged_and_the_next_one_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []
    with taddons.context(_Calls("a", seen, fail=ValueError("boom")), _Calls("b", seen), loadcore=False) as tctx:
        with caplog.at_level(logging.ERROR, logger="mitmproxy.addonmanager"):
            _lifecycle(tctx, http_layers.HttpRequestHook(tflow.tflow()))
    assert seen == ["a.request", "b.request", "a.update(1)", "b.update(1)"]
    assert [r.getMessage() for r in caplog.records] == ["Addon error: boom"]


def test_addon_halt_ends_the_hook_and_update_still_runs() -> None:
    from mitmproxy import exceptions

    seen: list[str] = []
    with taddons.context(_Calls("a", seen, fail=exceptions.AddonHalt()), _Calls("b", seen), loadcore=False) as tctx:
        _lifecycle(tctx, http_layers.HttpRequestHook(tflow.tflow()))
    assert seen == ["a.request", "a.update(1)", "b.update(1)"]


def test_options_error_propagates() -> None:
    from mitmproxy import exceptions

    with taddons.context(_Calls("a", [], fail=exceptions.OptionsError("no")), loadcore=False) as tctx:
        with pytest.raises(exceptions.OptionsError):
            _lifecycle(tctx, http_layers.HttpRequestHook(tflow.tflow()))


def test_an_addon_added_later_gets_the_next_event() -> None:
    seen: list[str] = []
    with taddons.context(_Calls("a", seen), loadcore=False) as tctx:
        _lifecycle(tctx, http_layers.HttpRequestHook(tflow.tflow()))
        tctx.master.addons.add(_Calls("late", seen))
        _lifecycle(tctx, http_layers.HttpRequestHook(tflow.tflow()))
    assert seen == ["a.request", "a.update(1)", "a.request", "late.request", "a.update(1)", "late.update(1)"]


def test_a_chain_with_a_container_takes_mitmproxys_walk_and_reaches_its_children() -> None:
    seen: list[str] = []
    with taddons.context(_Calls("a", seen), _Container(_Calls("child", seen)), loadcore=False) as tctx:
        _lifecycle(tctx, http_layers.HttpRequestHook(tflow.tflow()))
        replaced = tctx.master.addons.chain[1]
        replaced.addons = [_Calls("reloaded", seen)]  # a script reload swaps the container's children
        _lifecycle(tctx, http_layers.HttpRequestHook(tflow.tflow()))
    assert seen == [
        "a.request", "child.request", "a.update(1)", "child.update(1)",
        "a.request", "reloaded.request", "a.update(1)", "reloaded.update(1)",
    ]


@pytest.mark.parametrize("container", [False, True])
def test_mitmwebs_view_beside_the_hook_table_still_sees_every_flow(container: bool) -> None:
    """The gateway's addons as one HookTable entry, mitmweb's View after it (directly, or inside a container as
    with `-s addons/egress.py`): the view lists the flow and sees its response."""
    from mitmproxy.addons import view as view_addon

    from egressproxy.runtime.hook_table import HookTable

    seen: list[str] = []
    view = view_addon.View()
    table = HookTable([_Calls("gateway", seen)])
    entries: list[object] = [table, _Container(view)] if container else [table, view]
    with taddons.context(*entries) as tctx:
        flow = tflow.tflow()
        _lifecycle(tctx, http_layers.HttpRequestHeadersHook(flow))
        _lifecycle(tctx, http_layers.HttpRequestHook(flow))
        flow.response = tflow.tresp()
        _lifecycle(tctx, http_layers.HttpResponseHook(flow))
    assert list(view) == [flow] and view.get_by_id(flow.id).response is not None
    assert "gateway.request" in seen


# --- finishing after the response is written (egressproxy/deferred_work.py) ------------------------------------


def test_a_hook_runs_in_mitmproxys_hook_task_which_writes_after_the_hook_and_then_ends() -> None:
    """What `current_hook_task` relies on: the addons run inside `ConnectionHandler.hook_task`, recognised there
    (eager start, before mitmproxy names it), and that task feeds `HookCompleted` back (the write) before it ends."""
    seen: list[object] = []

    class Handler:
        async def handle_hook(self, hook: commands.StartHook) -> None:
            seen.append(boundary.current_hook_task())

        async def server_event(self, event: events.Event) -> None:
            seen.append(type(event).__name__)

    async def main() -> None:
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        hook = http_layers.HttpResponseHook(tflow.tflow(resp=True))
        task = asyncio.create_task(server.ConnectionHandler.hook_task(Handler(), hook))  # type: ignore[arg-type]
        assert seen[0] is task and seen[1:] == ["HookCompleted"]  # eagerly, before the task ended
        await task
        assert boundary.current_hook_task() is None  # any other task

    asyncio.run(main())
# --- synchronous hooks run inline (ConnectionHandler.server_event) ---------------------------------------------


def test_server_event_and_the_hook_path_are_the_sources_our_copy_follows() -> None:
    """Our `_server_event` is mitmproxy's plus the inline hooks; the shortcut replaces `hook_task` and
    `ProxyConnectionHandler.handle_hook` for synchronous plans: a changed original must be re-read."""
    import hashlib

    def digest(func: object) -> str:
        return hashlib.sha256(inspect.getsource(func).encode()).hexdigest()  # type: ignore[arg-type]

    assert digest(boundary.original(server.ConnectionHandler, "server_event")) == boundary.SERVER_EVENT_SHA256
    assert digest(server.ConnectionHandler.hook_task) == boundary.HOOK_TASK_SHA256
    assert digest(mode_servers.ProxyConnectionHandler.handle_hook) == boundary.HANDLE_HOOK_SHA256
    assert server.ConnectionHandler.server_event is boundary._server_event


class _HookLayer:
    """A layer that asks for `hooks` one after the other, each once the previous one is completed."""

    def __init__(self, *hooks: commands.StartHook) -> None:
        self.hooks, self.events = list(hooks), []  # type: list[commands.StartHook], list[events.Event]

    def handle_event(self, event: events.Event):  # type: ignore[no-untyped-def]
        self.events.append(event)
        if self.hooks:
            yield self.hooks.pop(0)


class _Watchdog:
    def register_activity(self) -> None:
        pass

    def disarm(self) -> object:
        import contextlib

        return contextlib.nullcontext()


class _Phases:
    """An addon with sync response hooks (and optionally an async or awaitable-returning one)."""

    def __init__(self, seen: list[str], *, mode: str = "sync", fail: bool = False, name: str = "phases") -> None:
        self.seen, self.mode, self.fail, self.name = seen, mode, fail, name

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self.seen.append("responseheaders")
        if self.fail:
            raise ValueError("boom")

    def response(self, flow: http.HTTPFlow) -> object:
        if self.mode == "intercept":
            flow.intercept()
        if self.mode == "awaitable":
            return self._later("response")
        self.seen.append("response")
        return None

    async def _later(self, name: str) -> None:
        await asyncio.sleep(0)
        self.seen.append(f"{name} (awaited)")


class _AsyncResponse(_Phases):
    async def response(self, flow: http.HTTPFlow) -> None:  # type: ignore[override]
        self.seen.append("response (async)")


def _handler(tctx: taddons.context, layer_: _HookLayer, cls: type = mode_servers.ProxyConnectionHandler) -> object:
    handler = object.__new__(cls)
    handler.master = tctx.master
    handler._server_event_lock = asyncio.Lock()
    handler.timeout_watchdog = _Watchdog()
    handler.layer = layer_
    handler.transports = {}
    handler.wakeup_timer = set()
    handler.client = tflow.tclient_conn()
    return handler


def _drive(handler: object, layer_: _HookLayer, until: int, monkeypatch: pytest.MonkeyPatch, resume: http.HTTPFlow | None = None) -> list[str]:
    """Feed one event; wait (bounded) until the layer has seen `until` events; the names of the tasks made."""
    from mitmproxy.utils import asyncio_utils

    tasks: list[str] = []
    real = asyncio_utils.create_task

    def recording(coro, *, name, keep_ref, client=None):  # type: ignore[no-untyped-def]
        tasks.append(name)
        return real(coro, name=name, keep_ref=keep_ref, client=client)

    monkeypatch.setattr(asyncio_utils, "create_task", recording)

    async def main() -> None:
        await handler.server_event(events.Start())  # type: ignore[attr-defined]
        if resume is not None:
            assert len(layer_.events) < until  # still waiting for the resume
            resume.resume()
        for _ in range(1000):
            if len(layer_.events) >= until:
                return
            await asyncio.sleep(0)

    asyncio.run(main())
    return tasks


def _response_hooks(flow: http.HTTPFlow) -> _HookLayer:
    return _HookLayer(http_layers.HttpResponseHeadersHook(flow), http_layers.HttpResponseHook(flow))


def test_a_synchronous_hook_runs_inline_and_completes_in_the_same_server_event(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    flow = tflow.tflow(resp=True)
    layer_ = _response_hooks(flow)
    with taddons.context(_Phases(seen), loadcore=False) as tctx:
        tasks = _drive(_handler(tctx, layer_), layer_, 3, monkeypatch)
    assert tasks == []
    assert seen == ["responseheaders", "response"]
    assert [type(e).__name__ for e in layer_.events] == ["Start", "HookCompleted", "HookCompleted"]
    assert [e.command.name for e in layer_.events[1:]] == ["responseheaders", "response"]  # type: ignore[attr-defined]


def test_a_hook_with_a_coroutine_method_keeps_mitmproxys_task(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    flow = tflow.tflow(resp=True)
    layer_ = _response_hooks(flow)
    with taddons.context(_AsyncResponse(seen), loadcore=False) as tctx:
        tasks = _drive(_handler(tctx, layer_), layer_, 3, monkeypatch)
    assert tasks == ["handle_hook(response)"]
    assert seen == ["responseheaders", "response (async)"] and len(layer_.events) == 3


@pytest.mark.parametrize("mode", ["intercept", "awaitable"])
def test_an_intercepted_flow_or_an_awaitable_result_finishes_in_a_task(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    flow = tflow.tflow(resp=True)
    layer_ = _response_hooks(flow)
    with taddons.context(_Phases(seen, mode=mode), loadcore=False) as tctx:
        tasks = _drive(_handler(tctx, layer_), layer_, 3, monkeypatch, resume=flow if mode == "intercept" else None)
    assert tasks == ["handle_hook(response)"]
    assert seen[-1] == ("response" if mode == "intercept" else "response (awaited)")
    assert [e.command.name for e in layer_.events[1:]] == ["responseheaders", "response"]  # type: ignore[attr-defined]


def test_an_inline_hooks_failure_is_logged_and_the_next_entry_and_hook_still_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []
    flow = tflow.tflow(resp=True)
    layer_ = _response_hooks(flow)
    with taddons.context(_Phases(seen, fail=True), _Phases(seen, name="second"), loadcore=False) as tctx:
        with caplog.at_level(logging.ERROR, logger="mitmproxy.addonmanager"):
            tasks = _drive(_handler(tctx, layer_), layer_, 3, monkeypatch)
    assert tasks == [] and seen == ["responseheaders", "responseheaders", "response", "response"]
    assert [r.getMessage() for r in caplog.records] == ["Addon error: boom"]


def test_another_connection_handler_keeps_mitmproxys_task(monkeypatch: pytest.MonkeyPatch) -> None:
    class Other(mode_servers.ProxyConnectionHandler):
        async def handle_hook(self, hook: commands.StartHook) -> None:
            await self.master.addons.handle_lifecycle(hook)

    seen: list[str] = []
    flow = tflow.tflow(resp=True)
    layer_ = _response_hooks(flow)
    with taddons.context(_Phases(seen), loadcore=False) as tctx:
        tasks = _drive(_handler(tctx, layer_, Other), layer_, 3, monkeypatch)
    assert tasks == ["handle_hook(responseheaders)", "handle_hook(response)"] and seen == ["responseheaders", "response"]
