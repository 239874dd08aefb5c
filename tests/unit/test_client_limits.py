"""Client limits: the pure rules (egressproxy/client_limits.py), `spec.clientLimits` from YAML to the typed
form on the snapshot, the refusal answer, and the connection-level addon (addons/client_limits.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mitmproxy.test import tflow

from addons import client_limits as addon_module
from addons.client_limits import ClientLimitGuard
from egressproxy.client_limits import (
    DEFAULT_LIMITS,
    ClientLimits,
    ConnectionCounts,
    head_refusal,
    overdue,
)
from egressproxy.responses import client_refusal
from egressproxy.runtime.state import GatewayState
from tests.unit.test_compiler import compiled
from tests.unit.test_kinds_apoxy import head, problems_of, spec_of

GATEWAY = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  listeners: [{name: http, protocol: HTTP}]
"""


# --- the rules ------------------------------------------------------------------------------------------------


def test_the_defaults_are_the_contracts() -> None:
    """DESIGN.md 4.2: heads over 64 KiB get 431; 60 s to finish a head; the connection cap is off."""
    assert DEFAULT_LIMITS == ClientLimits(65536, 100, 60.0, 60.0, 0)


@pytest.mark.parametrize(
    ("head_bytes", "lines", "expected"),
    [
        (65536, None, None),
        (65537, None, "request-header-too-large"),
        (65537, 3, "request-header-too-large"),
        (1000, 100, None),
        (1000, 101, "request-header-too-many"),
    ],
)
def test_head_refusal(head_bytes: int, lines: int | None, expected: str | None) -> None:
    assert head_refusal(DEFAULT_LIMITS, head_bytes, lines) == expected


def test_a_zero_limit_is_off() -> None:
    off = ClientLimits(0, 0, 0.0, 0.0, 0)
    assert head_refusal(off, 10**9, 10**6) is None
    assert overdue(off, 10**6, 0.0, None) is None and overdue(off, 10**6, 0.0, 1.0) is None


def test_overdue_keeps_two_clocks() -> None:
    limits = ClientLimits(idle_timeout=1.0, request_head_timeout=2.0)
    assert overdue(limits, 100.9, 100.0, None) is None
    assert overdue(limits, 101.0, 100.0, None) == "idle-timeout"
    # once a byte came, the head clock runs from that byte, not from the start of the wait
    assert overdue(limits, 101.5, 100.0, 100.5) is None
    assert overdue(limits, 102.5, 100.0, 100.5) == "request-head-timeout"


def test_connection_counts_cap_per_address_and_release() -> None:
    counts = ConnectionCounts()
    assert counts.admit("10.0.0.1", 2) and counts.admit("10.0.0.1", 2)
    assert not counts.admit("10.0.0.1", 2)
    assert counts.admit("10.0.0.2", 2)
    counts.release("10.0.0.1")
    assert counts.open("10.0.0.1") == 1 and counts.admit("10.0.0.1", 2)
    assert all(counts.admit("10.0.0.3", 0) for _ in range(1000))  # 0: no cap


# --- configuration ------------------------------------------------------------------------------------------------


def test_client_limits_every_field_and_defaults() -> None:
    body = "  listeners: [{name: h, protocol: HTTP}]\n  clientLimits:\n    maxRequestHeadBytes: 8192\n    idleTimeout: 1m\n"
    spec = spec_of(head("EgressGateway") + body)
    assert spec["clientLimits"] == {
        "maxRequestHeadBytes": 8192,
        "maxRequestHeaders": 100,
        "requestHeadTimeout": 60.0,
        "idleTimeout": 60.0,
        "maxConnectionsPerClient": 0,
    }


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("maxRequestHeadBytes", "-1", "t.yaml:7: EgressGateway/ns/x: spec.clientLimits.maxRequestHeadBytes: must be at least 0, got -1"),
        ("maxRequestHeaders", '"many"', "t.yaml:7: EgressGateway/ns/x: spec.clientLimits.maxRequestHeaders: expected an integer, got string"),
        ("requestHeadTimeout", "30", "t.yaml:7: EgressGateway/ns/x: spec.clientLimits.requestHeadTimeout: expected a duration string such as '30s' or '1m30s', got integer"),
        ("idleTimeout", '"-5s"', "t.yaml:7: EgressGateway/ns/x: spec.clientLimits.idleTimeout: duration must not be negative, got '-5s'"),
    ],
)
def test_client_limits_problems_name_file_line_and_field(field: str, value: str, expected: str) -> None:
    body = f"  listeners: [{{name: h, protocol: HTTP}}]\n  clientLimits:\n    {field}: {value}\n"
    assert problems_of(head("EgressGateway") + body) == [expected]


