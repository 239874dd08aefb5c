"""Talking to the proxy over a plain socket: CONNECT by hand, read an HTTP/1 response, TLS inside the tunnel.

For tests that need what no ordinary client does (an SNI that disagrees with the CONNECT authority, raw bytes
in a tunnel, malformed requests) and that must see every byte of the proxy's answer.
"""

from __future__ import annotations

import json
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names (last value wins)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


def open_socket(host: str, port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_response(sock: socket.socket | ssl.SSLSocket, *, head_only: bool = False) -> RawResponse:
    """One HTTP/1 response from `sock` (status line, headers, a Content-Length or chunked body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a full response head: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    _version, status, *reason = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    response = RawResponse(int(status), reason[0] if reason else "", headers)
    if head_only:
        response.body = rest
        return response
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        data = rest
        while True:
            while b"\r\n" not in data:
                more = sock.recv(65536)
                if not more:
                    raise ConnectionError("connection closed inside a chunked body")
                data += more
            size_line, _, data = data.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(data) < size + 2:
                more = sock.recv(65536)
                if not more:
                    raise ConnectionError("connection closed inside a chunk")
                data += more
            body += data[:size]
            data = data[size + 2 :]
            if size == 0:
                break
        response.body = body
        return response
    length = int(headers.get("content-length", "0") or 0)
    while len(rest) < length:
        more = sock.recv(65536)
        if not more:
            break
        rest += more
    response.body = rest[:length]
    return response


def connect(proxy_host: str, proxy_port: int, authority: str, *, timeout: float = 10.0, extra: str = "") -> tuple[socket.socket, RawResponse]:
    """Send `CONNECT authority` and read the proxy's answer; the socket is the tunnel when the status is 2xx."""
    sock = open_socket(proxy_host, proxy_port, timeout)
    sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{extra}\r\n".encode())
    response = read_response(sock, head_only=True)
    if 200 <= response.status < 300:
        return sock, response
    # a denial has a body: read it fully
    length = int(response.headers.get("content-length", "0") or 0)
    body = response.body
    while len(body) < length:
        more = sock.recv(65536)
        if not more:
            break
        body += more
    response.body = body[:length] if length else body
    return sock, response


def is_closed(sock: socket.socket | ssl.SSLSocket, timeout: float = 5.0) -> bool:
    """True when the peer closed (EOF or reset) within `timeout`; False if data arrived or nothing happened."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(65536)
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, ssl.SSLError):
        return True
    except (TimeoutError, socket.timeout):
        return False
    except OSError:
        return True
    return data == b""


def client_context(cafile: str | None = None, *, verify: bool = True, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx
