"""Streams and memory: 1 MiB downloads, time to the first SSE byte, idle SSE streams and keep-alive connections.

    python loadtest/streams.py                                   # everything, ~2 min
    python loadtest/streams.py --parts downloads --duration 3    # one part
    python loadtest/streams.py --parts idle --streams 1000 --proxies egressproxy

Side by side in one run (loadtest/README.md, "Streams and memory"), every proxy the same way run.py starts it:
`direct` (the client straight to the origin), `egressproxy` (run.py's routing-only bench config, captures off),
`egressproxy-capture` (the same, captures on: bodies up to captureBody.maxBytes are copied) and `mitmdump`
(bare, run.py's settings; it buffers whole responses unless told to stream, and that is measured as it is).
`egressproxy-untuned` and `egressproxy-capture-untuned` are the same two with glibc malloc at its defaults
(EGRESSPROXY_MALLOC_TUNING=off, egressproxy/runtime/allocator.py).

- **downloads**: `--clients` connections each GET a `--size` body again and again for `--duration` s, over plain
  HTTP and intercepted HTTPS, alternating proxies; MB/s and the proxy's peak RSS (VmRSS sampled every 20 ms,
  summed over the proxy's process tree), against its RSS before.
- **sse**: an origin stream sends its headers at once, the first event after `--sse-first` ms and two more
  500 ms apart; the time from writing the request (on a warm keep-alive connection) to the first event byte,
  the median of `--sse-samples`, and that minus the origin's delay (what the proxy adds).
- **idle**: `--streams` SSE streams (each has received its first event) and then as many idle keep-alive
  connections (one small request each, the upstream kept), opened 50 at a time and held while the RSS settles;
  RSS after minus before, per stream. Each such measurement gets a fresh proxy (warmed by a few requests), so
  memory freed by an earlier one cannot hide what the next one costs (`direct` has no proxy: not measured).

Everything on 127.0.0.1, bounded in time and count; the soft RLIMIT_NOFILE is raised to the hard limit (the
proxies inherit it); the working directory is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import select
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (re-executes under .venv when mitmproxy is missing)
from client import BadResponse, read_connect, read_response  # noqa: E402
from pki import write_origin_pki  # noqa: E402

PROXIES = ("direct", "egressproxy", "egressproxy-capture", "mitmdump", "egressproxy-untuned",
           "egressproxy-capture-untuned")
PARTS = ("downloads", "sse", "idle")
SCHEMES = ("plain", "https")
KINDS = ("sse", "keepalive")
OPEN_AT_ONCE = 50
KIB = 1024
MIB = 1024 * 1024


# --- processes and memory -------------------------------------------------------------------------------------


def rss_kib(root: int) -> int:
    """VmRSS of `root` and every process below it, KiB (0 for what is gone)."""
    total = 0
    for pid in run.descendants(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except OSError:
            pass
    return total


class PeakRss:
    """The highest RSS of a process tree while the block runs (a thread samples every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self._stop.wait(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def lowest_rss(pid: int, seconds: float) -> int:
    """The lowest RSS over `seconds` (what an allocator trimming on a timer gave back once a run ended), KiB."""
    lowest = rss_kib(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.2)
        lowest = min(lowest, rss_kib(pid))
    return lowest


def settled_rss(pid: int, timeout: float = 5.0) -> int:
    """RSS once two samples 0.3 s apart differ by under 1% (or at the timeout)."""
    deadline = time.monotonic() + timeout
    last = rss_kib(pid)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = rss_kib(pid)
        if abs(now - last) <= last * 0.01:
            return now
        last = now
    return last


@dataclass
class StreamOrigin:
    managed: run.Managed
    http_port: int
    https_port: int
    ca_cert: Path

    def bench_origin(self) -> run.Origin:
        """run.py's Origin, for its proxy starters (the passthrough port is a free port nothing uses here)."""
        return run.Origin(self.managed, self.http_port, self.https_port, run.free_port(), self.ca_cert)


def start_origin(work: Path) -> StreamOrigin:
    pki = write_origin_pki(work / "origin-pki")
    log = work / "origin.log"
    cmd = [sys.executable, str(HERE / "stream_origin.py"), "--cert", str(pki.leaf_cert), "--key", str(pki.leaf_key)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(log, "wb"))
    managed = run.Managed("origin", proc, log)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline() if ready else b""
    if not line:
        managed.stop()
        raise RuntimeError(f"stream origin did not start:\n{managed.tail()}")
    ports = json.loads(line)
    return StreamOrigin(managed, int(ports["http"]), int(ports["https"]), pki.ca_cert)


@dataclass
class Target:
    """Where a client goes: straight to the origin, or through one proxy (and how to trust its TLS)."""

    name: str
    proxy: run.Proxy | None
    tls: ssl.SSLContext

    @property
    def pid(self) -> int | None:
        return self.proxy.managed.proc.pid if self.proxy is not None else None


def client_tls(cafile: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def start_target(name: str, work: Path, origin: StreamOrigin, attempts: int = 3) -> Target:
    """A proxy started as run.py starts it, still alive a moment later: a port probed free can be taken by
    another process before the proxy binds it, and then the readiness probe meets that process, not ours."""
    if name == "direct":
        return Target(name, None, client_tls(origin.ca_cert))
    for _ in range(attempts):
        bench = origin.bench_origin()
        if name == "mitmdump":
            proxy = run.start_mitmdump(work, bench, None)
        else:
            # run.py's "egressproxy-nocapture" is the routing-only gateway; its "egressproxy" has captures on;
            # "-untuned" leaves glibc malloc at its defaults (egressproxy/runtime/allocator.py).
            base = "egressproxy" if name.startswith("egressproxy-capture") else "egressproxy-nocapture"
            proxy = run.start_gateway(work, bench, None, base + ("-untuned" if name.endswith("-untuned") else ""))
        time.sleep(0.5)
        if proxy.managed.alive():
            return Target(name, proxy, client_tls(proxy.ca_cert))
    raise RuntimeError(f"{name} exited after start-up, {attempts} times:\n{proxy.managed.tail()}")


def check_alive(target: Target) -> None:
    """Measure only our own proxy: one that died must not leave its port to whatever binds it next."""
    if target.proxy is not None and not target.proxy.managed.alive():
        raise RuntimeError(f"{target.name} died (exit {target.proxy.managed.proc.returncode}):\n"
                           f"{target.proxy.managed.tail()}")


# --- one client connection ------------------------------------------------------------------------------------


class Conn:
    """One HTTP/1.1 connection to the origin, direct or through a proxy (CONNECT + TLS for https)."""

    def __init__(self, target: Target, scheme: str, origin: StreamOrigin) -> None:
        self.target, self.scheme = target, scheme
        port = origin.https_port if scheme == "https" else origin.http_port
        self.authority = f"127.0.0.1:{port}"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        proxy = self.target.proxy
        host, port = ("127.0.0.1", proxy.port) if proxy else ("127.0.0.1", int(self.authority.rsplit(":", 1)[1]))
        reader, writer = await asyncio.open_connection(host, port, limit=4 * MIB)
        if self.scheme == "https":
            if proxy is not None:
                writer.write(f"CONNECT {self.authority} HTTP/1.1\r\nHost: {self.authority}\r\n\r\n".encode())
                status, _ = await read_connect(reader)
                if status != 200:
                    writer.close()
                    raise BadResponse(f"CONNECT answered {status}")
            await writer.start_tls(self.target.tls, server_hostname="127.0.0.1")
        self.reader, self.writer = reader, writer

    def send(self, path: str) -> None:
        absolute = self.target.proxy is not None and self.scheme == "plain"
        line = f"GET {'http://' + self.authority if absolute else ''}{path} HTTP/1.1"
        assert self.writer is not None
        self.writer.write(f"{line}\r\nHost: {self.authority}\r\nAccept: */*\r\n\r\n".encode())

    async def get(self, path: str) -> None:
        """One request, the whole response read."""
        if self.writer is None:
            await self.open()
        self.send(path)
        assert self.reader is not None
        status, closing = await read_response(self.reader)
        if status != 200:
            raise BadResponse(f"status {status}")
        if closing:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def bounded(coros: list[Callable[[], Awaitable[None]]], at_once: int = OPEN_AT_ONCE) -> int:
    """Run the factories, `at_once` at a time; the number that failed."""
    gate = asyncio.Semaphore(at_once)
    failed = 0

    async def one(factory: Callable[[], Awaitable[None]]) -> None:
        nonlocal failed
        async with gate:
            try:
                await asyncio.wait_for(factory(), 30)
            except (OSError, EOFError, asyncio.IncompleteReadError, BadResponse, ssl.SSLError, ValueError,
                    TimeoutError):
                failed += 1

    await asyncio.gather(*(one(f) for f in coros))
    return failed


# --- part 1: downloads ----------------------------------------------------------------------------------------


@dataclass
class Download:
    target: str
    scheme: str
    mb_s: float
    bodies: int
    errors: int
    rss_before_mib: float
    peak_rss_mib: float
    after_rss_mib: float = 0.0  # the lowest over --settle s after the run (0: not measured)


async def downloads_once(target: Target, scheme: str, origin: StreamOrigin, args: argparse.Namespace) -> Download:
    pid = target.pid if target.pid is not None else origin.managed.proc.pid
    before = rss_kib(pid)
    counts = {"ok": 0, "err": 0}
    end = time.monotonic() + args.duration

    async def client() -> None:
        conn = Conn(target, scheme, origin)
        while time.monotonic() < end:
            try:
                await conn.get(f"/big?size={args.size}")
                counts["ok"] += 1
            except (OSError, EOFError, asyncio.IncompleteReadError, BadResponse, ssl.SSLError, ValueError):
                counts["err"] += 1
                conn.close()
                await asyncio.sleep(0.02)
        conn.close()

    with PeakRss(pid) as peak:
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(client() for _ in range(args.clients))), args.duration + 30)
        elapsed = time.monotonic() - started
    return Download(target.name, scheme, counts["ok"] * args.size / MIB / elapsed, counts["ok"], counts["err"],
                    before / KIB, peak.peak / KIB)


def part_downloads(targets: list[Target], origin: StreamOrigin, args: argparse.Namespace) -> list[Download]:
    out = []
    for scheme in args.scheme_list:
        for i in range(args.runs):
            for target in targets:  # alternating, so drift on the machine falls on every proxy
                check_alive(target)
                d = asyncio.run(downloads_once(target, scheme, origin, args))
                d.after_rss_mib = lowest_rss(target.pid or origin.managed.proc.pid, args.settle) / KIB
                print(f"downloads {scheme:<5} run {i + 1} {d.target:<19} {d.mb_s:7.1f} MB/s  {d.bodies} bodies  "
                      f"errors {d.errors}  RSS before {d.rss_before_mib:6.1f} MiB  peak {d.peak_rss_mib:6.1f} MiB  "
                      f"after {d.after_rss_mib:6.1f} MiB", flush=True)
                out.append(d)
    return out


# --- part 2: time to the first SSE byte -----------------------------------------------------------------------


async def first_event_ms(conn: Conn, first_ms: int) -> tuple[float, float]:
    """One /sse request on `conn`: ms from writing it to the response head and to the first byte of the first
    event (the origin sends its head at once, the event `first_ms` later); the rest of the stream is read."""
    if conn.writer is None:
        await conn.open()
    assert conn.reader is not None
    started = time.perf_counter()
    conn.send(f"/sse?first={first_ms}&every=500&count=3")
    seen, head_ms = b"", None
    while b"data:" not in seen.partition(b"\r\n\r\n")[2]:
        more = await conn.reader.read(65536)
        if not more:
            raise BadResponse("closed before the first event")
        seen += more
        if head_ms is None and b"\r\n\r\n" in seen:
            head_ms = (time.perf_counter() - started) * 1000
    took = (time.perf_counter() - started) * 1000
    while not seen.endswith(b"0\r\n\r\n"):  # the rest of this (chunked) stream, so the connection is reusable
        more = await conn.reader.read(65536)
        if not more:
            raise BadResponse("closed inside the stream")
        seen += more
    return head_ms if head_ms is not None else took, took


Samples = dict[tuple[str, str], list[tuple[float, float]]]


def part_sse(targets: list[Target], origin: StreamOrigin, args: argparse.Namespace) -> Samples:
    samples: Samples = {}
    for scheme in args.scheme_list:

        async def go() -> None:
            conns = {t.name: Conn(t, scheme, origin) for t in targets}
            for conn in conns.values():  # warm: connection, tunnel, certificates, upstream
                await asyncio.wait_for(first_event_ms(conn, 1), 30)
            for _ in range(args.sse_samples):
                for t in targets:
                    check_alive(t)
                    took = await asyncio.wait_for(first_event_ms(conns[t.name], args.sse_first), 30)
                    samples.setdefault((t.name, scheme), []).append(took)
            for conn in conns.values():
                conn.close()

        asyncio.run(go())
        for t in targets:
            got = sorted(e for _, e in samples[(t.name, scheme)])
            head = statistics.median(h for h, _ in samples[(t.name, scheme)])
            print(f"sse {scheme:<5} {t.name:<19} first event {statistics.median(got):8.2f} ms (median of {len(got)}; "
                  f"min {got[0]:.2f}, max {got[-1]:.2f}; head {head:.2f} ms), the origin waits {args.sse_first} ms",
                  flush=True)
    return samples


# --- part 3: idle streams and connections ---------------------------------------------------------------------


def origin_stats(origin: StreamOrigin) -> dict[str, int]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", origin.http_port, timeout=5)
    try:
        conn.request("GET", "/stats")
        return dict(json.loads(conn.getresponse().read()))
    finally:
        conn.close()


def wait_stats(origin: StreamOrigin, kind: str, want: Callable[[int], bool], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    n = origin_stats(origin)[kind]
    while not want(n) and time.monotonic() < deadline:
        time.sleep(0.1)
        n = origin_stats(origin)[kind]
    return n


@dataclass
class Idle:
    target: str
    scheme: str
    kind: str  # "sse" or "keepalive"
    wanted: int
    held: int
    failed: int
    before_kib: int
    after_kib: int
    closed_kib: int

    @property
    def per_kib(self) -> float:
        return (self.after_kib - self.before_kib) / self.held if self.held else 0.0


async def open_idle(target: Target, scheme: str, origin: StreamOrigin, kind: str, n: int, first_event: bool) -> tuple[list[Conn], int]:
    conns = [Conn(target, scheme, origin) for _ in range(n)]

    async def sse(conn: Conn) -> None:
        await conn.open()
        conn.send("/idle")
        if first_event:  # a streaming proxy passes the first event on; a buffering one holds it
            assert conn.reader is not None
            seen = b""
            while b"data:" not in seen:
                more = await conn.reader.read(4096)
                if not more:
                    raise BadResponse("closed")
                seen += more

    async def keepalive(conn: Conn) -> None:
        await conn.get("/small")

    opener = sse if kind == "sse" else keepalive
    failed = await bounded([(lambda c=c: opener(c)) for c in conns])  # type: ignore[misc]
    return conns, failed


def idle_once(name: str, work: Path, origin: StreamOrigin, scheme: str, kind: str, args: argparse.Namespace) -> Idle:
    target = start_target(name, work, origin)
    stat = "idle" if kind == "sse" else "small"
    try:
        pid = target.pid if target.pid is not None else origin.managed.proc.pid

        async def go() -> Idle:
            warm, _ = await open_idle(target, scheme, origin, kind, 20, name != "mitmdump")
            for c in warm:
                c.close()
            await asyncio.to_thread(wait_stats, origin, stat, lambda v: v == 0, 10)
            before = await asyncio.to_thread(settled_rss, pid)
            conns, failed = await open_idle(target, scheme, origin, kind, args.streams, name != "mitmdump")
            held = await asyncio.to_thread(wait_stats, origin, stat, lambda v: v >= args.streams - failed, 20)
            after = await asyncio.to_thread(settled_rss, pid)
            check_alive(target)
            for c in conns:
                c.close()
            await asyncio.to_thread(wait_stats, origin, stat, lambda v: v == 0, 20)
            closed = await asyncio.to_thread(settled_rss, pid)
            return Idle(name, scheme, kind, args.streams, held, failed, before, after, closed)

        result = asyncio.run(go())
    finally:
        if target.proxy is not None:
            target.proxy.managed.stop()
    print(f"idle {kind:<9} {scheme:<5} {name:<19} {result.held}/{result.wanted} held ({result.failed} failed)  "
          f"RSS {result.before_kib / KIB:6.1f} -> {result.after_kib / KIB:6.1f} MiB "
          f"(after closing {result.closed_kib / KIB:6.1f})  {result.per_kib:6.1f} KiB each", flush=True)
    return result


def part_idle(names: list[str], work: Path, origin: StreamOrigin, args: argparse.Namespace) -> list[Idle]:
    return [idle_once(name, work, origin, scheme, kind, args)
            for kind in args.kind_list for scheme in args.scheme_list for name in names if name != "direct"]


# --- report ---------------------------------------------------------------------------------------------------


def report(downloads: list[Download], sse: Samples, idle: list[Idle],
           args: argparse.Namespace) -> None:
    if downloads:
        rows = []
        for key in dict.fromkeys((d.scheme, d.target) for d in downloads):
            ds = [d for d in downloads if (d.scheme, d.target) == key]
            rows.append([key[0], key[1], f"{statistics.median(d.mb_s for d in ds):.0f}",
                         "/".join(f"{d.mb_s:.0f}" for d in ds), str(sum(d.errors for d in ds)),
                         f"{min(d.rss_before_mib for d in ds):.0f}", f"{max(d.peak_rss_mib for d in ds):.0f}",
                         "/".join(f"{d.after_rss_mib:.0f}" for d in ds)])
        print(f"\n{args.clients} clients downloading {args.size // KIB} KiB bodies ({args.duration:g} s per run; "
              "direct: RSS is the origin's)")
        print(run._grid(["scheme", "proxy", "MB/s", "runs MB/s", "errors", "RSS before MiB", "peak RSS MiB",
                         f"RSS {args.settle:g} s after, MiB"], rows))
    if sse:
        direct = {s: statistics.median(e for _, e in v) for (n, s), v in sse.items() if n == "direct"}
        rows = []
        for (name, scheme), values in sse.items():
            med = statistics.median(e for _, e in values)
            head = statistics.median(h for h, _ in values)
            vs = f"{med - direct[scheme]:+.2f}" if scheme in direct else "-"
            gap = statistics.median(e - h for h, e in values) - args.sse_first
            rows.append([scheme, name, f"{head:.2f}", f"{med:.2f}", f"{med - args.sse_first:.2f}", vs, f"{gap:.2f}"])
        print(f"\ntime to the first SSE event (origin delay {args.sse_first} ms; medians of {args.sse_samples}; "
              "head: time to the response head, which the origin sends at once; event after head: the event's "
              "own trip, what is left of (event - head) after the origin's delay)")
        print(run._grid(["scheme", "proxy", "head ms", "first event ms", "minus origin delay", "vs direct ms",
                         "event after head ms"], rows))
    if idle:
        rows = [[i.kind, i.scheme, i.target, f"{i.held}/{i.wanted}", f"{i.before_kib / KIB:.1f}",
                 f"{i.after_kib / KIB:.1f}", f"{i.closed_kib / KIB:.1f}", f"{i.per_kib:.1f}"] for i in idle]
        print("\nidle streams (sse) and idle keep-alive connections, a fresh proxy each")
        print(run._grid(["kind", "scheme", "proxy", "held", "RSS before MiB", "RSS held MiB", "after close MiB",
                         "KiB each"], rows))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)} (default all)")
    p.add_argument("--proxies", default=",".join(PROXIES[:4]),
                   help=f"comma-separated, of {', '.join(PROXIES)} (default the first four)")
    p.add_argument("--schemes", default=",".join(SCHEMES), help="plain, https or both (default both)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per download run (default 3)")
    p.add_argument("--runs", type=int, default=1, help="download runs per proxy and scheme, alternating (default 1)")
    p.add_argument("--clients", type=int, default=10, help="concurrent downloads (default 10)")
    p.add_argument("--settle", type=float, default=0.0,
                   help="downloads: also the lowest RSS over this many s after each run (default 0: not measured)")
    p.add_argument("--size", type=int, default=MIB, help="download body bytes (default 1 MiB)")
    p.add_argument("--sse-first", type=int, default=100, help="ms the origin waits before the first event")
    p.add_argument("--sse-samples", type=int, default=5, help="first-event samples per proxy and scheme")
    p.add_argument("--kinds", default="sse,keepalive", help="idle: sse, keepalive or both (default both)")
    p.add_argument("--json", type=Path, help="also write every figure to this file")
    p.add_argument("--streams", type=int, default=1000, help="idle streams / keep-alive connections (default 1000)")
    args = p.parse_args(argv)
    args.part_list = [x.strip() for x in args.parts.split(",") if x.strip()]
    args.proxy_list = [x.strip() for x in args.proxies.split(",") if x.strip()]
    args.scheme_list = [x.strip() for x in args.schemes.split(",") if x.strip()]
    bad = [x for x in args.part_list if x not in PARTS] + [x for x in args.proxy_list if x not in PROXIES]
    args.kind_list = [x.strip() for x in args.kinds.split(",") if x.strip()]
    bad += [x for x in args.scheme_list if x not in SCHEMES] + [x for x in args.kind_list if x not in KINDS]
    if bad or not (args.part_list and args.proxy_list and args.scheme_list and args.kind_list):
        p.error(f"unknown or missing part/proxy/scheme/kind: {', '.join(bad) or '(none given)'}")
    if not (0 < args.duration <= 60 and 1 <= args.runs <= 10 and 1 <= args.clients <= 100
            and 1 <= args.size <= 64 * MIB and 1 <= args.streams <= 5000 and 1 <= args.sse_samples <= 50
            and 0 <= args.sse_first <= 5000 and 0 <= args.settle <= 30):
        p.error("out of bounds: --duration (0, 60], --settle [0, 30], --runs [1, 10], --clients [1, 100], --size [1, 64 MiB], "
                "--streams [1, 5000], --sse-samples [1, 50], --sse-first [0, 5000]")
    return args


