"""The streams bench origin (loadtest/streams.py): large bodies, slow SSE and idle SSE, on a plain and an HTTPS port.

    python loadtest/stream_origin.py --cert leaf.crt --key leaf.key

Prints one JSON line `{"http": PORT, "https": PORT}` once both ports listen (127.0.0.1 only), then serves until
stdin closes or SIGTERM. Paths (HTTP/1.1, keep-alive):

- `/big?size=N`: N bytes (default 1 MiB) of text/plain with a Content-Length, written in 64 KiB pieces.
- `/sse?first=MS&every=MS&count=N`: text/event-stream, chunked: the headers at once, the first event after
  `first` ms, then `count - 1` more every `every` ms, then the end of the body.
- `/idle`: text/event-stream, chunked: the headers and one event at once, then nothing until the client goes
  (bounded by `--idle-max` seconds).
- `/small`: 16 bytes, keep-alive (for idle keep-alive connections).
- `/stats`: JSON `{"idle": open /idle streams, "small": open connections that asked for /small}`.

Deliberately minimal (no request bodies, no pipelining): it exists to be cheap, so that the proxies are measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import sys
from urllib.parse import parse_qs, urlsplit

MIB = 1024 * 1024
PIECE = 64 * 1024
COUNTS = {"idle": 0, "small": 0}


def head(content_type: str, length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nCache-Control: no-cache\r\n{framing}\r\n\r\n"
            .encode())


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def event(n: int) -> bytes:
    return chunk(b"data: {\"n\": %d}\n\n" % n)


async def big(writer: asyncio.StreamWriter, size: int) -> None:
    writer.write(head("text/plain", size))
    piece = b"x" * PIECE
    left = size
    while left > 0:
        writer.write(piece[:left])
        left -= PIECE
        await writer.drain()


async def sse(writer: asyncio.StreamWriter, first: float, every: float, count: int) -> None:
    writer.write(head("text/event-stream", None))
    await writer.drain()
    await asyncio.sleep(first)
    for n in range(count):
        if n:
            await asyncio.sleep(every)
        writer.write(event(n))
        await writer.drain()
    writer.write(b"0\r\n\r\n")


async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: float) -> None:
    writer.write(head("text/event-stream", None) + event(0))
    await writer.drain()
    COUNTS["idle"] += 1
    try:
        await asyncio.wait_for(reader.read(1), limit)  # b"" when the client (or the proxy) closes
    except TimeoutError:
        pass
    finally:
        COUNTS["idle"] -= 1


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idle_max: float) -> None:
    small = False
    try:
        while True:
            try:
                request = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            target = request.split(b" ", 2)[1].decode(errors="replace")
            url = urlsplit(target)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/big":
                await big(writer, min(int(query.get("size", MIB)), 64 * MIB))
            elif url.path == "/sse":
                await sse(writer, float(query.get("first", 100)) / 1000, float(query.get("every", 500)) / 1000,
                          min(int(query.get("count", 3)), 100))
            elif url.path == "/idle":
                await idle(reader, writer, idle_max)
                return
            elif url.path == "/stats":
                body = json.dumps(COUNTS).encode()
                writer.write(head("application/json", len(body)) + body)
            else:
                if not small:
                    small = True
                    COUNTS["small"] += 1
                writer.write(head("text/plain", 16) + b"egressproxy-load")
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        if small:
            COUNTS["small"] -= 1
        writer.close()


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--idle-max", type=float, default=300.0, help="longest an /idle stream is held (seconds)")
    args = p.parse_args()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(args.cert, args.key)
    tls.set_alpn_protocols(["http/1.1"])

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await serve(r, w, args.idle_max)

    plain = await asyncio.start_server(handler, "127.0.0.1", 0, backlog=2048)
    secure = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls, backlog=2048)
    ports = {"http": plain.sockets[0].getsockname()[1], "https": secure.sockets[0].getsockname()[1]}
    print(json.dumps(ports), flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(1) else None)
    await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
