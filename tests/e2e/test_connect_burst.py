"""A burst of CONNECTs is answered together, not one after another (issue 16, lost keep-alive).

Go's HTTP transport keeps its pooled connections only when a burst of dials finishes before the first requests
free a connection; otherwise it hands the early tunnels to the waiting workers, abandons their own dials, and
churns for the rest of the run (hey -c 50: 0.3-0.56 accepted connections per request against mitmdump's 0.003).
Under uvloop the gateway answered 50 CONNECTs opened at once over 23-640 ms, the first long before the last;
on asyncio's loop (and under mitmdump) all within 61-142 ms. 50 connections, three bursts: light, not a load test.
Against `--event-loop uvloop` (the default before) the median first/last ratio measured 0.05-0.29; on asyncio's
loop 0.5-0.7.
"""

from __future__ import annotations

import asyncio
import ssl
import statistics
import time

import pytest

pytestmark = pytest.mark.e2e

GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - name: tls
    protocol: TLS
    tls: {mode: Passthrough}
  upstreamTLS:
    hostAliases:
    - ip: 127.0.0.1
      hostnames: [api.example.test]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: tls}]
  hostnames: [api.example.test]
"""

TUNNELS = 50


async def _answered_after(port: int, target: str, tls: ssl.SSLContext, t0: float) -> float:
    """Like Go's dial through a proxy: CONNECT, then the TLS handshake with the origin through the tunnel."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    answered = time.perf_counter() - t0
    assert head.startswith(b"HTTP/1.1 200"), head
    await writer.start_tls(tls, server_hostname=target.split(":")[0])
    writer.close()
    return answered


async def _burst(port: int, target: str, tls: ssl.SSLContext) -> list[float]:
    t0 = time.perf_counter()
    tunnels = [_answered_after(port, target, tls, t0) for _ in range(TUNNELS)]
    return sorted(await asyncio.wait_for(asyncio.gather(*tunnels), 30))


def test_a_burst_of_connects_is_answered_together(gateway, tls_origin, origin_ca):
    origin = tls_origin("api.example.test")
    tls = ssl.create_default_context(cadata=origin_ca.cert_pem.decode())
    gw = gateway(GATEWAY)
    target = f"api.example.test:{origin.port}"
    spreads = []
    for _ in range(3):
        answers = asyncio.run(_burst(gw.port, target, tls))
        spreads.append(answers[0] / answers[-1])  # 1.0: all at once; near 0: the first long before the last
        print(f"{TUNNELS} CONNECTs answered from {answers[0] * 1000:.0f} to {answers[-1] * 1000:.0f} ms")
    assert statistics.median(spreads) >= 0.4, f"first/last answer time per burst: {spreads}"
