"""Client limits (DESIGN.md 4.2, docs/reliability.md "Client limits") against the real gateway process.

Two gateways: one with the default limits (64 KiB heads, 100 header lines: the contract), one with short
timeouts and a connection cap so the clocks can be watched in a few seconds. Every wait is on a condition (an
answer, a close) with a bound.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import h2.config
import h2.connection
import httpx
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.origins import HttpOrigin, TcpEcho
from tests.support.rawproxy import connect, is_closed, open_socket, read_response

GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: deny-all
  listeners:
  - name: http
    protocol: HTTP
  - name: tcp
    protocol: TCP
    port: {tcp_port}
  ssrfGuard: {{allowCIDRs: [127.0.0.0/8]}}
  upstreamTLS:
    hostAliases:
    - ip: 127.0.0.1
      hostnames: [plain.example.test, big.example.test]
{limits}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: plain}}
spec:
  parentRefs: [{{name: eg, sectionName: http}}]
  hostnames: [plain.example.test, big.example.test]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressL4Route
metadata: {{name: loopback-echo}}
spec:
  parentRefs: [{{name: eg, sectionName: tcp}}]
  rules:
  - matches:
    - destinationCIDRs: [127.0.0.1/32]
      ports: [{{port: {tcp_port}}}]
"""

SHORT_LIMITS = """  clientLimits:
    idleTimeout: 1s
    requestHeadTimeout: 2s
    maxConnectionsPerClient: 3
"""

SECRET = "s3cr3t-Pa55word"


@pytest.fixture(scope="module")
def echo() -> Iterator[TcpEcho]:
    with TcpEcho() as e:
        yield e


@pytest.fixture(scope="module")
def origin() -> Iterator[HttpOrigin]:
    with HttpOrigin() as o:
        yield o


def _gateway(tmp_path_factory: pytest.TempPathFactory, name: str, echo: TcpEcho, limits: str) -> GatewayProcess:
    base = tmp_path_factory.mktemp(name)
    config = base / "config"
    config.mkdir()
    (config / "gateway.yaml").write_text(GATEWAY.format(tcp_port=echo.port, limits=limits))
    return GatewayProcess(config, base / "data")


@pytest.fixture(scope="module")
def default_gw(tmp_path_factory: pytest.TempPathFactory, echo: TcpEcho) -> Iterator[GatewayProcess]:
    with _gateway(tmp_path_factory, "limits-default", echo, "") as gw:
        yield gw


@pytest.fixture(scope="module")
def short_gw(tmp_path_factory: pytest.TempPathFactory, echo: TcpEcho) -> Iterator[GatewayProcess]:
    with _gateway(tmp_path_factory, "limits-short", echo, SHORT_LIMITS) as gw:
        yield gw


def _request_line(origin: HttpOrigin, path: str = "/") -> bytes:
    return f"GET http://plain.example.test:{origin.port}{path} HTTP/1.1\r\nHost: plain.example.test:{origin.port}\r\n".encode()


def _refusal(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, str]]:
    answer = read_response(sock)
    return answer.status, answer.headers, answer.json()


def _counted(gw: GatewayProcess, reason: str) -> float:
    match = re.search(rf'egress_client_refusals_total\{{reason="{reason}"\}} (\S+)', gw.metrics())
    return float(match.group(1)) if match else 0.0


def _served(gw: GatewayProcess, origin: HttpOrigin) -> None:
    r = httpx.get(f"http://plain.example.test:{origin.port}/alive", proxy=gw.proxy_url, timeout=10)
    assert r.status_code == 200, r.text


# --- request head size and header count -------------------------------------------------------------------------


def test_a_head_over_64_kib_is_refused_with_431_while_it_is_still_arriving(default_gw, origin):
    """The answer comes before the head is complete: the gateway does not buffer a head to its end to judge it."""
    before = _counted(default_gw, "request-header-too-large")
    origin.requests.clear()
    with open_socket(default_gw.host, default_gw.port) as sock:
        sock.sendall(_request_line(origin) + b"X-Big: " + b"a" * 70_000)  # no blank line: the head never ends
        status, headers, body = _refusal(sock)
        assert is_closed(sock)
    assert status == 431
    assert headers["x-egress-denied"] == "request-header-too-large"
    assert headers["content-type"] == "application/json"
    assert body["reason"] == "request-header-too-large"
    assert origin.requests == []
    assert _counted(default_gw, "request-header-too-large") == before + 1
    _served(default_gw, origin)


