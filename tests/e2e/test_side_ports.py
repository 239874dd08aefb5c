"""`egressproxy run` with a side port already taken: exit 1 with one line naming the port, address and flag."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.e2e

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  listeners:
  - {name: http, protocol: HTTP}
"""


@pytest.mark.parametrize(("attr", "name", "flag"), [("admin_port", "admin", "--admin-addr"), ("metrics_port", "metrics", "--metrics-addr")])
def test_a_taken_side_port_stops_start_up_and_is_named(tmp_path: Path, attr: str, name: str, flag: str) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(CONFIG)
    gateway = GatewayProcess(config, tmp_path / "data")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", getattr(gateway, attr)))
        holder.listen()
        gateway.start(wait=False)
        assert gateway.proc is not None
        code = gateway.proc.wait(timeout=30)
    logs = gateway.logs()
    assert code == 1, logs
    assert f"cannot bind the {name} port 127.0.0.1:{getattr(gateway, attr)} ({flag}): Address already in use" in logs, logs
