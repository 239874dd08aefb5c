"""addons/readiness.py: ready once every proxy listener is bound; a listener that failed shuts the gateway down.

mitmproxy's Proxyserver is stood in for by an addon of the same name holding server instances in the states the
hook reads (running with addresses, or failed with its exception).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons

from addons.readiness import Readiness
from tests.support.addon_state import compile_snapshot, state_for

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  listeners:
  - {name: http, protocol: HTTP}
"""


@dataclass
class Server:
    spec: str
    listen_addrs: tuple[tuple[str, int], ...] = ()
    last_exception: Exception | None = None

    @property
    def mode(self) -> ProxyMode:
        return ProxyMode.parse(self.spec)

    @property
    def is_running(self) -> bool:
        return self.last_exception is None


@dataclass
class Proxyserver:  # found by name, as mitmproxy's own: ctx.master.addons.get("proxyserver")
    servers: list[Server] = field(default_factory=list)


def _running(readiness: Readiness, *servers: Server) -> list[str]:
    shutdowns: list[str] = []
    with taddons.context(Proxyserver(list(servers)), readiness) as tctx:
        tctx.master.shutdown = lambda: shutdowns.append("shutdown")  # type: ignore[method-assign]
        readiness.running()
    return shutdowns


@pytest.fixture
def readiness(tmp_path: Path) -> Readiness:
    return Readiness(state_for(compile_snapshot(CONFIG), tmp_path))


def test_every_listener_bound_makes_the_gateway_ready_and_names_each_address(readiness, caplog) -> None:
    caplog.set_level(logging.INFO, logger="egressproxy")
    shutdowns = _running(readiness, Server("regular@127.0.0.1:8080", (("127.0.0.1", 8080),)),
                         Server("transparent@15001", (("0.0.0.0", 15001),)))
    assert readiness.state.ready and not readiness.failed and shutdowns == []
    assert "regular listening on 127.0.0.1:8080" in caplog.text
    assert "transparent listening on 0.0.0.0:15001" in caplog.text


def test_a_listener_that_failed_to_bind_is_named_and_shuts_the_gateway_down(readiness, caplog) -> None:
    caplog.set_level(logging.INFO, logger="egressproxy")
    failed = Server("transparent@127.0.0.1:15001", last_exception=OSError(98, "Address already in use"))
    shutdowns = _running(readiness, Server("regular@127.0.0.1:8080", (("127.0.0.1", 8080),)), failed)
    assert not readiness.state.ready and shutdowns == ["shutdown"]
    assert readiness.failed == ["transparent@127.0.0.1:15001: [Errno 98] Address already in use"]
    assert "could not bind transparent@127.0.0.1:15001" in caplog.text


def test_no_listener_at_all_is_not_ready(readiness) -> None:
    assert _running(readiness) == []
    assert not readiness.state.ready


def test_without_a_configuration_bound_listeners_are_not_enough(tmp_path: Path) -> None:
    readiness = Readiness(state_for(None, tmp_path))
    _running(readiness, Server("regular@127.0.0.1:8080", (("127.0.0.1", 8080),)))
    assert readiness.state.listeners_bound and not readiness.state.ready
