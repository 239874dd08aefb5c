"""The metering layer and the connection-records addon: bytes per direction, one finished record per connection."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

from mitmproxy import connection
from mitmproxy.options import Options
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.context import Context
from mitmproxy.test import tflow

from addons.connection_records import ConnectionRecords
from egressproxy.engine.metering import MeteredLayer
from egressproxy.flowrecord import ConnectionRecord, FinishedConnection
from egressproxy.runtime.state import GatewayState
from egressproxy.sinks import Sink


class Echo(layer.Layer):
    """A child layer that forwards what it receives to the other side, and remembers the events."""

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self.seen: list[events.Event] = []

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        self.seen.append(event)
        if isinstance(event, events.DataReceived):
            other = self.context.server if event.connection is self.context.client else self.context.client
            yield commands.SendData(other, event.data)


def context() -> Context:
    return Context(tflow.tclient_conn(), Options())


def test_bytes_are_counted_per_direction_and_every_event_reaches_the_child() -> None:
    ctx = context()
    record = ConnectionRecord()
    child = Echo(ctx)
    metered = MeteredLayer(ctx, child, record)
    server = ctx.server
    out = []
    for event in (
        events.Start(),
        events.DataReceived(ctx.client, b"hello"),
        events.DataReceived(server, b"0123456789"),
        events.DataReceived(ctx.client, b"!"),
        events.ConnectionClosed(ctx.client),
    ):
        out += list(metered.handle_event(event))
    assert (record.bytes_upstream, record.bytes_downstream) == (6, 10)
    assert [type(e).__name__ for e in child.seen] == ["Start", "DataReceived", "DataReceived", "DataReceived", "ConnectionClosed"]
    assert [c.data for c in out if isinstance(c, commands.SendData)] == [b"hello", b"0123456789", b"!"]


def test_the_metering_layer_is_invisible_in_the_layer_stack() -> None:
    """mitmproxy's NextLayer and our TLS addons decide by `context.layers`: they must see the same stack."""
    ctx = context()
    MeteredLayer(ctx, layer.NextLayer(ctx), ConnectionRecord())
    assert ctx.layers == []


class Collect(Sink):
    def __init__(self) -> None:
        self.records: list[FinishedConnection] = []

    def connection_finished(self, record: FinishedConnection) -> None:
        self.records.append(record)


class Handler:
    """What mitmproxy's ProxyConnectionHandler offers: the top layer every event of the connection enters."""

    def __init__(self, top: layer.Layer) -> None:
        self.layer = top


def test_the_top_layer_is_wrapped_once_and_the_record_finishes_on_disconnect(tmp_path: Path) -> None:
    state = GatewayState(tmp_path)
    collect = Collect()
    state.sinks.register(collect)
    ctx = context()
    client: connection.Client = ctx.client
    top = Echo(ctx)  # the mode's layer (HttpProxy, TransparentProxy, ...) the server instance put there
    handler = Handler(top)
    addon = ConnectionRecords(state, proxyserver=SimpleNamespace(connections={client.id: handler}))
    addon.client_connected(client)
    assert isinstance(handler.layer, MeteredLayer) and handler.layer.child is top
    assert ctx.layers == [top]
    addon.client_connected(client)  # never wrapped twice
    assert isinstance(handler.layer, MeteredLayer) and handler.layer.child is top

    record = state.connection(client.id)
    assert record.metered
    for event in (events.Start(), events.DataReceived(client, b"CONNECT"), events.DataReceived(ctx.server, b"ok")):
        list(handler.layer.handle_event(event))
    record.listener, record.route, record.carries = "tls", "default/pinned", "TLS"
    addon.client_disconnected(client)
    [finished] = collect.records
    assert (finished.listener, finished.route, finished.carries) == ("tls", "default/pinned", "TLS")
    assert (finished.bytes_upstream, finished.bytes_downstream) == (7, 2)
    assert finished.duration >= 0


def test_a_connection_mitmproxy_has_no_handler_for_still_gets_a_record(tmp_path: Path) -> None:
    state = GatewayState(tmp_path)
    collect = Collect()
    state.sinks.register(collect)
    client = tflow.tclient_conn()
    addon = ConnectionRecords(state, proxyserver=SimpleNamespace(connections={}))
    addon.client_connected(client)
    assert not state.connection(client.id).metered
    addon.client_disconnected(client)
    assert [(r.bytes_upstream, r.bytes_downstream, r.listener) for r in collect.records] == [(0, 0, None)]


def test_mitmproxy_still_keeps_handlers_where_the_meter_looks() -> None:
    """Pins the engine detail `meter_connection` relies on: Proxyserver.connections maps a client id to a
    handler whose `layer` gets every event of that connection."""
    from mitmproxy.addons.proxyserver import Proxyserver
    from mitmproxy.proxy.server import ConnectionHandler

    assert isinstance(Proxyserver().connections, dict)
    assert "self.layer.handle_event(event)" in inspect.getsource(ConnectionHandler)
