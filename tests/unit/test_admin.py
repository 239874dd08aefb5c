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
