"""The passthrough relay layer: the pair is marked for the direct relay once, and only once, the upstream is open."""

from __future__ import annotations

from mitmproxy import connection
from mitmproxy.options import Options
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.context import Context
from mitmproxy.test import tflow

from egressproxy.engine.direct_relay import DirectRelayLayer
from egressproxy.engine.mitmproxy_boundary import relayed_directly
from egressproxy.flowrecord import ConnectionRecord


def started() -> tuple[DirectRelayLayer, commands.OpenConnection]:
    ctx = Context(tflow.tclient_conn(), Options())
    ctx.server = connection.Server(address=("pinned.example.org", 443))
    relay = DirectRelayLayer(ctx, ConnectionRecord())
    out = list(relay.handle_event(events.Start()))
    assert len(out) == 1 and isinstance(out[0], commands.OpenConnection) and out[0].connection is ctx.server
    return relay, out[0]


def test_the_pair_is_relayed_directly_once_the_upstream_is_open() -> None:
    relay, dial = started()
    assert not relayed_directly(relay.context.client)  # not while the upstream is being dialled
    out = list(relay.handle_event(events.OpenConnectionCompleted(dial, None)))
    assert out == []
    assert relayed_directly(relay.context.client) and relayed_directly(relay.context.server)
    assert relay.flow is None  # a passthrough: no flow, nothing decrypted


def test_bytes_sent_while_the_upstream_was_dialled_are_forwarded_by_the_layer_in_order() -> None:
    relay, dial = started()
    queued = list(relay.handle_event(events.DataReceived(relay.context.client, b"sent early")))
    assert queued == []  # paused behind the dial, as in any TCPLayer
    out = list(relay.handle_event(events.OpenConnectionCompleted(dial, None)))
    assert [(c.connection, c.data) for c in out if isinstance(c, commands.SendData)] == [(relay.context.server, b"sent early")]


def test_a_failed_dial_closes_the_client_and_marks_nothing() -> None:
    relay, dial = started()
    out = list(relay.handle_event(events.OpenConnectionCompleted(dial, "connection refused")))
    assert [type(c) for c in out] == [commands.CloseConnection] and out[0].connection is relay.context.client
    assert not relayed_directly(relay.context.client) and not relayed_directly(relay.context.server)