def test_curl_with_a_300_kb_header_gets_431_json(default_gw, origin, tmp_path):
    """A real client sending its whole 300 KB head still reads the answer (the gateway drains, then closes)."""
    origin.requests.clear()
    header_file = tmp_path / "headers"
    header_file.write_text("X-Big: " + "b" * 300_000 + "\n")  # one argument can be at most 128 KiB
    out = subprocess.run(
        ["curl", "-sS", "-x", default_gw.proxy_url, "-H", f"@{header_file}", "-w", "\n%{http_code}",
         f"http://plain.example.test:{origin.port}/big"],
        capture_output=True, timeout=30, text=True,
    )
    body, _, code = out.stdout.rpartition("\n")
    assert code == "431", (out.stdout[:300], out.stderr)
    assert json.loads(body)["reason"] == "request-header-too-large"
    assert origin.requests == []


def test_a_head_just_under_the_limit_is_served(default_gw, origin):
    r = httpx.get(f"http://plain.example.test:{origin.port}/fits", proxy=default_gw.proxy_url,
                  headers={"X-Fits": "c" * 60_000}, timeout=10)
    assert r.status_code == 200, r.text


def test_more_than_100_header_lines_get_431(default_gw, origin):
    origin.requests.clear()
    many = b"".join(b"X-%d: v\r\n" % i for i in range(101))
    with open_socket(default_gw.host, default_gw.port) as sock:
        sock.sendall(_request_line(origin) + many + b"\r\n")
        status, headers, body = _refusal(sock)
    assert (status, body["reason"]) == (431, "request-header-too-many")
    assert origin.requests == []
    ninety = {f"X-{i}": "v" for i in range(90)}  # the origin (Python http.server) itself refuses over 100
    r = httpx.get(f"http://plain.example.test:{origin.port}/ok", proxy=default_gw.proxy_url, headers=ninety, timeout=10)
    assert r.status_code == 200


def test_a_reload_applies_new_limits_to_the_next_head(gateway, echo, origin):
    gw = gateway(GATEWAY.format(tcp_port=echo.port, limits=""))
    config = gw.configs[0] / "00.yaml"
    headers = {"X-Pad": "p" * 10_000}
    url = f"http://plain.example.test:{origin.port}/reload"
    assert httpx.get(url, proxy=gw.proxy_url, headers=headers, timeout=10).status_code == 200
    config.write_text(GATEWAY.format(tcp_port=echo.port, limits="  clientLimits: {maxRequestHeadBytes: 4096}\n"))
    assert gw.admin("/reload", method="POST").status_code == 200
    assert gw.admin("/config_dump").json()["gateway"]["clientLimits"]["maxRequestHeadBytes"] == 4096
    r = httpx.get(url, proxy=gw.proxy_url, headers=headers, timeout=10)
    assert (r.status_code, r.json()["reason"]) == (431, "request-header-too-large")


# --- malformed CONNECT authorities: our JSON, not mitmproxy's HTML page -------------------------------------------


@pytest.mark.parametrize(
    "authority",
    [":443", f"user:{SECRET}@plain.example.test:443", "plain.example.test:99999", "[::1", "", "plain.example.test"],
    ids=["empty-host", "userinfo", "bad-port", "open-bracket", "empty", "no-port"],
)
def test_malformed_connect_authorities_get_json_400(default_gw, origin, authority):
    before = _counted(default_gw, "malformed-request")
    with open_socket(default_gw.host, default_gw.port) as sock:
        sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = read_response(sock)
        assert is_closed(sock)
    assert answer.status == 400
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"error": "the request head is malformed", "reason": "malformed-request", "policy": ""}
    assert SECRET.encode() not in answer.body and b"<html" not in answer.body.lower()
    assert _counted(default_gw, "malformed-request") == before + 1
    _served(default_gw, origin)


def test_refusals_never_log_the_head(default_gw):
    """The request line of a malformed CONNECT may carry credentials: the log names the reason, never the line."""
    with open_socket(default_gw.host, default_gw.port) as sock:
        sock.sendall(f"CONNECT user:{SECRET}@h:1 HTTP/1.1\r\n\r\n".encode())
        assert read_response(sock).status == 400
    deadline = time.monotonic() + 5
    while "refused: malformed-request" not in default_gw.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    logs = default_gw.logs()
    assert "refused: malformed-request" in logs
    assert SECRET not in logs


# --- idle and request-head timeouts -----------------------------------------------------------------------------


def _closed_within(sock: socket.socket, bound: float) -> float | None:
    """Seconds until the peer closed `sock`, or None if it did not within `bound`."""
    start = time.monotonic()
    return time.monotonic() - start if is_closed(sock, timeout=bound) else None


def test_an_idle_new_connection_is_closed_after_the_idle_timeout(short_gw):
    with open_socket(short_gw.host, short_gw.port) as sock:
        took = _closed_within(sock, 10)
    assert took is not None and 0.9 <= took < 3.0, took


