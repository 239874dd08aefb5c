"""Hostile and malformed input on the proxy port: each gets a clear answer (or a close), the proxy stays up.

Every test ends by proving the same gateway process still serves an allowed request.
"""

from __future__ import annotations

import json
import re
import socket
import time
import ssl
from collections.abc import Iterator

import httpx
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.origins import HttpOrigin, TcpEcho
from tests.support.rawproxy import connect, is_closed, open_socket, read_response

pytestmark = pytest.mark.e2e


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
      hostnames: [plain.example.test]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: plain}}
spec:
  parentRefs: [{{name: eg, sectionName: http}}]
  hostnames: [plain.example.test]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressL4Route
metadata: {{name: loopback-one}}
spec:
  parentRefs: [{{name: eg, sectionName: tcp}}]
  rules:
  - matches:
    - destinationCIDRs: [127.0.0.1/32]
      ports: [{{port: {tcp_port}}}]
"""


# One gateway for the whole module: surviving one bad input after another is part of what is tested.


@pytest.fixture(scope="module")
def echo() -> Iterator[TcpEcho]:
    with TcpEcho() as e:
        yield e


@pytest.fixture(scope="module")
def module_env(tmp_path_factory: pytest.TempPathFactory, echo: TcpEcho) -> Iterator[tuple[GatewayProcess, HttpOrigin]]:
    base = tmp_path_factory.mktemp("bad-input")
    config = base / "config"
    config.mkdir()
    (config / "gateway.yaml").write_text(GATEWAY.format(tcp_port=echo.port))
    with HttpOrigin() as origin, GatewayProcess(config, base / "data") as gw:
        yield gw, origin


@pytest.fixture
def env(module_env: tuple[GatewayProcess, HttpOrigin]) -> tuple[GatewayProcess, HttpOrigin]:
    gw, origin = module_env
    assert gw.proc is not None and gw.proc.poll() is None, f"the gateway died during an earlier test:\n{gw.logs()}"
    origin.requests.clear()
    return gw, origin


def still_serving(gw: object, origin: HttpOrigin) -> None:
    assert gw.proc.poll() is None, "the gateway process died"  # type: ignore[attr-defined]
    r = httpx.get(f"http://plain.example.test:{origin.port}/alive", proxy=gw.proxy_url, timeout=10)  # type: ignore[attr-defined]
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "/alive"


def send_raw(gw: object, data: bytes) -> bytes:
    """Send `data`; return the proxy's first complete answer, or what it sent before closing (5 s at most)."""
    sock = open_socket(gw.host, gw.port, timeout=5)  # type: ignore[attr-defined]
    received = b""
    with sock:
        try:
            sock.sendall(data)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
                head, sep, body = received.partition(b"\r\n\r\n")
                if sep and received.startswith(b"HTTP/"):
                    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                    if length is None or len(body) >= int(length.group(1)):
                        break
        except (TimeoutError, socket.timeout, ConnectionResetError, BrokenPipeError):
            pass
    return received


def status_of(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/"):
        return None
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\xff\xfe garbage \x01\x02\r\n\r\n",
        b"HELLO WORLD\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST http://unrouted.example.test/ HTTP/1.1\r\nHost: unrouted.example.test\r\nContent-Length: -1\r\n\r\n",
        b"POST http://unrouted.example.test/ HTTP/1.1\r\nHost: unrouted.example.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET http://unrouted.example.test/ HTTP/1.1\r\n" + b"X-Long: " + b"a" * 200_000 + b"\r\n\r\n",
        b"GET http://unrouted.example.test/ HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(5000)) + b"\r\n",
        b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",  # a truncated TLS record
    ],
    ids=["binary", "not-http", "bad-version", "negative-length", "smuggling-cl-te", "huge-header", "many-headers", "truncated-tls"],
)
def test_garbage_gets_an_error_or_a_close_and_the_proxy_survives(env, garbage):
    gw, origin = env
    answer = send_raw(gw, garbage)
    status = status_of(answer)
    assert status is None or 400 <= status < 500, answer[:300]
    assert origin.requests == []
    still_serving(gw, origin)


def test_thousands_of_headers_are_answered_promptly(env):
    """A 20,000-header request (about 200 kB) must not stall the gateway: deciding is linear in the headers."""
    gw, origin = env
    request = (
        f"GET http://plain.example.test:{origin.port}/many HTTP/1.1\r\n".encode()
        + b"".join(b"X-%d: v\r\n" % i for i in range(20_000))
        + f"Host: plain.example.test:{origin.port}\r\n\r\n".encode()
    )
    start = time.monotonic()
    answer = send_raw(gw, request)
    elapsed = time.monotonic() - start
    assert status_of(answer) is not None, answer[:200]
    assert elapsed < 3.0, elapsed
    still_serving(gw, origin)


def test_a_client_that_connects_and_vanishes_does_not_hurt(env):
    gw, origin = env
    for _ in range(20):
        s = open_socket(gw.host, gw.port)
        s.sendall(b"GET http://plain.example.test/ HTTP/1.1\r\nHo")
        s.close()
    still_serving(gw, origin)


