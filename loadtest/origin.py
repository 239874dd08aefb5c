"""The bench origin: a fast asyncio HTTP/1.1 server answering every request with one small fixed body.

Run as its own process (so it never shares a GIL with the client or a proxy):

    python loadtest/origin.py --http-port 0 --https-port 0 --cert leaf.crt --key leaf.key --body-size 64

It prints one JSON line `{"http": PORT, "https": PORT}` once both ports listen, then serves until stdin closes,
SIGTERM or SIGINT. Keep-alive and pipelining are honoured; `Connection: close` closes after the answer. Only
127.0.0.1 is ever bound. The parser is deliberately minimal (headers, then an optional Content-Length body):
it exists to be cheap, so that the proxies are what the bench measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import sys

MAX_HEAD = 64 * 1024


def response_bytes(body_size: int, close: bool, status: str = "200 OK", extra: tuple[str, ...] = ()) -> bytes:
    body = (b"egressproxy-loadtest-" * (body_size // 21 + 1))[:body_size]
    head = [
        b"HTTP/1.1 " + status.encode(),
        b"Content-Type: text/plain",
        b"Content-Length: " + str(len(body)).encode(),
        *(h.encode() for h in extra),
    ]
    if close:
        head.append(b"Connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class OriginProtocol(asyncio.Protocol):
    def __init__(self, keep: bytes, close: bytes, bad: bytes) -> None:
        self.keep, self.close, self.bad = keep, close, bad
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        transport = self.transport
        assert transport is not None
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    transport.write(self.bad)
                    transport.close()
                return
            head = bytes(self.buf[:end]).lower()
            length = 0
            closing = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name == b"content-length":
                    try:
                        length = int(value.strip())
                    except ValueError:
                        transport.write(self.bad)
                        transport.close()
                        return
                elif name == b"connection" and b"close" in value:
                    closing = True
            if head.endswith(b"http/1.0") and not closing:
                closing = True
            total = end + 4 + length
            if len(self.buf) < total:
                return
            del self.buf[:total]
            if closing:
                transport.write(self.close)
                transport.close()
                return
            transport.write(self.keep)


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    extra = tuple(args.header)
    keep = response_bytes(args.body_size, close=False, status=args.status, extra=extra)
    close = response_bytes(args.body_size, close=True, status=args.status, extra=extra)
    bad = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

    def factory() -> OriginProtocol:
        return OriginProtocol(keep, close, bad)

    http = await loop.create_server(factory, "127.0.0.1", args.http_port, backlog=1024, reuse_address=True)
    servers = [http]
    ports = {"http": http.sockets[0].getsockname()[1]}
    if args.cert and args.key:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        ctx.set_alpn_protocols(["http/1.1"])
        https = await loop.create_server(factory, "127.0.0.1", args.https_port, ssl=ctx, backlog=1024, reuse_address=True)
        servers.append(https)
        ports["https"] = https.sockets[0].getsockname()[1]
        # A second TLS port, for the `passthrough` scenario: the gateway's Passthrough listener is chosen by port.
        tunnelled = await loop.create_server(factory, "127.0.0.1", 0, ssl=ctx, backlog=1024, reuse_address=True)
        servers.append(tunnelled)
        ports["passthrough"] = tunnelled.sockets[0].getsockname()[1]
    print(json.dumps(ports), flush=True)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Stop when the parent goes away (its end of our stdin closes).
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(1024) else None)
    await stop.wait()
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--http-port", type=int, default=0)
    p.add_argument("--https-port", type=int, default=0)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--body-size", type=int, default=64)
    p.add_argument("--status", default="200 OK", help="status line of every answer (failover_latency.py: 503)")
    p.add_argument("--header", action="append", default=[], help="an extra response header, 'Name: value'")
    args = p.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