def test_an_idle_keep_alive_connection_is_closed_after_its_response(short_gw, origin):
    with open_socket(short_gw.host, short_gw.port) as sock:
        sock.sendall(_request_line(origin, "/first") + b"\r\n")
        assert read_response(sock).status == 200
        took = _closed_within(sock, 10)
    assert took is not None and 0.9 <= took < 3.0, took


def test_slowloris_is_closed_after_the_request_head_timeout(short_gw, origin):
    """One byte every 0.2 s resets mitmproxy's own inactivity watchdog forever; the head clock does not."""
    before = _counted(short_gw, "request-head-timeout")
    head = _request_line(origin, "/slow") + b"X-Trickle: " + b"z" * 200
    with open_socket(short_gw.host, short_gw.port) as sock:
        start = time.monotonic()
        closed_after = None
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed_after = time.monotonic() - start
                break
            if is_closed(sock, timeout=0.2):
                closed_after = time.monotonic() - start
                break
            if time.monotonic() - start > 15:
                break
    print(f"\nslowloris closed after {closed_after} s (requestHeadTimeout 2s)")
    assert closed_after is not None and 1.9 <= closed_after < 5.0, closed_after
    assert _counted(short_gw, "request-head-timeout") == before + 1


def test_a_response_streaming_longer_than_the_timeouts_is_not_cut(short_gw, origin):
    with httpx.stream("GET", f"http://plain.example.test:{origin.port}/sse?events=4&interval=1",
                      proxy=short_gw.proxy_url, timeout=15) as r:
        events = [line for line in r.iter_lines() if line.startswith("data:")]
    assert len(events) == 4


def test_a_tunnel_idle_longer_than_the_timeouts_is_not_cut(short_gw, echo):
    sock, answer = connect(short_gw.host, short_gw.port, f"127.0.0.1:{echo.port}")
    with sock:
        assert answer.status == 200
        assert not is_closed(sock, timeout=3.0)  # idle 3 s: over both the idle (1 s) and head (2 s) timeouts
        sock.sendall(b"ping\n")
        got = b""
        while not got.endswith(b"\n"):
            chunk = sock.recv(100)
            if not chunk:
                break
            got += chunk
    assert got == b"echo:ping\n"


# --- connections per client address -------------------------------------------------------------------------------


def test_connections_over_the_per_client_cap_are_closed_at_accept(short_gw, origin):
    before = _counted(short_gw, "too-many-connections")
    held = []
    try:
        for i in range(3):
            sock = open_socket(short_gw.host, short_gw.port)
            held.append(sock)
            sock.sendall(_request_line(origin, f"/held{i}") + b"\r\n")
            assert read_response(sock).status == 200  # accepted and served, now idle for up to 1 s
        with open_socket(short_gw.host, short_gw.port) as extra:
            extra.sendall(_request_line(origin, "/fourth") + b"\r\n")
            assert is_closed(extra, timeout=5)
        assert _counted(short_gw, "too-many-connections") == before + 1
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10  # the closed ones are released: a new connection is served again
    while True:
        try:
            _served(short_gw, origin)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# --- backpressure: a client that reads nothing ------------------------------------------------------------------


