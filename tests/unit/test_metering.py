"""The metering layer and the connection-records addon: bytes per direction, one finished record per connection."""

from __future__ import annotations

from pathlib import Path

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


def test_the_root_is_wrapped_once_and_the_record_finishes_on_disconnect(tmp_path: Path) -> None:
    state = GatewayState(tmp_path)
    collect = Collect()
    state.sinks.register(collect)
    addon = ConnectionRecords(state)
    ctx = context()
    client: connection.Client = ctx.client
    root = layer.NextLayer(ctx, ask_on_start=True)
    addon.next_layer(root)
    assert isinstance(root.layer, MeteredLayer)
    inner = root.layer.child
    assert isinstance(inner, layer.NextLayer) and inner.layer is None  # decided later by the other addons
    addon.next_layer(inner)  # the inner NextLayer asks again: not wrapped twice
    assert inner.layer is None

    record = state.connection(client.id)
    record.listener, record.route, record.carries = "tls", "default/pinned", "TLS"
    record.bytes_upstream, record.bytes_downstream = 517, 4096
    addon.client_disconnected(client)
    [finished] = collect.records
    assert (finished.listener, finished.route, finished.carries) == ("tls", "default/pinned", "TLS")
    assert (finished.bytes_upstream, finished.bytes_downstream) == (517, 4096)
    assert finished.duration >= 0


def test_a_layer_already_chosen_at_the_root_is_wrapped_as_it_is(tmp_path: Path) -> None:
    state = GatewayState(tmp_path)
    ctx = context()
    root = layer.NextLayer(ctx, ask_on_start=True)
    chosen = Echo(ctx)
    root.layer = chosen
    ConnectionRecords(state).next_layer(root)
    assert isinstance(root.layer, MeteredLayer) and root.layer.child is chosen


def test_nested_layers_are_not_wrapped(tmp_path: Path) -> None:
    state = GatewayState(tmp_path)
    ctx = context()
    Echo(ctx)  # a parent layer on the stack: this NextLayer is inside a connection (e.g. a CONNECT tunnel)
    nested = layer.NextLayer(ctx)
    ConnectionRecords(state).next_layer(nested)
    assert nested.layer is None
