"""HTTP/2 abuse on an intercepted connection: rapid reset, stream floods, PING/SETTINGS/CONTINUATION floods.

Each attack is a real h2 client (tests/support/h2client.py) through the real gateway process (CONNECT, TLS
interception with ALPN h2) to a real TLS origin on loopback, bounded in frames and seconds. Figures print with
`-s`: `.venv/bin/python -m pytest tests/reliability/test_http2_abuse.py -q -s`.
"""

from __future__ import annotations

import re
import ssl
import statistics
import threading
import time
from pathlib import Path

import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import httpx
import pytest

from tests.support.gated_forwarder import GatedForwarder
from tests.support.h2client import H2Client

GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - name: https
    protocol: HTTPS
    tls: {mode: Terminate, caCertRef: {name: egress-ca}}
  upstreamTLS:
    additionalTrustBundleSecretRef: {name: origin-ca}
    hostAliases:
    - ip: 127.0.0.1
      hostnames: [api.example.test]
"""

ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [api.example.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
"""

ENHANCE_YOUR_CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
SECRET = "sk-h2-abuse-4f1c9e2b7d"  # sent by every attacker: must appear in no log line and no metric


@pytest.fixture
def setup(gateway, gateway_ca, trust_secret, tls_origin):
    origin = tls_origin("api.example.test")
    gw = gateway(GATEWAY, ROUTE, gateway_ca[1], trust_secret)
    authority = f"api.example.test:{origin.port}"

    def client() -> H2Client:
        return H2Client((gw.host, gw.port), authority, gateway_ca[0])

    client.authority = authority  # type: ignore[attr-defined]
    return gw, origin, client


def _refusals(gw, reason: str) -> float:
    match = re.search(rf'^egress_client_refusals_total\{{reason="{reason}"\}} (\S+)$', gw.metrics(), re.M)
    return float(match.group(1)) if match else 0.0


def _paths(origin, prefix: str) -> list[str]:
    return [path for _, path, _ in origin.requests if path.startswith(prefix)]


