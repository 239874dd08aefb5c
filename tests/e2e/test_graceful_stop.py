"""SIGTERM drains: new connections are refused, in-flight requests finish, idle ones close, the exit is quiet.

Before runtime/drain.py, SIGTERM set mitmproxy's `should_exit` at once: in-flight requests were cut (the client
saw the connection close) and the log showed "Task was destroyed but it is pending" and callback exceptions.
"""

from __future__ import annotations

import signal
import socket
import threading
import time

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
  - name: http
    protocol: HTTP
  upstreamTLS:
    hostAliases:
    - ip: 127.0.0.1
      hostnames: [api.example.test]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: http}]
  hostnames: [api.example.test]
"""

# What an unclean stop printed (asyncio's and mitmproxy's complaints about tasks and callbacks).
UNCLEAN = ("Task was destroyed", "Exception in callback", "Traceback", "was never awaited", "connection handler has crashed")


def _wait(condition, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    return False


def _in_flight(gw: GatewayProcess, url: str, count: int) -> tuple[list[threading.Thread], list[object]]:
    results: list[object] = []

    def one() -> None:
        try:
            with httpx.Client(proxy=gw.proxy_url, timeout=30) as client:
                results.append(client.get(url).status_code)
        except httpx.HTTPError as e:
            results.append(e)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    return threads, results


def test_sigterm_lets_in_flight_requests_finish_and_exits_quietly(gateway, plain_origin):
    origin = plain_origin()
    gw = gateway(GATEWAY)
    idle = httpx.Client(proxy=gw.proxy_url, timeout=10)  # a keep-alive connection with no request in flight
    assert idle.get(f"http://api.example.test:{origin.port}/warm").status_code == 200
    threads, results = _in_flight(gw, f"http://api.example.test:{origin.port}/slow?seconds=1.5", 4)
    _wait(lambda: sum(p.startswith("/slow") for _, p, _ in origin.requests) == 4, "4 requests at the origin")

    assert gw.proc is not None
    stopped_at = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    _wait(lambda: _refused(gw.port), "the proxy port to refuse new connections", timeout=1.0)
    ready = httpx.get(f"http://127.0.0.1:{gw.ready_port}/ready", timeout=2)
    assert (ready.status_code, ready.json()["reason"]) == (503, "stopping")
    assert all(t.is_alive() for t in threads), "the in-flight requests were answered before the port closed"
    code = gw.proc.wait(timeout=15)
    elapsed = time.monotonic() - stopped_at
    for t in threads:
        t.join(timeout=5)
    idle.close()

    logs = gw.logs()
    assert results == [200, 200, 200, 200], logs
    assert code == 0, logs
    assert elapsed < 4.5, f"took {elapsed:.1f}s: the idle keep-alive connection held the drain to its deadline\n{logs}"
    assert [line for line in logs.splitlines() if any(u in line for u in UNCLEAN)] == [], logs
    assert "drained" in logs


def test_a_request_longer_than_the_drain_is_cut_at_the_deadline_and_the_exit_is_still_quiet(gateway, plain_origin):
    origin = plain_origin()
    gw = gateway(GATEWAY, extra_args=["--drain-seconds", "1s"])
    threads, results = _in_flight(gw, f"http://api.example.test:{origin.port}/slow?seconds=20", 1)
    _wait(lambda: any(p.startswith("/slow") for _, p, _ in origin.requests), "the request at the origin")

    assert gw.proc is not None
    stopped_at = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    code = gw.proc.wait(timeout=15)
    elapsed = time.monotonic() - stopped_at
    threads[0].join(timeout=5)

    logs = gw.logs()
    assert code == 0, logs
    assert 1.0 <= elapsed < 5.0, f"{elapsed:.1f}s\n{logs}"
    assert len(results) == 1 and results[0] != 200, results  # cut, not answered
    assert "closing 1 connection(s) still busy" in logs
    assert [line for line in logs.splitlines() if any(u in line for u in UNCLEAN)] == [], logs
