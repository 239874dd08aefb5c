"""`--workers N`: several processes share the proxy port (SO_REUSEPORT); metrics are summed over them."""

from __future__ import annotations

import re
import time

import httpx
import pytest

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


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def test_two_workers_share_the_port_and_their_metrics_add_up(gateway, plain_origin) -> None:
    origin = plain_origin()
    gw = gateway(GATEWAY, extra_args=["--workers", "2"])
    assert gw.proc is not None
    deadline = time.monotonic() + 20
    while "worker 1" not in gw.logs() or gw.logs().count("regular listening") < 2:
        assert time.monotonic() < deadline, gw.logs()
        time.sleep(0.1)
    children = _children(gw.proc.pid)
    assert len(children) == 1  # worker 1; worker 0 is the process we started
    for i in range(60):  # a new connection each time: the kernel spreads them over both workers
        r = httpx.get(f"http://api.example.test:{origin.port}/n{i}", proxy=gw.proxy_url, timeout=10)
        assert r.status_code == 200
    per_worker = dict(re.findall(r'egress_worker_requests_total\{worker="(\d)"\} (\d+)\.0', gw.metrics()))
    assert set(per_worker) == {"0", "1"}, per_worker
    assert sum(int(v) for v in per_worker.values()) == 60
    assert re.search(r'egress_requests_total\{[^}]*route="default/api"[^}]*\} 60\.0', gw.metrics())
    gw.stop()
    for child in children:  # worker 0 took its worker down with it
        with pytest.raises(FileNotFoundError):
            open(f"/proc/{child}/status").read()
