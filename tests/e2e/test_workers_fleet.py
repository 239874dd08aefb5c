"""`--workers N`: worker 0's /ready, POST /reload and /metrics answer for every worker (docs/workers.md)."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.e2e

GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: http, protocol: HTTP}
  upstreamTLS:
    hostAliases:
    - {ip: 127.0.0.1, hostnames: [api.example.test]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: http}]
  hostnames: [api.example.test]
"""

SECOND_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other}
spec:
  parentRefs: [{name: eg, sectionName: http}]
  hostnames: [other.example.test]
"""


def _ready(gw: GatewayProcess) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{gw.ready_port}/ready", timeout=5)


def _until(what: str, check: Callable[[], Any], gw: GatewayProcess, timeout: float = 30) -> Any:
    """Poll `check` until it returns something truthy (the condition's own value), or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not seen within {timeout}s:\n{gw.logs()}"
        time.sleep(0.02)


def _counter_total(metrics: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", metrics, re.M))


def test_ready_names_every_worker_and_a_dead_one_until_its_restart_is_bound(gateway, plain_origin) -> None:
    origin = plain_origin()
    gw = gateway(GATEWAY, extra_args=["--workers", "2"])  # returns once /ready is 200: both workers serve
    body = _ready(gw).json()
    assert body["ready"] is True and set(body["workers"]) == {"0", "1"}, body
    assert body["workers"]["0"]["pid"] == gw.proc.pid
    first = body["workers"]["1"]["pid"]
    assert body["workers"]["1"]["ready"] is True and first != gw.proc.pid

    for i in range(40):  # a new connection each time: the kernel spreads them over both workers
        r = httpx.get(f"http://api.example.test:{origin.port}/n{i}", proxy=gw.proxy_url, timeout=10)
        assert r.status_code == 200
    before = gw.metrics()
    per_worker = dict(re.findall(r'egress_worker_requests_total\{worker="(\d)"\} (\d+)\.0', before))
    assert set(per_worker) == {"0", "1"}, per_worker  # both workers served some
    assert _counter_total(before, "egress_requests_total") == 40
    assert _counter_total(before, "egress_request_duration_seconds_count") == 40

    os.kill(first, signal.SIGKILL)
    down = _until("/ready 503 naming worker 1", lambda: (r := _ready(gw)).status_code == 503 and r.json(), gw)
    assert down["reason"].startswith("worker 1: "), down
    assert down["workers"]["1"]["ready"] is False and down["workers"]["0"]["ready"] is True

    back = _until("/ready 200 with worker 1 restarted", lambda: (r := _ready(gw)).status_code == 200 and r.json(), gw)
    assert back["workers"]["1"]["pid"] not in (first, None), back
    assert "worker 1 exited with -9; starting it again" in gw.logs()
    after = gw.metrics()  # what the dead worker counted stays in the sum; its gauges left it
    assert _counter_total(after, "egress_requests_total") == 40
    assert re.search(r"^egress_config_last_reload_successful 1\.0$", after, re.M), after


def test_reload_reports_every_worker_and_ready_waits_for_a_worker_on_older_files(gateway) -> None:
    gw = gateway(GATEWAY, extra_args=["--workers", "2"])
    r = gw.admin("/reload", "POST")
    assert r.status_code == 200, r.text
    assert set(r.json()["workers"]) == {"0", "1"} and all(r.json()["workers"].values()), r.json()
    assert r.json()["not_running"] == []

    worker1 = _ready(gw).json()["workers"]["1"]["pid"]
    os.kill(worker1, signal.SIGSTOP)  # it cannot reload while stopped
    try:
        (gw.configs[0] / "10-other.yaml").write_text(SECOND_ROUTE)  # worker 0's file watch reloads
        stale = _until("/ready 503 for worker 1", lambda: (r := _ready(gw)).status_code == 503 and r.json(), gw)
        assert stale["reason"].startswith("worker 1: serves other configuration files than worker 0"), stale
    finally:
        os.kill(worker1, signal.SIGCONT)
    _until("/ready 200 once worker 1 reloaded", lambda: _ready(gw).status_code == 200, gw)

    before = _ready(gw).json()["workers"]

    def reloaded_by_both() -> dict[str, Any] | None:
        workers: dict[str, Any] = _ready(gw).json()["workers"]
        newer = all((w["generation"] or 0) > before[i]["generation"] for i, w in workers.items())
        return workers if newer else None

    gw.proc.send_signal(signal.SIGHUP)  # to worker 0 alone: it passes the reload on
    after = _until("SIGHUP applied by both workers", reloaded_by_both, gw)
    assert after["1"]["pid"] == worker1, after
