"""The bench client: N keep-alive connections in one asyncio process, driving one proxy with one scenario.

    python loadtest/client.py --scenario intercept --proxy 127.0.0.1:8080 --target 127.0.0.1:8443 \
        --ca proxy-ca.pem --connections 8 --start-at EPOCH --warmup 1 --duration 8

Scenarios (each connection loops on its own; a failed request is counted, its connection dropped and reopened):
- `plain`: absolute-form `GET http://TARGET/` to the proxy, keep-alive.
- `intercept`: `CONNECT TARGET` once, TLS to the proxy (verified against `--ca`), then keep-alive
  `GET /` inside the tunnel.
- `passthrough`: `CONNECT TARGET` once, then TLS end to end with the origin through the tunnel (verified against
  `--ca`, the origin's CA: the proxy relays bytes and never decrypts), then keep-alive `GET /`.
- `connect-new`: a new TCP connection, CONNECT, full TLS handshake (no session resumption) and one request,
  per request.
- `direct`: origin-form `GET /` straight to TARGET without a proxy (calibrates the client and origin).
- `direct-tls`: TLS straight to TARGET (verified against `--ca`, the origin's CA), then keep-alive `GET /`: the
  baseline that intercepted HTTPS is compared with (loadtest/latency.py).

Closed loop by default (each connection sends its next request as soon as the last answer is read). `--rate R`
makes it open loop: R requests a second in total, spread evenly over the connections (connection i of C sends at
start + i/R + k*C/R), whatever the answers' speed. Latency then runs from the send, or from the scheduled time
when the previous answer on that connection came after it (the wait counts, so a slow proxy is not hidden by
sending less: no coordinated omission); timer jitter of the client itself is not counted. A request counts in
the window it was sent in (closed loop: the one it ended in), so the slowest answers of a window are not lost.

Only requests completed inside the measurement window `[start-at + warmup, start-at + warmup + duration]`
count; the process prints one JSON object (counts, error samples, latencies in microseconds) and exits.
Everything is bounded: the run stops at the window's end (in-flight requests are cancelled 2 s later at most),
and a failing connection waits 20 ms before it reconnects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

SCENARIOS = ("plain", "intercept", "passthrough", "connect-new", "direct", "direct-tls")
TLS_SCENARIOS = ("intercept", "passthrough", "connect-new", "direct-tls")
RECONNECT_PAUSE = 0.02
CANCEL_GRACE = 2.0


class BadResponse(Exception):
    pass


def split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass
class Tally:
    window_start: float
    window_end: float
    requests: int = 0
    errors: int = 0
    warmup_requests: int = 0
    warmup_errors: int = 0
    latencies_us: list[int] = field(default_factory=list)
    error_kinds: Counter[str] = field(default_factory=Counter)
    by_start: bool = False  # open loop: a request belongs to the window it was sent in, however late it ends

    def ok(self, started: float, done: float) -> None:
        when = started if self.by_start else done
        if self.window_start <= when <= self.window_end:
            self.requests += 1
            self.latencies_us.append(int((done - started) * 1e6))
        elif when < self.window_start:
            self.warmup_requests += 1

    def failed(self, exc: BaseException, when: float) -> None:
        if self.window_start <= when <= self.window_end:
            self.errors += 1
            text = f"{type(exc).__name__}: {exc}"[:160]
            self.error_kinds[text] += 1
        elif when < self.window_start:
            self.warmup_errors += 1


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return (status, whether the server will close). The body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise BadResponse(f"bad status line {lines[0][:80]!r}") from None
    length = None
    chunked = False
    closing = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            closing = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    elif length is None and status not in (204, 304):
        await reader.read()  # body until close
        closing = True
    return status, closing


class Pacer:
    """Open-loop send times of one connection: `first`, then every `interval` seconds (None: closed loop)."""

    def __init__(self, rate: float | None, index: int, connections: int, start: float) -> None:
        self.interval = connections / rate if rate else 0.0
        self.next = start + index / rate if rate else 0.0

    async def wait(self, last_done: float) -> float:
        """Sleep until the next send time; return when this request's latency starts (see the module doc)."""
        if not self.interval:
            return time.time()
        scheduled = self.next
        self.next += self.interval
        delay = scheduled - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        return scheduled if last_done > scheduled else time.time()


