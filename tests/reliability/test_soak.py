"""Soak: minutes of connection churn through one real gateway; fds back to baseline, RSS bounded, no errors.

The mix (one thread per kind, all at once): a new connection per plain HTTP request, keep-alive bursts, clients
that vanish mid-request (half a request body sent, or half a response read), CONNECT passthrough tunnels,
intercepted HTTPS (capture on), and SSE streams over interception. The gateway's `/proc/PID/fd` count and VmRSS
are sampled after a warm-up (the baseline), every few seconds, and after the load stops and connections drain.

`EGRESS_SOAK_SECONDS` (default 120) sets how long the load runs.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.gateway_start import start_bound
from tests.support.procstats import ProcessSample, sample, wait_for_fds
from tests.support.rawproxy import read_response

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SOAK_SECONDS = float(os.environ.get("EGRESS_SOAK_SECONDS", "120"))
WARMUP_SECONDS = 20.0  # long enough for RSS to reach its plateau (measured: within ~30 s of churn)
FD_TOLERANCE = 5  # a handful of fds may be legitimately lazy (a capture-store or log file opened late)
# RSS may grow after the warm-up by this much at most. Why this figure: RSS climbs during the first ~30 s of churn
# (what has a cap fills up: mitmproxy's cert cache of 100, metric label sets, the capture writer's queue, CPython's
# and SQLite's pools, glibc arenas for the worker threads) and then stays flat; measured +2 to +15 MiB after a
# shorter 8 s warm-up. A leak of 1 KiB per connection over the ~20,000 connections of a 2-minute run would
# pass 20 MiB, and would keep growing where the next bound looks.
RSS_GROWTH_BOUND_KIB = 24 * 1024
# And over the last two thirds of the run RSS must be flat: a leak grows steadily, a cache levels off.
RSS_LATE_GROWTH_BOUND_KIB = 8 * 1024

GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: http, protocol: HTTP}
  - name: https
    protocol: HTTPS
    tls: {mode: Terminate, caCertRef: {name: egress-ca}}
  - name: pinned
    protocol: TLS
    tls: {mode: Passthrough}
  upstreamTLS:
    additionalTrustBundleSecretRef: {name: origin-ca}
    hostAliases:
    - ip: 127.0.0.1
      hostnames: [plain.example.test, api.example.test, pinned.example.test]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: plain}
spec:
  parentRefs: [{name: eg, sectionName: http}]
  hostnames: [plain.example.test]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [api.example.test]
---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: TLSRoute
metadata: {name: pinned}
spec:
  parentRefs: [{name: eg, sectionName: pinned}]
  hostnames: [pinned.example.test]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: LoggingPolicy
metadata: {name: capture-all}
spec:
  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}]
  captureRequest: true
  captureResponse: true
"""


@dataclass
class Tally:
    """What the churn threads did: answers per kind, and every answer that was not the expected one."""

    served: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, kind: str) -> None:
        with self.lock:
            self.served[kind] += 1

    def fail(self, kind: str, what: str) -> None:
        with self.lock:
            self.failures.append(f"{kind}: {what}")


@dataclass(frozen=True)
class Setup:
    proxy: str
    proxy_host: str
    proxy_port: int
    plain_port: int
    tls_port: int
    gateway_ctx: ssl.SSLContext  # trusts the gateway's interception CA
    origin_ctx: ssl.SSLContext  # trusts the origins' CA (passthrough: the origin's own certificate)


# --- the kinds of churn ---------------------------------------------------------------------------------------


def new_connection(s: Setup, tally: Tally) -> None:
    """One plain HTTP request on a connection of its own."""
    r = httpx.get(f"http://plain.example.test:{s.plain_port}/new", proxy=s.proxy, timeout=10)
    _expect(tally, "new-connection", r.status_code == 200 and r.json()["path"] == "/new", r.status_code)


def keepalive_burst(s: Setup, tally: Tally) -> None:
    """Twenty requests on one kept-alive connection, then the client goes away."""
    with httpx.Client(proxy=s.proxy, timeout=10) as client:
        for i in range(20):
            r = client.post(f"http://plain.example.test:{s.plain_port}/ka", content=b"x" * (i * 100))
            _expect(tally, "keepalive", r.status_code == 200 and len(r.json()["body"]) == i * 100, r.status_code)


