"""A request's finishing runs after its response is written, and none of it is lost (issue 16).

mitmproxy fires the `response` hook before it writes the response; the gateway used to finish the request's record
there (the record built and redacted, metrics, access log, capture store, tracing), so the client waited for all
of it. Now the finishing is deferred to the loop's next turn (egressproxy/deferred_work.py).

Shown through the real process: with a sink that blocks the event loop until the test lets it go
(tests/support/slow_sink_gateway.py), the client already has its whole response while the finishing is stuck; the
access-log line written afterwards still says when the response was complete. And a SIGTERM right after a burst of
requests still leaves every access-log line, every capture and the metrics total.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.e2e

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: deny-all
  listeners:
  - name: http
    protocol: HTTP
  upstreamTLS:
    hostAliases:
    - ip: 127.0.0.1
      hostnames: [api.example.test]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api}}
spec:
  parentRefs: [{{name: eg, sectionName: http}}]
  hostnames: [api.example.test]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: LoggingPolicy
metadata: {{name: everywhere}}
spec:
  targetRefs: [{{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}}]
  captureRequest: true
  captureResponse: true
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: HTTPListenerPolicy
metadata: {{name: access-log}}
spec:
  targetRefs: [{{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}}]
  accessLog:
  - fileSink: {{path: {access_log}}}
"""


class SlowSinkGateway(GatewayProcess):
    """`egressproxy run` with tests/support/slow_sink_gateway.py's gated sink after the gateway's own."""

    def command(self) -> list[str]:
        cmd = super().command()
        assert cmd[1:4] == ["-m", "egressproxy", "run"]
        return [cmd[0], "-m", "tests.support.slow_sink_gateway", *cmd[3:]]


def _config(tmp_path: Path, access_log: Path) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "gateway.yaml").write_text(CONFIG.format(access_log=access_log))
    return folder


def _wait(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.02)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _requests_total(gw: GatewayProcess) -> float:
    return sum(float(v) for v in re.findall(r"^egress_requests_total\{[^}]*\} ([0-9.e+]+)$", gw.metrics(), re.M))


def _captures(data_dir: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "egressproxy", "captures", "--data-dir", str(data_dir), "--json", "--limit", "1000"],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    return [r for r in records if r.get("kind") == "request"]


@pytest.mark.parametrize(
    ("host", "path", "status"),
    [
        # A chunked upstream response: its last chunk (`0\r\n\r\n`) is written after the `response` hook.
        ("api.example.test", "/sse?events=1&interval=0", 200),
        # The gateway's own answer (no route: 403): no byte of it is written before the `response` hook.
        ("unrouted.example.test", "/denied", 403),
    ],
)
def test_the_client_has_its_response_while_the_finishing_is_stuck(
    tmp_path: Path, plain_origin, host: str, path: str, status: int
) -> None:
    """Before the change the hook ran the sinks, so the client got no (complete) answer until the gate opened:
    a ReadTimeout here. (A Content-Length response from upstream is streamed: its bytes are all with the client
    before the `response` hook fires, so it shows nothing either way.)"""
    origin = plain_origin()
    access_log, gate, entered = tmp_path / "access.log", tmp_path / "gate", tmp_path / "entered"
    env = {"SLOW_SINK_GATE": str(gate), "SLOW_SINK_ENTERED": str(entered), "SLOW_SINK_LIMIT": "20"}
    with SlowSinkGateway(_config(tmp_path, access_log), tmp_path / "data", env=env) as gw:
        url = f"http://{host}:{origin.port}{path}"
        with httpx.Client(proxy=gw.proxy_url, timeout=5) as client:
            sent = time.monotonic()
            response = client.get(url)
            round_trip = time.monotonic() - sent
        assert response.status_code == status and response.content, gw.logs()

        _wait(lambda: entered.exists() and path in entered.read_text(), "the finishing to reach the gated sink")
        assert _lines(access_log) == []  # the access log comes after the gated sink: nothing written yet
        _wait(lambda: time.monotonic() - sent > round_trip + 0.5, "the finishing to stay stuck half a second")
        gate.touch()

        _wait(lambda: len(_lines(access_log)) == 1, "the access-log line once the finishing goes on")
        [line] = _lines(access_log)
        assert (line["path"], line["response_code"]) == (path, status)
        # The duration is until the response was complete, not until the finishing ran half a second later.
        assert int(line["duration"]) <= round_trip * 1000 + 1, (line, round_trip)
        _wait(lambda: _requests_total(gw) == 1, "the request in the metrics")


def test_sigterm_right_after_a_burst_loses_no_finished_record(tmp_path: Path, plain_origin) -> None:
    origin = plain_origin()
    access_log = tmp_path / "access.log"
    gw = GatewayProcess(_config(tmp_path, access_log), tmp_path / "data").start()
    try:
        count = 40
        with httpx.Client(proxy=gw.proxy_url, timeout=10) as client:
            statuses = [client.get(f"http://api.example.test:{origin.port}/burst-{i}").status_code for i in range(count)]
            assert statuses == [200] * count
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)  # at once: the last finishings may still be queued
        assert gw.proc.wait(timeout=15) == 0, gw.logs()
    finally:
        gw.stop()

    paths = sorted(line["path"] for line in _lines(access_log))
    assert paths == sorted(f"/burst-{i}" for i in range(count)), gw.logs()
    captured = {r["url"].rsplit("/", 1)[-1] for r in _captures(gw.data_dir)}
    assert captured == {f"burst-{i}" for i in range(count)}


def test_the_metrics_count_every_request_of_a_burst(tmp_path: Path, plain_origin) -> None:
    origin = plain_origin()
    with GatewayProcess(_config(tmp_path, tmp_path / "access.log"), tmp_path / "data") as gw:
        with httpx.Client(proxy=gw.proxy_url, timeout=10) as client:
            for i in range(25):
                assert client.get(f"http://api.example.test:{origin.port}/m-{i}").status_code == 200
        _wait(lambda: _requests_total(gw) == 25, "25 requests in egress_requests_total")