def _rss_kib(gw) -> int:
    status = Path(f"/proc/{gw.proc.pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]


def _timed_get(client: httpx.Client, url: str) -> float:
    start = time.monotonic()
    r = client.get(url)
    assert r.status_code == 200, r.text
    return time.monotonic() - start


class _Attacker(threading.Thread):
    """Rapid reset, again and again: each connection blasts HEADERS+RST pairs until the gateway cuts it, then
    the attacker reconnects; bounded by `max_connections` and `seconds`."""

    def __init__(self, connect, *, batch: int = 100, per_connection: int = 5000, max_connections: int = 30, seconds: float = 8.0) -> None:
        super().__init__(daemon=True)
        self.connect, self.batch, self.per_connection = connect, batch, per_connection
        self.max_connections, self.seconds = max_connections, seconds
        self.stop = threading.Event()
        self.streams_sent = 0
        self.connections = 0
        # per connection: (streams sent, streams the gateway took before its GOAWAY, the GOAWAY's error code)
        self.cut: list[tuple[int, int | None, int | None]] = []
        self.errors: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while not self.stop.is_set() and self.connections < self.max_connections and time.monotonic() < deadline:
            try:
                self._one_connection(deadline)
            except (OSError, AssertionError, h2.exceptions.ProtocolError) as e:
                self.errors.append(repr(e))

    def _one_connection(self, deadline: float) -> None:
        c = self.connect()
        self.connections += 1
        sent = 0
        try:
            while sent < self.per_connection and time.monotonic() < deadline and not c.closed and c.goaway is None:
                try:
                    sent += c.rapid_reset("/attack", self.batch, extra=[("authorization", f"Bearer {SECRET}")])
                except (OSError, h2.exceptions.ProtocolError):
                    break
                c.events(timeout=0.001)
            c.wait_closed(timeout=2)
        finally:
            self.streams_sent += sent
            taken = (c.goaway.last_stream_id + 1) // 2 if c.goaway else None
            self.cut.append((sent, taken, c.goaway.error_code if c.goaway else None))
            c.close()


def test_rapid_reset_is_cut_with_enhance_your_calm_and_never_reaches_the_origin(setup, gateway_ca):
    gw, origin, connect = setup
    base = f"https://{connect.authority}"
    verify = ssl.create_default_context(cafile=str(gateway_ca[0]))
    with httpx.Client(proxy=gw.proxy_url, verify=verify, timeout=10) as other:
        idle = [_timed_get(other, f"{base}/other") for _ in range(5)]
        attacker = _Attacker(connect)
        attacker.start()
        under_attack: list[float] = []
        while attacker.is_alive() and len(under_attack) < 20:
            under_attack.append(_timed_get(other, f"{base}/other"))
        attacker.stop.set()
        attacker.join(timeout=20)
    assert not attacker.is_alive()
    forwarded = len(_paths(origin, "/attack"))
    refusals = _refusals(gw, "h2-rapid-reset")
    print(
        f"\nrapid reset: {attacker.streams_sent} streams opened+reset on {attacker.connections} connections; "
        f"forwarded to the origin: {forwarded}; per connection (sent, taken before GOAWAY, code): {attacker.cut[:3]}...; "
        f"egress_client_refusals_total{{reason=h2-rapid-reset}} = {refusals:g}\n"
        f"other client: idle median {statistics.median(idle) * 1000:.1f} ms, during attack median "
        f"{statistics.median(under_attack) * 1000:.1f} ms, max {max(under_attack) * 1000:.1f} ms over {len(under_attack)} requests"
    )
    assert under_attack, "the other client got no request in while the attack ran"
    assert max(under_attack) < 2.0, "another client waited seconds while the attack ran"
    assert forwarded == 0, "requests of streams the client had already reset reached the origin"
    assert not attacker.errors, attacker.errors
    assert attacker.connections >= 2 and all(code == ENHANCE_YOUR_CALM for *_, code in attacker.cut), attacker.cut
    # the budget is 200 resets per 10 s; the GOAWAY names the last stream h2 parsed, which is at most one read
    # (64 KiB, about 2,000 HEADERS+RST pairs) past the one that spent the budget
    assert all(taken is not None and taken <= 200 + 2500 for _, taken, _ in attacker.cut), "the connection was cut late"
    assert refusals == attacker.connections
    logs, metrics = gw.logs(), gw.metrics()
    assert logs.count("cut: h2-rapid-reset") == attacker.connections
    assert SECRET not in logs and SECRET not in metrics


def test_a_client_that_cancels_a_few_streams_is_not_cut(setup):
    gw, origin, connect = setup
    c = connect()
    c.rapid_reset("/cancelled", 50)
    stream = c.open_stream("/after")
    assert c.wait_for(lambda: any(isinstance(e, h2.events.StreamEnded) and e.stream_id == stream for e in c.received))
    assert c.goaway is None and not c.closed
    assert _paths(origin, "/after") == ["/after"]
    assert _refusals(gw, "h2-rapid-reset") == 0
    c.close()


def test_streams_beyond_the_advertised_limit_are_refused_and_never_reach_the_origin(setup):
    gw, origin, connect = setup
    c = connect()
    assert c.wait_for(lambda: c.server_setting(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS) is not None)
    limit = c.server_setting(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
    assert limit == 100
    c.allow_streams_beyond_the_servers_limit()
    held = [c.open_stream(f"/held/{i}", end_stream=False) for i in range(limit)]  # open: the body never ends
    extra = [c.open_stream(f"/flood/{i}", end_stream=False) for i in range(50)]
    c.flush()
    refused = lambda: {e.stream_id for e in c.of_type(h2.events.StreamReset) if e.error_code == h2.errors.ErrorCodes.REFUSED_STREAM}  # noqa: E731
    assert c.wait_for(lambda: refused() >= set(extra)), (c.goaway, c.received[-5:])
    assert refused().isdisjoint(held)
    c.conn.end_stream(held[0])
    c.flush()
    assert c.wait_for(lambda: any(isinstance(e, h2.events.StreamEnded) and e.stream_id == held[0] for e in c.received))
    assert c.goaway is None and not c.closed, "the connection itself was torn down"
    print(f"\nstream flood: limit {limit}, {len(extra)} streams over it refused with REFUSED_STREAM; origin saw {len(_paths(origin, '/flood'))} of them")
    assert _paths(origin, "/flood") == []
    assert _refusals(gw, "h2-refused-stream") == len(extra)
    assert _refusals(gw, "h2-stream-flood") == 0
    c.close()


def test_a_client_that_keeps_opening_streams_over_the_limit_is_cut(setup):
    gw, origin, connect = setup
    c = connect()
    assert c.wait_for(lambda: c.server_setting(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS) is not None)
    c.allow_streams_beyond_the_servers_limit()
    opened = 0
    while opened < 5000 and not c.closed and c.goaway is None:
        for _ in range(250):
            c.open_stream(f"/flood/{opened}", end_stream=False)
            opened += 1
        try:
            c.flush()
        except OSError:
            break
        c.events(timeout=0.001)
    assert c.wait_closed(timeout=10), f"the gateway kept the connection after {opened} streams"
    refused = len([e for e in c.of_type(h2.events.StreamReset) if e.error_code == h2.errors.ErrorCodes.REFUSED_STREAM])
    print(f"\nstream flood, persistent: {opened} streams sent, {refused} refused, cut with GOAWAY {c.goaway.error_code if c.goaway else None!r}")
    assert c.goaway is not None and c.goaway.error_code == ENHANCE_YOUR_CALM
    assert _refusals(gw, "h2-stream-flood") == 1
    assert _refusals(gw, "h2-refused-stream") == 101
    assert _paths(origin, "/flood") == []
    c.close()


@pytest.mark.parametrize(
    "flood,reason",
    [("ping", "h2-ping-flood"), ("settings", "h2-settings-flood")],
)
def test_ping_and_settings_floods_are_cut_and_memory_stays_bounded(setup, flood, reason):
    gw, origin, connect = setup
    before = _rss_kib(gw)
    c = connect()
    sent = 0
    while sent < 20000 and not c.closed and c.goaway is None:
        for _ in range(500):
            if flood == "ping":
                c.conn.ping(sent.to_bytes(8, "big"))
            else:
                c.conn.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 4096 + (sent & 1)})
            sent += 1
        try:
            c.flush()
        except OSError:
            break
        c.events(timeout=0.001)
    assert c.wait_closed(timeout=10), f"the gateway kept the connection after {sent} {flood} frames"
    after = _rss_kib(gw)
    print(f"\n{flood} flood: cut after {sent} frames sent (GOAWAY {c.goaway.error_code if c.goaway else None!r}); VmRSS {before} -> {after} KiB")
    assert c.goaway is not None and c.goaway.error_code == ENHANCE_YOUR_CALM
    assert _refusals(gw, reason) == 1
    assert after - before < 20 * 1024