def test_an_unknown_client_limits_field_is_an_error() -> None:
    body = "  listeners: [{name: h, protocol: HTTP}]\n  clientLimits:\n    maxHeaderBytes: 10\n"
    problems = problems_of(head("EgressGateway") + body)
    assert len(problems) == 1 and "spec.clientLimits.maxHeaderBytes" in problems[0]


def test_client_limits_compile_into_the_gateways_typed_form_and_the_dump() -> None:
    snapshot = compiled(GATEWAY + "  clientLimits: {maxRequestHeaders: 20, requestHeadTimeout: 2s, maxConnectionsPerClient: 8}\n")
    limits = snapshot.gateway.client_limits
    assert limits == ClientLimits(65536, 20, 2.0, 60.0, 8)
    assert snapshot.gateway.to_dump()["clientLimits"]["maxConnectionsPerClient"] == 8
    assert compiled(GATEWAY).gateway.client_limits == DEFAULT_LIMITS


def test_the_refusal_answer_is_the_gateways_json() -> None:
    answer = client_refusal(431, "request-header-too-large")
    assert answer.status == 431
    assert dict(answer.headers) == {
        "content-type": "application/json", "x-egress-denied": "request-header-too-large", "connection": "close",
    }
    assert json.loads(answer.body) == {
        "error": "request head is larger than the gateway accepts", "reason": "request-header-too-large", "policy": "",
    }


# --- the addon ----------------------------------------------------------------------------------------------------


def _guard(tmp_path: Path, text: str) -> ClientLimitGuard:
    state = GatewayState(tmp_path)
    state.swap(compiled(GATEWAY + text))
    return ClientLimitGuard(state)


def _refusals(guard: ClientLimitGuard, reason: str) -> float:
    return guard.state.metrics.client_refusals.labels(reason)._value.get()


def test_a_connection_over_the_cap_is_refused_at_accept_and_counted(tmp_path: Path) -> None:
    guard = _guard(tmp_path, "  clientLimits: {maxConnectionsPerClient: 2}\n")
    clients = [tflow.tclient_conn() for _ in range(3)]
    for client in clients:
        client.peername = ("10.1.2.3", 40000)
        guard.client_connected(client)
    assert [c.error for c in clients[:2]] == [None, None]
    assert clients[2].error and clients[2].error.startswith("too-many-connections")
    assert _refusals(guard, "too-many-connections") == 1
    guard.client_disconnected(clients[2])  # a refused one never counted: nothing to release
    assert guard.counts.open("10.1.2.3") == 2
    guard.client_disconnected(clients[0])
    assert guard.counts.open("10.1.2.3") == 1


def test_refuse_counts_and_builds_the_raw_answer_without_the_head(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    guard = _guard(tmp_path, "")
    caplog.set_level("INFO", logger="egressproxy")
    raw = guard.refuse(tflow.tclient_conn(), 400, "malformed-request")
    assert raw.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b'"reason": "malformed-request"' in raw
    assert _refusals(guard, "malformed-request") == 1
    assert "refused: malformed-request" in caplog.text


def test_the_sweep_closes_only_overdue_connections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    guard = _guard(tmp_path, "  clientLimits: {idleTimeout: 1s, requestHeadTimeout: 2s}\n")
    idle, trickling, fresh = (tflow.tclient_conn() for _ in range(3))
    monkeypatch.setattr(addon_module, "waiting_heads", lambda: iter([(idle, 0.0, None), (trickling, 0.0, 0.5)]))
    monkeypatch.setattr(addon_module, "undecided_clients", lambda: iter([(fresh, 9.5, None)]))
    closed: list[tuple[str, str]] = []
    monkeypatch.setattr(addon_module, "close_client", lambda c, why: closed.append((c.id, why)) or True)
    assert guard.sweep(guard.state.snapshot.gateway.client_limits, 10.0) == 2  # type: ignore[union-attr]
    assert closed == [(idle.id, "egress: idle-timeout"), (trickling.id, "egress: request-head-timeout")]
    assert _refusals(guard, "idle-timeout") == 1 and _refusals(guard, "request-head-timeout") == 1


def test_the_sweep_period_follows_the_shortest_timeout() -> None:
    assert addon_module._tick(ClientLimits(idle_timeout=1.0, request_head_timeout=2.0)) == 0.25
    assert addon_module._tick(DEFAULT_LIMITS) == 1.0
    assert addon_module._tick(ClientLimits(idle_timeout=0.0, request_head_timeout=0.0)) == 1.0


def test_what_a_client_may_send_ahead_of_its_response() -> None:
    from egressproxy.client_limits import ahead_limit

    assert ahead_limit(DEFAULT_LIMITS) == 65536
    assert ahead_limit(ClientLimits(max_request_head_bytes=4096)) == 65536  # never below one read
    assert ahead_limit(ClientLimits(max_request_head_bytes=200_000)) == 200_000
    assert ahead_limit(ClientLimits(max_request_head_bytes=0)) == 1 << 20