@pytest.mark.parametrize("spelling", ["0x7f.1", "127.1", "2130706433", "0177.0.0.1", "0x7f000001"])
def test_numeric_ip_spellings_are_canonicalised_before_deciding(env, echo, spelling):
    """Every inet_aton spelling of 127.0.0.1 is decided (and dialled) as 127.0.0.1: the L4 route that allows
    127.0.0.1/32 allows it, and the bytes reach the one origin at that address."""
    gw, origin = env
    sock, answer = connect(gw.host, gw.port, f"{spelling}:{echo.port}")
    with sock:
        assert answer.status == 200, (answer.status, answer.body)
        sock.sendall(b"ping\n")
        got = b""
        while len(got) < len(b"echo:ping\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    assert got == b"echo:ping\n"
    still_serving(gw, origin)


def test_numeric_spelling_of_an_address_no_route_allows_is_denied(env, echo):
    """127.0.0.2 in hex is still 127.0.0.2: the 127.0.0.1/32 route does not allow it."""
    gw, origin = env
    sock, answer = connect(gw.host, gw.port, f"0x7f.2:{echo.port}")
    with sock:
        if answer.status == 200:
            sock.sendall(b"ping\n")
            assert is_closed(sock)
        else:
            assert answer.status == 403
            assert answer.headers["x-egress-denied"] == "no-route"
    still_serving(gw, origin)


@pytest.mark.parametrize(
    "authority",
    ["bad_host!:443", "exa mple.test:443", "..:443", "a..b:443", "[::1:443", "host:99999", "host:abc", "-bad.example:443", "exa%00mple:443"],
)
def test_connect_to_an_invalid_host_is_a_4xx(env, authority):
    """Rejected by mitmproxy's request-line parser (400) or by our canonicaliser (invalid-host): never dialled."""
    gw, origin = env
    sock, answer = connect(gw.host, gw.port, authority)
    sock.close()
    assert 400 <= answer.status < 500 and answer.status != 407, (answer.status, answer.body)
    still_serving(gw, origin)


def test_connect_to_a_name_mitmproxy_accepts_but_no_dns_name_can_be_is_denied_invalid_host(env):
    gw, origin = env
    sock, answer = connect(gw.host, gw.port, "-bad.example:443")
    sock.close()
    assert 400 <= answer.status < 500
    assert answer.headers["x-egress-denied"] == "invalid-host"
    assert answer.json()["reason"] == "invalid-host"
    still_serving(gw, origin)


def test_absolute_form_with_a_mismatching_host_header_is_refused(env):
    gw, origin = env
    sock = open_socket(gw.host, gw.port)
    with sock:
        sock.sendall(
            f"GET http://plain.example.test:{origin.port}/x HTTP/1.1\r\nHost: evil.example.test\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        answer = read_response(sock)
    assert answer.status in (421, 403)
    assert answer.headers["x-egress-denied"] == "host-mismatch"
    assert answer.json()["reason"] == "host-mismatch"
    assert origin.requests == []
    still_serving(gw, origin)


def test_host_header_spelled_differently_but_canonically_equal_is_accepted(env):
    """Case and a trailing dot do not make a mismatch: both sides are canonicalised."""
    gw, origin = env
    sock = open_socket(gw.host, gw.port)
    with sock:
        sock.sendall(
            f"GET http://plain.example.test:{origin.port}/same HTTP/1.1\r\nHost: PLAIN.Example.TEST.:{origin.port}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        answer = read_response(sock)
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["path"] == "/same"


def test_several_bad_requests_on_one_connection_do_not_leak_to_the_origin(env):
    gw, origin = env
    sock = open_socket(gw.host, gw.port)
    with sock:
        sock.sendall(f"GET http://unrouted.example.test:{origin.port}/a HTTP/1.1\r\nHost: unrouted.example.test:{origin.port}\r\n\r\n".encode())
        first = read_response(sock)
        assert first.status == 403
        assert first.headers["x-egress-denied"] == "no-route"
        # a denial may close the connection; if it did not, a second denied request gets the same answer
        try:
            sock.sendall(f"GET http://unrouted.example.test:{origin.port}/b HTTP/1.1\r\nHost: unrouted.example.test:{origin.port}\r\n\r\n".encode())
            second = read_response(sock)
        except (ConnectionError, OSError):
            second = None
        if second is not None:
            assert second.status == 403
    assert origin.requests == []
    still_serving(gw, origin)


def test_tls_straight_to_the_proxy_port_is_closed_before_any_handshake(env):
    """The explicit proxy is plain HTTP: TLS to the proxy port itself (a "secure web proxy") is refused outright,
    never served with mitmproxy's own CA."""
    gw, origin = env
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sock = open_socket(gw.host, gw.port)
    with pytest.raises((ssl.SSLError, OSError)):
        try:
            ctx.wrap_socket(sock, server_hostname="proxy.local")
        finally:
            sock.close()
    assert origin.requests == []
    still_serving(gw, origin)
