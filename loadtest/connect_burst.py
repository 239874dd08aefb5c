"""N clients open a passthrough tunnel at the same instant: when does each CONNECT answer come, when is TLS done?

    python loadtest/connect_burst.py [--clients 50] [--rounds 2]

Go's HTTP transport (hey, issue 16) keeps its connections only when a burst of dials all finish before the
first requests free a connection: a proxy that answers CONNECTs one after another, rather than together, hands the
first clients their tunnels early and the rest are abandoned (docs/performance.md, "Keep-alive under 50
concurrent Go clients"). This prints, per proxy and round, the spread of CONNECT answers and of completed TLS
handshakes (ms after the burst started). Starts its own origin, gateway and mitmdump (loadtest/run.py's), on
loopback; bounded (one burst per round, 30 s timeout each).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import ssl
import sys
import tempfile
import time
from pathlib import Path

import run  # loadtest/run.py: re-runs itself under the project's .venv when needed


async def _one(port: int, target: str, ctx: ssl.SSLContext, t0: float) -> tuple[float, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    await reader.readuntil(b"\r\n\r\n")
    answered = time.perf_counter() - t0
    await writer.start_tls(ctx, server_hostname="127.0.0.1")
    done = time.perf_counter() - t0
    writer.close()
    return answered * 1000, done * 1000


async def burst(port: int, target: str, ca: Path, clients: int) -> str:
    ctx = ssl.create_default_context(cafile=str(ca))
    t0 = time.perf_counter()
    results = await asyncio.wait_for(asyncio.gather(*[_one(port, target, ctx, t0) for _ in range(clients)]), 30)
    answered, done = sorted(a for a, _ in results), sorted(d for _, d in results)
    mid = clients // 2
    return (f"CONNECT answered min {answered[0]:.0f} p50 {answered[mid]:.0f} max {answered[-1]:.0f} ms; "
            f"TLS done min {done[0]:.0f} p50 {done[mid]:.0f} max {done[-1]:.0f} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    if not (1 <= args.clients <= 500 and 1 <= args.rounds <= 20):
        p.error("--clients in [1, 500], --rounds in [1, 20]")
    work = Path(tempfile.mkdtemp(prefix="egressproxy-burst-"))
    started: list[run.Managed] = []
    try:
        origin = run.start_origin(work, 64)
        started.append(origin.managed)
        proxies = [run.start_proxy(name, work, origin, None) for name in ("egressproxy", "mitmdump")]
        started += [proxy.managed for proxy in proxies]
        target = f"127.0.0.1:{origin.passthrough_port}"
        for i in range(args.rounds):
            for proxy in proxies:  # alternating, as run.py does
                line = asyncio.run(burst(proxy.port, target, origin.ca_cert, args.clients))
                print(f"round {i + 1} {proxy.name:<11} {args.clients} tunnels: {line}", flush=True)
                time.sleep(0.5)
    finally:
        for managed in reversed(started):
            managed.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