def vanish_mid_body(s: Setup, _tally: Tally) -> None:
    """Injected: a request head promising 64 KiB, half of it sent, then the client closes."""
    with socket.create_connection((s.proxy_host, s.proxy_port), timeout=10) as sock:
        sock.sendall(
            f"POST http://plain.example.test:{s.plain_port}/vanish HTTP/1.1\r\nHost: plain.example.test:{s.plain_port}\r\n"
            f"Content-Length: 65536\r\n\r\n".encode()
            + b"y" * 32768
        )


def vanish_mid_response(s: Setup, _tally: Tally) -> None:
    """Injected: a request whose 256 KiB answer the client stops reading after its first bytes."""
    body = b"z" * 262144
    with socket.create_connection((s.proxy_host, s.proxy_port), timeout=10) as sock:
        sock.sendall(
            f"POST http://plain.example.test:{s.plain_port}/big HTTP/1.1\r\nHost: plain.example.test:{s.plain_port}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        sock.recv(4096)


def passthrough_tunnel(s: Setup, tally: Tally) -> None:
    """CONNECT to the pinned host: the gateway passes TLS through; the origin's own certificate answers."""
    with socket.create_connection((s.proxy_host, s.proxy_port), timeout=10) as raw:
        authority = f"pinned.example.test:{s.tls_port}"
        raw.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        head = read_response(raw, head_only=True)
        if head.status != 200:
            tally.fail("passthrough", f"CONNECT answered {head.status}")
            return
        with s.origin_ctx.wrap_socket(raw, server_hostname="pinned.example.test") as tls:
            tls.sendall(f"GET /tunnel HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n".encode())
            r = read_response(tls)
    _expect(tally, "passthrough", r.status == 200 and b'"/tunnel"' in r.body, r.status)


def intercepted(s: Setup, tally: Tally) -> None:
    """Five intercepted HTTPS requests on one tunnel (the gateway mints, decrypts and captures)."""
    with httpx.Client(proxy=s.proxy, verify=s.gateway_ctx, timeout=10) as client:
        for _ in range(5):
            r = client.get(f"https://api.example.test:{s.tls_port}/mitm")
            _expect(tally, "intercepted", r.status_code == 200 and r.json()["path"] == "/mitm", r.status_code)


def sse_stream(s: Setup, tally: Tally) -> None:
    """An intercepted SSE stream of five events, read to its end."""
    url = f"https://api.example.test:{s.tls_port}/sse?events=5&interval=0.1"
    with httpx.Client(proxy=s.proxy, verify=s.gateway_ctx, timeout=10) as client:
        with client.stream("GET", url) as r:
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
    _expect(tally, "sse", r.status_code == 200 and len(events) == 5, (r.status_code, len(events)))


KINDS: dict[str, Callable[[Setup, Tally], None]] = {
    "new-connection": new_connection,
    "keepalive": keepalive_burst,
    "vanish-mid-body": vanish_mid_body,
    "vanish-mid-response": vanish_mid_response,
    "passthrough": passthrough_tunnel,
    "intercepted": intercepted,
    "sse": sse_stream,
}
INJECTED = {"vanish-mid-body", "vanish-mid-response"}  # their requests are meant to fail: no answer is checked


def _expect(tally: Tally, kind: str, good: bool, got: object) -> None:
    if good:
        tally.ok(kind)
    else:
        tally.fail(kind, f"unexpected answer {got!r}")


def churn(s: Setup, tally: Tally, kind: str, until: float) -> None:
    """Run one kind over and over until `until`; a client-side exception is a failure unless the kind injects it."""
    run = KINDS[kind]
    while time.monotonic() < until:
        try:
            run(s, tally)
            if kind in INJECTED:
                tally.ok(kind)
        except Exception as e:  # noqa: BLE001 - every exception is a finding, reported with its kind
            if kind in INJECTED:
                tally.ok(kind)
            else:
                tally.fail(kind, f"{type(e).__name__}: {e}")


def run_mix(s: Setup, seconds: float, pid: int, samples: list[ProcessSample]) -> Tally:
    """Every kind in its own thread for `seconds`, sampling the gateway every 5 s meanwhile."""
    tally = Tally()
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=churn, args=(s, tally, kind, until), daemon=True) for kind in KINDS]
    for t in threads:
        t.start()
    while alive := [t for t in threads if t.is_alive()]:
        alive[0].join(timeout=5)
        samples.append(sample(pid))
    return tally


