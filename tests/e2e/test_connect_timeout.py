"""An upstream that never answers the SYN fails within `connectTimeout`, not after the kernel's retries.

The blackhole is a loopback listener whose accept queue is full: Linux then drops further SYNs, exactly what a
firewalled or vanished destination looks like to the gateway.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

pytestmark = pytest.mark.e2e

GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: allow-all
  connectTimeout: 1s
  listeners:
  - {name: http, protocol: HTTP}
  upstreamTLS:
    hostAliases:
    - {ip: 127.0.0.1, hostnames: [blackhole.example.test]}
"""


@pytest.fixture
def blackhole() -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    held = []
    for _ in range(8):  # fill the accept queue until a connect stalls
        client = socket.socket()
        client.settimeout(0.5)
        try:
            client.connect(("127.0.0.1", port))
        except TimeoutError:
            client.close()
            break
        held.append(client)
    else:
        pytest.skip("could not fill a loopback accept queue here")
    yield port
    for client in held:
        client.close()
    listener.close()


def test_a_blackholed_upstream_is_a_504_after_connect_timeout(gateway, blackhole) -> None:
    gw = gateway(GATEWAY)
    started = time.monotonic()
    r = httpx.get(f"http://blackhole.example.test:{blackhole}/", proxy=gw.proxy_url, timeout=20)
    elapsed = time.monotonic() - started
    assert r.status_code == 504
    assert r.headers["x-egress-error"] == "upstream-timeout"
    assert "did not complete within 1s" in r.json()["error"]
    assert 0.9 < elapsed < 5
    # the gateway keeps serving, and counts it once
    assert 'egress_upstream_errors_total{reason="upstream-timeout"} 1.0' in gw.metrics()
