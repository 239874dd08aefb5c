"""Every bet egressproxy makes on mitmproxy internals, pinned (egressproxy/engine/mitmproxy_boundary.py).

Each test fails when the mitmproxy release underneath changes what we patch or read: the patched method's
signature, the attributes our replacement uses, and a small behaviour driven through mitmproxy's own classes.
A failure here means: read the new mitmproxy source before widening the pin in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import inspect
import socket

import pytest
from mitmproxy import connection, http, options
from mitmproxy.addons import proxyserver, tlsconfig
from mitmproxy.net import tls as net_tls
from mitmproxy.net.http import http1
from mitmproxy.proxy import context, events, layer, mode_servers, server
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers import modes
from mitmproxy.proxy.layers.http import _http1, _upstream_proxy
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
