"""A fake Google OAuth token endpoint over TLS on loopback: it answers the jwt-bearer grant with numbered
access tokens (`ya29.fake-1`, `ya29.fake-2`, ...) that live `expires_in` seconds, and keeps every assertion
it received so a test can verify the signature with the service account's public key."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs


class _TokenHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_TokenServer"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        self.server.assertions.append(form.get("assertion", [""])[0])
        self.server.grants.append(form.get("grant_type", [""])[0])
        token = f"ya29.fake-{len(self.server.assertions)}"
        payload = json.dumps({"access_token": token, "expires_in": self.server.expires_in, "token_type": "Bearer"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _TokenServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    assertions: list[str]
    grants: list[str]
    expires_in: int


class TokenEndpoint:
    """`with TokenEndpoint(host, 443, (cert, key), expires_in=2) as t:` then `t.assertions`, `t.grants`."""

    def __init__(self, host: str, port: int, tls: tuple[Path, Path], expires_in: int = 3600) -> None:
        self.server = _TokenServer((host, port), _TokenHandler)
        self.server.assertions, self.server.grants, self.server.expires_in = [], [], expires_in
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tls[0]), str(tls[1]))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
        self.host, self.port = self.server.server_address[:2]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def assertions(self) -> list[str]:
        return self.server.assertions

    @property
    def grants(self) -> list[str]:
        return self.server.grants

    def __enter__(self) -> "TokenEndpoint":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
