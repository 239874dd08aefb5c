"""A connection its client gave up on before it was accepted is closed at once and skips every later addon."""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.test import tflow

import addons.abandoned_clients as abandoned
from addons.abandoned_clients import GAVE_UP, AbandonedClients
from egressproxy.runtime.state import GatewayState


def _refusals(state: GatewayState) -> float:
    return state.metrics.client_refusals.labels(GAVE_UP)._value.get()  # type: ignore[attr-defined]


def test_a_client_that_gave_up_is_closed_counted_and_halts_the_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(abandoned, "gave_up_waiting", lambda client: True)
    state = GatewayState(tmp_path)
    addon, client = AbandonedClients(state), tflow.tclient_conn()
    with pytest.raises(exceptions.AddonHalt):
        addon.client_connected(client)
    assert client.error and "closed the connection before it was accepted" in client.error
    assert _refusals(state) == 1
    with pytest.raises(exceptions.AddonHalt):  # no record was opened: later addons never hear of it
        addon.client_disconnected(client)
    addon.client_disconnected(client)  # once only
    assert addon.dropped == set()


def test_a_live_client_goes_on_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(abandoned, "gave_up_waiting", lambda client: False)
    state = GatewayState(tmp_path)
    addon, client = AbandonedClients(state), tflow.tclient_conn()
    addon.client_connected(client)
    addon.client_disconnected(client)
    assert client.error is None and _refusals(state) == 0


def test_it_runs_first_in_the_gateway_chain() -> None:
    import inspect

    from egressproxy.runtime import gateway_addons

    source = inspect.getsource(gateway_addons.GatewayAddons.__init__)
    assert source.index("AbandonedClients(state)") < source.index("self.client_limits,")