class _BigBody(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    size = 4 << 20
    served = 0

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        type(self).served += 1
        self.send_response(200)
        self.send_header("content-length", str(self.size))
        self.end_headers()
        block = b"x" * 65536
        for _ in range(self.size // len(block)):
            self.wfile.write(block)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


def test_a_client_that_reads_nothing_does_not_make_the_gateway_buffer_without_bound(default_gw, origin):
    """50 pipelined 4 MiB downloads (200 MiB) with the client reading nothing: the gateway's RSS stays bounded."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BigBody)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    pid = default_gw.proc.pid
    try:
        _served(default_gw, origin)
        baseline = _rss_kib(pid)
        sock = open_socket(default_gw.host, default_gw.port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        request = f"GET http://big.example.test:{port}/big HTTP/1.1\r\nHost: big.example.test:{port}\r\n\r\n".encode()
        sock.sendall(request * 50)
        samples = []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            samples.append(_rss_kib(pid))
            time.sleep(0.25)
        _served(default_gw, origin)  # other clients are still served meanwhile
        peak = max(samples)
        print(f"\nbackpressure: RSS baseline {baseline} KiB, peak {peak} KiB over {len(samples)} samples, "
              f"origin responses started {_BigBody.served} of 50 (each 4 MiB, none read by the client)")
        sock.close()
        assert peak - baseline < 64 * 1024, (baseline, peak)
        assert _BigBody.served < 50
    finally:
        server.shutdown()
        server.server_close()


# --- HTTP/2 (intercepted): the header list size ------------------------------------------------------------------

H2_GATEWAY = """
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
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [api.example.test]
"""


def test_an_http2_header_block_over_64_kib_is_refused(gateway, gateway_ca, trust_secret, tls_origin):
    """The intercepted h2 connection advertises SETTINGS_MAX_HEADER_LIST_SIZE 65536 and enforces it: an 80 KB
    header block is never forwarded, and the gateway serves the next client."""
    gw = gateway(H2_GATEWAY, gateway_ca[1], trust_secret)
    origin = tls_origin("api.example.test")
    ctx = ssl.create_default_context(cafile=str(gateway_ca[0]))
    url = f"https://api.example.test:{origin.port}/h2"
    with httpx.Client(proxy=gw.proxy_url, verify=ctx, http2=True, http1=False, timeout=10) as client:
        start = time.monotonic()
        with pytest.raises(httpx.HTTPError) as refused:
            # 80 KB in 80 headers (hpack's pure-Python encoder is quadratic in one long value)
            client.get(url, headers={f"x-big-{i}": "h" * 1000 for i in range(80)})
        print(f"\nh2 refused after {time.monotonic() - start:.2f}s: {refused.value!r}"[:300])
    assert [path for _, path, _ in origin.requests] == []
    with httpx.Client(proxy=gw.proxy_url, verify=ctx, http2=True, http1=False, timeout=10) as client:
        r = client.get(url, headers={"x-fits": "h" * 30_000})
    assert (r.http_version, r.status_code) == ("HTTP/2", 200)


def test_bytes_sent_ahead_of_a_response_are_not_buffered_without_bound(default_gw, origin):
    """While a request waits for its response, whatever the client sends next (pipelined requests) sits in the
    gateway's buffer; 64 MiB of it must not all be read in: the connection is closed past a bound instead."""
    pid = default_gw.proc.pid
    _served(default_gw, origin)
    baseline = _rss_kib(pid)
    junk = b"j" * (1 << 20)
    sent = 0
    with open_socket(default_gw.host, default_gw.port, timeout=10) as sock:
        sock.sendall(_request_line(origin, "/slow?seconds=6") + b"\r\n")
        t0 = time.monotonic()
        try:
            while sent < 64 << 20:
                sock.sendall(junk)
                sent += len(junk)
        except OSError as e:
            print(f"\nsent ahead: cut ({e!r}) after {time.monotonic() - t0:.2f}s")
        peak = _rss_kib(pid)
    print(f"\nsent ahead: {sent >> 20} MiB accepted before the close; RSS baseline {baseline} KiB, after {peak} KiB")
    assert peak - baseline < 32 * 1024, (baseline, peak)
    assert sent < 64 << 20
    _served(default_gw, origin)


def _h2_closed_within(tls: ssl.SSLSocket, bound: float) -> float | None:
    """Read (frames are ignored) until the gateway closes the connection; seconds taken, or None."""
    start = time.monotonic()
    while time.monotonic() - start < bound:
        tls.settimeout(max(0.05, bound - (time.monotonic() - start)))
        try:
            if not tls.recv(65536):
                return time.monotonic() - start
        except (TimeoutError, socket.timeout):
            return None
        except (OSError, ssl.SSLError):
            return time.monotonic() - start
    return None


def test_an_idle_http2_connection_is_closed_but_not_while_a_stream_is_open(gateway, gateway_ca, trust_secret, tls_origin):
    limited = H2_GATEWAY.replace("  upstreamTLS:", "  clientLimits: {idleTimeout: 1s}\n  upstreamTLS:")
    gw = gateway(limited, gateway_ca[1], trust_secret)
    origin = tls_origin("api.example.test")
    authority = f"api.example.test:{origin.port}"
    sock, answer = connect(gw.host, gw.port, authority)
    assert answer.status == 200
    ctx = ssl.create_default_context(cafile=str(gateway_ca[0]))
    ctx.set_alpn_protocols(["h2"])
    with ctx.wrap_socket(sock, server_hostname="api.example.test") as tls:
        assert tls.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        # a stream open for 2 s (the origin answers /slow after 2 s): over the idle timeout, not cut
        conn.send_headers(1, [(":method", "GET"), (":path", "/slow?seconds=2"), (":scheme", "https"),
                              (":authority", authority)], end_stream=True)
        tls.sendall(conn.data_to_send())
        ended = False
        tls.settimeout(10)
        while not ended:
            data = tls.recv(65536)
            assert data, "closed while a stream was open"
            for event in conn.receive_data(data):
                ended = ended or type(event).__name__ == "StreamEnded"
            tls.sendall(conn.data_to_send())
        took = _h2_closed_within(tls, 10)
    print(f"\nidle h2 connection closed {took} s after its last stream (idleTimeout 1s)")
    assert took is not None and 0.5 <= took < 3.0, took