# --- the test -------------------------------------------------------------------------------------------------


@pytest.fixture
def soak_setup(gateway, gateway_ca, trust_secret, tls_origin, plain_origin, origin_ca, tmp_path: Path):
    plain = plain_origin()
    tls = tls_origin("api.example.test", "pinned.example.test")
    gw = start_bound(gateway, GATEWAY, gateway_ca[1], trust_secret)
    origin_cafile = tmp_path / "origin-ca.crt"
    origin_cafile.write_bytes(origin_ca.cert_pem)
    setup = Setup(
        proxy=gw.proxy_url,
        proxy_host=gw.host,
        proxy_port=gw.port,
        plain_port=plain.port,
        tls_port=tls.port,
        gateway_ctx=ssl.create_default_context(cafile=str(gateway_ca[0])),
        origin_ctx=ssl.create_default_context(cafile=str(origin_cafile)),
    )
    return gw, setup


def unexpected_log_lines(logs: str) -> list[str]:
    """Lines that betray a bug rather than an injected fault: tracebacks, destroyed tasks, errors."""
    bad = re.compile(r"Traceback|Task was destroyed|Task exception was never retrieved|level=error|level=critical", re.I)
    return [line for line in logs.splitlines() if bad.search(line)]


@pytest.mark.timeout(SOAK_SECONDS + WARMUP_SECONDS + 180)
def test_churn_leaves_fds_at_baseline_and_rss_bounded(soak_setup) -> None:
    gw, s = soak_setup
    pid = gw.proc.pid
    samples: list[ProcessSample] = []

    warmup = run_mix(s, WARMUP_SECONDS, pid, samples)
    assert not warmup.failures, warmup.failures[:10]
    assert _wait_open_connections_zero(gw, timeout=10), "the warm-up's connections did not close"
    baseline = sample(pid)

    started = time.monotonic()
    samples.clear()
    tally = run_mix(s, SOAK_SECONDS, pid, samples)
    duration = time.monotonic() - started
    peak = max(samples, key=lambda x: x.fds)
    end = wait_for_fds(pid, at_most=baseline.fds + FD_TOLERANCE, timeout=30)
    drained = _wait_open_connections_zero(gw, timeout=30)

    print(f"\nsoak: {duration:.0f}s of load; requests answered per kind: {dict(sorted(tally.served.items()))}")
    print(f"soak: baseline {baseline}, peak fds {peak.fds}, end {end} (after {end.at - started - duration:.1f}s of drain)")
    print(f"soak: RSS growth {(end.rss_kib - baseline.rss_kib) / 1024:+.1f} MiB (bound {RSS_GROWTH_BOUND_KIB // 1024} MiB),"
          f" over the last two thirds {(end.rss_kib - samples[len(samples) // 3].rss_kib) / 1024:+.1f} MiB"
          f" (bound {RSS_LATE_GROWTH_BOUND_KIB // 1024} MiB);"
          f" samples (fds, MiB): {[(x.fds, round(x.rss_kib / 1024)) for x in samples]}")

    assert not tally.failures, f"{len(tally.failures)} unexpected answers, first: {tally.failures[:10]}"
    assert all(tally.served[kind] > 0 for kind in KINDS), tally.served
    assert drained, "the gateway still counts open connections after the load stopped"
    assert end.fds <= baseline.fds + FD_TOLERANCE, f"fds did not come back: baseline {baseline.fds}, end {end.fds}"
    assert end.rss_kib - baseline.rss_kib <= RSS_GROWTH_BOUND_KIB, f"RSS grew from {baseline} to {end}"
    third = samples[len(samples) // 3]
    assert end.rss_kib - third.rss_kib <= RSS_LATE_GROWTH_BOUND_KIB, f"RSS still growing: {third} a third in, {end} at the end"
    bad = unexpected_log_lines(gw.logs())
    assert not bad, "\n".join(bad[:20])


def _open_connections(gw) -> int:
    return int(gw.admin("/stats").json()["open_connections"])


def _wait_open_connections_zero(gw, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _open_connections(gw) != 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True