def raise_nofile(streams: int) -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: a proxy holds two sockets per stream, the client and origin one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if min(hard, 1 << 20) < 2 * streams + 200:
        print(f"WARNING: RLIMIT_NOFILE hard limit {hard} is below what {streams} streams need", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile(args.streams)
    info = run.versions()
    print(f"# egressproxy streams and memory, {info['date']}: nproc {info['nproc']}, Python {info['python']}, "
          f"mitmproxy {info['mitmproxy']}, {info['machine']}")
    print(f"# python loadtest/streams.py {' '.join(argv if argv is not None else sys.argv[1:])}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="egressproxy-streams-"))
    started: list[run.Managed] = []
    downloads: list[Download] = []
    sse: Samples = {}
    idle: list[Idle] = []
    try:
        origin = start_origin(work)
        started.append(origin.managed)
        if "downloads" in args.part_list or "sse" in args.part_list:
            targets = [start_target(name, work, origin) for name in args.proxy_list]
            started.extend(t.proxy.managed for t in targets if t.proxy is not None)
            if "downloads" in args.part_list:
                downloads = part_downloads(targets, origin, args)
            if "sse" in args.part_list:
                sse = part_sse([t for t in targets if not t.name.startswith("egressproxy-capture")], origin, args)
            for t in targets:
                if t.proxy is not None:
                    t.proxy.managed.stop()
        if "idle" in args.part_list:
            idle = part_idle([n for n in args.proxy_list if not n.startswith("egressproxy-capture")], work, origin, args)
    finally:
        for managed in reversed(started):
            managed.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    report(downloads, sse, idle, args)
    if args.json:
        args.json.write_text(json.dumps({
            "info": info, "argv": argv if argv is not None else sys.argv[1:],
            "downloads": [d.__dict__ for d in downloads],
            "sse": [{"proxy": n, "scheme": s, "head_ms": [h for h, _ in v], "first_event_ms": [e for _, e in v]}
                    for (n, s), v in sse.items()],
            "sse_origin_delay_ms": args.sse_first,
            "idle": [{**i.__dict__, "per_kib": i.per_kib} for i in idle],
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
