"""Side ports (egressproxy/runtime/admin.py): a port that cannot be bound is named, with its address and flag."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest

from egressproxy.runtime.admin import SidePortUnavailable, start_side_servers
from egressproxy.runtime.state import GatewayState


async def _no_reload() -> None:
    return None


def _taken() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def _free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("which", "name", "flag"),
    [(0, "admin", "--admin-addr"), (1, "readiness", "--ready-addr"), (2, "metrics", "--metrics-addr")],
)
def test_a_taken_side_port_is_named_with_its_address_and_flag(tmp_path: Path, which: int, name: str, flag: str) -> None:
    holder, port = _taken()
    addrs = [("127.0.0.1", _free()), ("127.0.0.1", _free()), ("127.0.0.1", _free())]
    addrs[which] = ("127.0.0.1", port)

    async def start() -> None:
        start_side_servers(GatewayState(tmp_path), _no_reload, *addrs)

    try:
        with pytest.raises(SidePortUnavailable) as raised:
            asyncio.run(start())
    finally:
        holder.close()
    assert str(raised.value).startswith(f"cannot bind the {name} port 127.0.0.1:{port} ({flag}): ")
    # The ports bound before the failing one were released: nothing half-started stays bound.
    for addr in addrs[:which]:
        with socket.socket() as probe:
            probe.bind(addr)


def test_an_address_that_is_not_local_is_named(tmp_path: Path) -> None:
    async def start() -> None:
        start_side_servers(GatewayState(tmp_path), _no_reload, ("192.0.2.1", _free()), ("127.0.0.1", _free()), ("127.0.0.1", _free()))

    with pytest.raises(SidePortUnavailable, match=r"cannot bind the admin port 192\.0\.2\.1:\d+ \(--admin-addr\): "):
        asyncio.run(start())


def test_bound_side_ports_answer(tmp_path: Path) -> None:
    addrs = [("127.0.0.1", _free()) for _ in range(3)]

    async def serve() -> int:
        servers = start_side_servers(GatewayState(tmp_path), _no_reload, *addrs)
        try:
            async with httpx.AsyncClient() as client:
                r = await client.get(f"http://127.0.0.1:{addrs[1][1]}/ready")
            return r.status_code
        finally:
            for server in servers:
                server.stop()

    assert asyncio.run(serve()) == 503  # no configuration loaded yet


def _serve_and_call(tmp_path: Path, reload, method: str, path: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    """Start the side ports on the running loop, make one call to the admin port, stop them."""
    admin = _free()

    async def call() -> httpx.Response:
        servers = start_side_servers(GatewayState(tmp_path), reload, ("127.0.0.1", admin), ("127.0.0.1", _free()), ("127.0.0.1", _free()))
        try:
            async with httpx.AsyncClient() as client:
                return await client.request(method, f"http://127.0.0.1:{admin}{path}")
        finally:
            for server in servers:
                server.stop()

    return asyncio.run(call())


def test_ready_answering_503_during_start_up_is_logged_as_info_not_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A probe asking before the config is loaded gets 503: an answer, not a server error."""
    caplog.set_level("DEBUG", logger="tornado.access")
    r = _serve_and_call(tmp_path, _no_reload, "GET", "/ready")
    assert r.status_code == 503
    lines = [rec for rec in caplog.records if rec.name == "tornado.access"]
    assert [(rec.levelname, rec.getMessage().split(" ")[0]) for rec in lines] == [("INFO", "503")]


def test_reload_with_a_worker_that_has_not_applied_it_is_504_naming_the_worker(tmp_path: Path) -> None:
    from egressproxy.runtime.worker_reports import FleetReload

    class Built:
        ok = True
        problems = ()

    async def reload() -> FleetReload:
        return FleetReload(Built(), {1: 4, 2: None}, 10.0)

    r = _serve_and_call(tmp_path, reload, "POST", "/reload")
    assert r.status_code == 504
    assert r.json()["workers"] == {"1": 4, "2": None}
    assert r.json()["problems"] == [
        "worker 2 has not applied this configuration within 10s; it still serves the one before"
    ]


def _ready_with_fleet(tmp_path: Path, workers: list[object]) -> httpx.Response:
    """GET /ready on the readiness port of a ready worker 0 whose other workers are `workers`."""
    from types import SimpleNamespace

    ready = _free()
    state = GatewayState(tmp_path)
    state.snapshot = SimpleNamespace(generation=3)  # type: ignore[assignment]
    state.listeners_bound = True

    async def fleet() -> list[object]:
        return workers

    async def call() -> httpx.Response:
        servers = start_side_servers(
            state, _no_reload, ("127.0.0.1", _free()), ("127.0.0.1", ready), ("127.0.0.1", _free()), None, fleet  # type: ignore[arg-type]
        )
        try:
            async with httpx.AsyncClient() as client:
                return await client.get(f"http://127.0.0.1:{ready}/ready")
        finally:
            for server in servers:
                server.stop()

    return asyncio.run(call())


def test_ready_with_workers_is_503_naming_the_worker_that_is_not(tmp_path: Path) -> None:
    import os

    from egressproxy.runtime.fleet_readiness import WorkerReadiness

    r = _ready_with_fleet(tmp_path, [WorkerReadiness(1, True, "", 50, 3), WorkerReadiness(2, False, "stopping (draining)", 60, 3)])
    assert r.status_code == 503
    assert r.json() == {
        "ready": False,
        "generation": 3,
        "reason": "worker 2: stopping (draining)",
        "workers": {
            "0": {"ready": True, "pid": os.getpid(), "generation": 3},
            "1": {"ready": True, "pid": 50, "generation": 3},
            "2": {"ready": False, "pid": 60, "generation": 3, "reason": "stopping (draining)"},
        },
    }
    assert _ready_with_fleet(tmp_path, [WorkerReadiness(1, True, "", 50, 3)]).status_code == 200