def test_an_endless_continuation_sequence_is_cut_and_memory_stays_bounded(setup):
    gw, origin, connect = setup
    before = _rss_kib(gw)
    c = connect()
    c.unterminated_header_block("/continuation", frames=5000)  # 80 MB offered, 16 KiB a frame
    assert c.wait_closed(timeout=10), "the gateway kept reading CONTINUATION frames"
    after = _rss_kib(gw)
    print(f"\nCONTINUATION flood: cut (GOAWAY {c.goaway.error_code if c.goaway else None!r}); VmRSS {before} -> {after} KiB")
    assert c.goaway is None or c.goaway.error_code != h2.errors.ErrorCodes.NO_ERROR
    assert after - before < 20 * 1024
    assert _paths(origin, "/continuation") == []


def test_a_request_reset_while_the_gateway_dials_the_origin_is_not_sent(gateway, gateway_ca, trust_secret, tls_origin):
    """mitmproxy looks for a client reset after each hook, not after opening the upstream connection."""
    origin = tls_origin("api.example.test")
    gw = gateway(GATEWAY, ROUTE, gateway_ca[1], trust_secret)
    with GatedForwarder(origin.port) as gate:
        c = H2Client((gw.host, gw.port), f"api.example.test:{gate.port}", gateway_ca[0])
        stream = c.open_stream("/reset-while-dialling")
        c.flush()
        assert gate.accepted.wait(10), "the gateway never dialled the origin"
        c.conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
        c.conn.ping(b"afterrst")  # answered only once the gateway has read the reset before it
        c.flush()
        assert c.wait_for(lambda: bool(c.of_type(h2.events.PingAckReceived)))
        gate.release.set()
        after = c.open_stream("/after")
        c.flush()
        assert c.wait_for(lambda: any(isinstance(e, h2.events.StreamEnded) and e.stream_id == after for e in c.received))
        c.close()
    assert _paths(origin, "/after") == ["/after"]
    assert _paths(origin, "/reset-while-dialling") == []