class Worker:
    def __init__(self, args: argparse.Namespace, tally: Tally, ssl_ctx: ssl.SSLContext | None,
                 pacer: Pacer | None = None) -> None:
        self.args = args
        self.pacer = pacer or Pacer(None, 0, 1, 0.0)
        self.tally = tally
        self.ssl_ctx = ssl_ctx
        self.proxy = split_hostport(args.proxy) if args.proxy else None
        self.target_host, self.target_port = split_hostport(args.target)
        authority = args.target
        if args.scenario == "plain":
            line = f"GET http://{authority}/ HTTP/1.1"
        else:
            line = "GET / HTTP/1.1"
        extra = "Connection: close\r\n" if args.scenario == "connect-new" else ""
        self.request = (
            f"{line}\r\nHost: {authority}\r\nUser-Agent: egressproxy-loadtest\r\nAccept: */*\r\n{extra}\r\n"
        ).encode()
        self.connect = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode()

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.args.scenario == "direct":
            return await asyncio.open_connection(self.target_host, self.target_port)
        if self.args.scenario == "direct-tls":
            return await asyncio.open_connection(self.target_host, self.target_port, ssl=self.ssl_ctx,
                                                 server_hostname=self.target_host)
        assert self.proxy is not None
        reader, writer = await asyncio.open_connection(*self.proxy)
        if self.args.scenario in TLS_SCENARIOS:
            writer.write(self.connect)
            status, _ = await read_connect(reader)
            if status != 200:
                writer.close()
                raise BadResponse(f"CONNECT answered {status}")
            await writer.start_tls(self.ssl_ctx, server_hostname=self.target_host)  # type: ignore[arg-type]
        return reader, writer

    async def run(self) -> None:
        tally = self.tally
        new_per_request = self.args.scenario == "connect-new"
        writer: asyncio.StreamWriter | None = None
        reader: asyncio.StreamReader | None = None
        last_done = 0.0
        while True:
            started = await self.pacer.wait(last_done)
            if started >= tally.window_end:
                break
            try:
                if writer is None:
                    reader, writer = await self.open()
                assert reader is not None
                writer.write(self.request)
                status, closing = await read_response(reader)
                done = last_done = time.time()
                if status != 200:
                    raise BadResponse(f"status {status}")
                tally.ok(started, done)
                if closing or new_per_request:
                    writer.close()
                    writer = reader = None
            except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, BadResponse, ssl.SSLError, ValueError) as e:
                last_done = time.time()
                tally.failed(e, last_done)
                if writer is not None:
                    writer.close()
                writer = reader = None
                await asyncio.sleep(RECONNECT_PAUSE)
        if writer is not None:
            writer.close()


async def read_connect(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    try:
        return int(head.split(b" ", 2)[1]), head
    except (IndexError, ValueError):
        raise BadResponse(f"bad CONNECT answer {head[:80]!r}") from None


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    ssl_ctx = None
    if args.scenario in TLS_SCENARIOS:
        ssl_ctx = ssl.create_default_context(cafile=args.ca)
        ssl_ctx.set_alpn_protocols(["http/1.1"])
    start_at = args.start_at or time.time()
    tally = Tally(start_at + args.warmup, start_at + args.warmup + args.duration, by_start=args.rate is not None)
    delay = start_at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    begin = time.time()
    tasks = [asyncio.ensure_future(Worker(args, tally, ssl_ctx, Pacer(args.rate, i, args.connections, begin)).run())
             for i in range(args.connections)]
    timeout = max(0.0, tally.window_end - time.time()) + CANCEL_GRACE
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=CANCEL_GRACE)
    for task in done:
        if task.exception() is not None:  # a bug in the client, not a proxy error: make it visible
            exc = task.exception()
            tally.error_kinds[f"client bug {type(exc).__name__}: {exc}"[:160]] += 1
    cpu = sum(os.times()[:2])
    return {
        "scenario": args.scenario,
        "connections": args.connections,
        "duration": args.duration,
        "requests": tally.requests,
        "errors": tally.errors,
        "warmup_requests": tally.warmup_requests,
        "warmup_errors": tally.warmup_errors,
        "error_samples": dict(tally.error_kinds.most_common(5)),
        "latencies_us": tally.latencies_us,
        "cpu_seconds": cpu,
        "cancelled": len(pending),
        "rate": args.rate,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", choices=SCENARIOS, required=True)
    p.add_argument("--proxy", help="HOST:PORT of the proxy (not for `direct`, `direct-tls`)")
    p.add_argument("--target", required=True, help="HOST:PORT of the origin, as the client asks for it")
    p.add_argument("--ca", help="the CA to verify TLS against: the proxy's (intercept, connect-new), the origin's (passthrough, direct-tls)")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--start-at", type=float, default=0.0, help="epoch seconds at which to start (default: now)")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--rate", type=float, default=None,
                   help="open loop: this many requests a second in total over the connections (default: closed loop)")
    args = p.parse_args(argv)
    if not args.scenario.startswith("direct") and not args.proxy:
        p.error("--proxy is required for this scenario")
    if args.scenario in TLS_SCENARIOS and not args.ca:
        p.error("--ca is required for this scenario")
    if not (0 < args.duration <= 3600 and 0 <= args.warmup <= 600 and 0 < args.connections <= 4096):
        p.error("duration, warmup or connections out of range")
    if args.rate is not None and not (0 < args.rate <= 100_000):
        p.error("--rate must be in (0, 100000]")
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(main_async(args))
    else:
        result = uvloop.run(main_async(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
