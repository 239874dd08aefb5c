"""addons/connection_table.py: one record per client connection, with the sidecar's identity, forgotten at close."""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy.test import taddons, tflow

from addons.connection_table import ConnectionTable
from egressproxy.flowrecord import UNKNOWN_IDENTITY, Identity
from tests.support.addon_state import compile_snapshot, state_for

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  listeners:
  - {name: http, protocol: HTTP}
"""


def test_a_connection_gets_the_sidecars_identity_and_the_serving_generation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EGRESS_NAMESPACE", "team-a")
    monkeypatch.setenv("EGRESS_SERVICE_ACCOUNT", "agent")
    snapshot = compile_snapshot(CONFIG)
    state = state_for(snapshot, tmp_path)
    table = ConnectionTable(state)
    client = tflow.tclient_conn()
    with taddons.context(table):
        table.client_connected(client)
    record = state.connections[client.id]
    assert record.identity == Identity("team-a", "agent")
    assert record.generation == snapshot.generation


@pytest.mark.parametrize("env", [{}, {"EGRESS_NAMESPACE": "team-a"}], ids=["none", "namespace-only"])
def test_without_both_variables_the_identity_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env) -> None:
    monkeypatch.delenv("EGRESS_NAMESPACE", raising=False)
    monkeypatch.delenv("EGRESS_SERVICE_ACCOUNT", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    state = state_for(None, tmp_path)
    table = ConnectionTable(state)
    client = tflow.tclient_conn()
    with taddons.context(table):
        table.client_connected(client)
    assert state.connections[client.id].identity == UNKNOWN_IDENTITY


def test_a_closed_connection_is_forgotten(tmp_path: Path) -> None:
    state = state_for(None, tmp_path)
    table = ConnectionTable(state)
    client, other = tflow.tclient_conn(), tflow.tclient_conn()
    with taddons.context(table):
        table.client_connected(client)
        table.client_connected(other)
        table.client_disconnected(client)
    assert client.id not in state.connections and other.id in state.connections
