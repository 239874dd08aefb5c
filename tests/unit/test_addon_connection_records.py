"""addons/connection_records.py: every client connection ends in one finished record for the sinks.

What a user observes: `egress_connection_bytes_total` per direction and the connection-duration histogram,
labelled with the gateway, and the listener and route that took the connection - or, for explicit-proxy plain
HTTP where no connection-level decision is taken, those of its last request. (The metering layer's byte
counting itself is tested in test_metering.py.)
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from mitmproxy.test import taddons, tflow

from addons.connection_records import ConnectionRecords
from egressproxy.flowrecord import FinishedConnection, Identity, Verdict
from egressproxy.runtime.state import GatewayState
from egressproxy.sinks import Sink
from tests.support.addon_state import compile_snapshot, counter, state_for

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg, namespace: net}
spec:
  listeners: [{name: http, protocol: HTTP}]
"""


class Collect(Sink):
    name = "collect"

    def __init__(self) -> None:
        self.records: list[FinishedConnection] = []

    def connection_finished(self, record: FinishedConnection) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def snapshot():
    return compile_snapshot(CONFIG)


def _setup(snapshot, tmp_path: Path) -> tuple[GatewayState, ConnectionRecords, Collect]:
    state = state_for(snapshot, tmp_path)
    collect = Collect()
    state.sinks.register(collect)
    return state, ConnectionRecords(state, proxyserver=SimpleNamespace(connections={})), collect


@pytest.mark.parametrize(
    ("decided", "listener", "route"),
    [
        # a connection decided as a whole (tunnel, passthrough, transparent): its own listener and route
        ({"listener": "tls", "route": "default/pinned"}, "tls", "default/pinned"),
        # explicit-proxy plain HTTP: never decided as a connection, labelled by its last request
        ({"request_listener": "http", "request_route": "default/plain"}, "http", "default/plain"),
        # the connection's own decision wins over a request's
        ({"listener": "tls", "route": "default/pinned", "request_listener": "http", "request_route": "x/y"}, "tls", "default/pinned"),
        ({}, None, None),  # closed before anything was decided
    ],
)
def test_a_closed_connection_is_finished_once_with_its_labels_and_bytes(snapshot, tmp_path, decided, listener, route) -> None:
    state, addon, collect = _setup(snapshot, tmp_path)
    client = tflow.tclient_conn()
    addon.client_connected(client)
    record = state.connection(client.id)
    for name, value in decided.items():
        setattr(record, name, value)
    record.bytes_upstream, record.bytes_downstream, record.requests = 120, 4096, 3
    record.identity, record.verdict, record.host = Identity("team-a", "agent"), Verdict.allow("route"), "api.example.com"
    addon.client_disconnected(client)
    [finished] = collect.records
    assert (finished.gateway, finished.listener, finished.route) == ("net/eg", listener, route)
    assert (finished.bytes_upstream, finished.bytes_downstream, finished.requests) == (120, 4096, 3)
    assert (str(finished.identity), finished.host, finished.started) == ("team-a/agent", "api.example.com", client.timestamp_start)
    labels = {"gateway": "net/eg", "listener": listener or "none", "route": route or "none"}
    assert counter(state, "egress_connection_bytes_total", **labels, direction="upstream") == 120
    assert counter(state, "egress_connection_bytes_total", **labels, direction="downstream") == 4096


def test_a_connection_without_a_record_finishes_nothing(snapshot, tmp_path) -> None:
    state, addon, collect = _setup(snapshot, tmp_path)
    addon.client_disconnected(tflow.tclient_conn())
    assert collect.records == []


def test_without_a_configuration_the_gateway_label_is_empty(tmp_path) -> None:
    state, addon, collect = _setup(None, tmp_path)
    client = tflow.tclient_conn()
    addon.client_connected(client)
    addon.client_disconnected(client)
    assert [r.gateway for r in collect.records] == [""]


def test_the_proxyserver_is_found_when_running_under_a_master(snapshot, tmp_path) -> None:
    state = state_for(snapshot, tmp_path)
    addon = ConnectionRecords(state)
    with taddons.context(addon):
        addon.client_connected(tflow.tclient_conn())  # the test master has no Proxyserver: nothing to meter
    assert counter(state, "egress_hook_errors_total", addon="ConnectionRecords", hook="client_connected") == 0


def test_a_denied_connect_names_its_authority_listener_and_verdict(snapshot, tmp_path) -> None:
    """No flow finishes for a denied CONNECT: its connection's record carries the denial (captures show it)."""
    state, addon, collect = _setup(snapshot, tmp_path)
    client = tflow.tclient_conn()
    addon.client_connected(client)
    verdict = Verdict.deny("no-route", "EgressGateway/net/eg")
    state.connection(client.id).denied_connect = ("blocked.example.com", "https", verdict)
    addon.client_disconnected(client)
    [finished] = collect.records
    assert (finished.host, finished.listener, finished.verdict) == ("blocked.example.com", "https", verdict)
