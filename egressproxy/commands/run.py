"""`egressproxy run`: load and compile the configuration, then serve it with the embedded mitmproxy."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from egressproxy.ca import GatewayCAStore
from egressproxy.runtime.allocator import glibc_malloc, trim_forever, tune_allocator
from egressproxy.runtime.heap import settle as settle_heap
from egressproxy.runtime.logs import setup_logging
from egressproxy.runtime.reloader import ConfigSource, Reloader
from egressproxy.runtime.state import GatewayState

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from egressproxy.runtime.fleet_readiness import FleetReadiness
    from egressproxy.runtime.reloader import BuildResult
    from egressproxy.runtime.udp_relay import TransparentUdpRelay
    from egressproxy.runtime.worker_reports import FleetReload
    from egressproxy.runtime.workers import Supervisor

log = logging.getLogger("egressproxy")

DEFAULT_MODE = "regular@127.0.0.1:8080"
# How long POST /reload on worker 0 waits for the other workers to apply the same files.
WORKER_RELOAD_WAIT_SECONDS = 10.0


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    tune_allocator(glibc_malloc())  # before the helper threads start (runtime/allocator.py)
    if args.workers < 1:
        log.error("--workers must be at least 1")
        return 2
    if args.event_loop == "uvloop":
        import uvloop

        return uvloop.run(serve(args))
    # asyncio's own loop by default: under uvloop a burst of new connections was answered one after another
    # (CONNECT answers spread over 23-640 ms for 50 tunnels opened at once, against 61-142 ms here and under
    # mitmdump), which made Go clients abandon their dials and lose keep-alive (docs/performance.md, issue 16).
    return asyncio.run(serve(args))


async def serve(args: argparse.Namespace) -> int:
    from egressproxy.admin_access import AdminAccess
    from egressproxy.runtime.admin import SidePortUnavailable, start_side_servers
    from egressproxy.runtime.drain import Drain
    from egressproxy.engine.mitmproxy_boundary import UnsafeOptions
    from egressproxy.runtime.master import build_master

    modes = args.mode or [DEFAULT_MODE]
    worker = args.worker_index
    if args.workers > 1 and worker:
        from egressproxy.runtime.workers import worker_modes

        modes = worker_modes(modes)
    state = GatewayState(Path(args.data_dir), worker=worker)
    # A Terminate listener without caCertRef gets its gateway's CA from --data-dir (minted there on first start),
    # in the loader's thread, before serving and on every reload. --dry-run writes nothing, like validate.
    cas = GatewayCAStore(args.data_dir) if not args.dry_run else None
    reloader = Reloader(ConfigSource(tuple(args.config), args.gateway, args.secrets_dir, cas), state)
    first = await asyncio.to_thread(reloader.load_initial)
    if not first.ok:
        for problem in first.problems:
            print(problem, file=sys.stderr)
        log.error("configuration invalid: %d problem(s); not starting", len(first.problems))
        return 1
    snapshot = state.snapshot
    assert snapshot is not None
    if args.dry_run:
        print(describe(snapshot, modes))
        return 0

    try:
        master, ours = build_master(
            modes, state, reloader, reuse_port=args.workers > 1, cert_cache_size=args.cert_cache_size
        )
    except UnsafeOptions as e:
        log.error("%s", e)
        return 1
    ours.upstream_trust.apply(await asyncio.to_thread(ours.prepare_blocking))
    captures = None
    if args.captures:
        from egressproxy.runtime.captures import start_captures

        captures = start_captures(state, max_age=args.captures_max_age, max_bytes=args.captures_max_size)
    supervisor = None
    fleet = None
    side = []
    udp_relays: list[TransparentUdpRelay] = []
    if not worker:
        if args.workers > 1:
            from egressproxy.rate_limiter import local_store_warning
            from egressproxy.runtime.workers import Supervisor

            warning = local_store_warning(snapshot.compiled.rate_limits, args.workers)
            if warning is not None:  # worker 0 speaks for all, once, at start
                log.warning("%s", warning)

            from egressproxy.runtime.worker_reports import clear_reports

            await asyncio.to_thread(clear_reports, args.data_dir)
            supervisor = Supervisor(sys.argv[1:], args.workers)
            reloader.on_swap.append(_pass_reload_on(supervisor))
            fleet = _fleet_readiness(reloader, supervisor, args.data_dir)
        reload = reloader.reload if supervisor is None else _reload_everywhere(reloader, supervisor, args.data_dir)
        try:
            side = start_side_servers(
                state, reload, args.admin_addr, args.ready_addr, args.metrics_addr,
                AdminAccess(tuple(args.admin_allow_cidr)), fleet,
            )
        except SidePortUnavailable as e:
            log.error("%s", e)
            return 1
        udp_relays = start_udp_relays(state, modes)
    report = _report_applied(args.data_dir, worker, reloader)
    if worker:  # workers 1..N-1 tell worker 0 what they serve: its POST /reload and /ready answer for all
        await report()
        reloader.on_swap.append(report)
        ours.readiness.on_bound.append(lambda: _report_soon(report))
    reloader.start()
    reloader.on_swap.append(_settle_heap)
    settle_heap("start-up")  # start-up's objects out of the collector's full passes (runtime/heap.py)
    loop = asyncio.get_running_loop()
    malloc = glibc_malloc()  # freed read buffers back to the system every few seconds (runtime/allocator.py)
    trimmer = loop.create_task(trim_forever(malloc)) if malloc is not None else None
    # In-flight requests finish before mitmproxy is told to exit; /ready answers 503 meanwhile.
    drain = Drain(master, args.drain_seconds, on_stop=_on_drain(state, report if worker else None))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, drain.request)
    log.info(
        "serving gateway %s (generation %d) from %s",
        f"{snapshot.gateway.ref.namespace}/{snapshot.gateway.ref.name}",
        snapshot.generation,
        ", ".join(args.config),
    )
    try:
        if supervisor is not None:
            supervisor.start()
        await master.run()
    finally:
        if trimmer is not None:
            trimmer.cancel()
        if supervisor is not None:
            await supervisor.stop()
        reloader.stop()
        for relay in udp_relays:
            relay.stop()
        for server in side:
            server.stop()
        state.finishing.flush()  # records finished after their response was written, not yet run (deferred_work.py)
        await asyncio.to_thread(ours.stop_sinks)  # deliver the access-log lines and spans still queued
        if captures is not None:
            await asyncio.to_thread(captures.close)
    return 0 if not ours.readiness.failed else 1


async def _settle_heap() -> None:
    settle_heap("reload")


def _pass_reload_on(supervisor: "Supervisor") -> "Callable[[], Awaitable[None]]":
    """After worker 0 reloads, the other workers reload too (each reads the files itself)."""

    async def on_swap() -> None:
        supervisor.signal_all(signal.SIGHUP)

    return on_swap


def _report_applied(data_dir: str, index: int, reloader: Reloader) -> "Callable[[], Awaitable[None]]":
    """A worker's report of the configuration it serves now and whether it is ready (after its first load, once
    its listeners are bound, after every accepted reload and when it starts draining)."""
    from egressproxy.runtime.worker_reports import LOADED, READY, STOPPING, AppliedConfig, write_report

    one_at_a_time = asyncio.Lock()  # writes share a temporary file, and the last one written must be the newest

    async def report() -> None:
        async with one_at_a_time:
            state = reloader.state
            generation = state.snapshot.generation if state.snapshot is not None else 0
            status = STOPPING if state.stopping else READY if state.ready else LOADED
            applied = AppliedConfig(os.getpid(), generation, reloader.applied_fingerprint, status)
            await asyncio.to_thread(write_report, data_dir, index, applied)

    return report


_pending_reports: set[asyncio.Future[None]] = set()


def _report_soon(report: "Callable[[], Awaitable[None]]") -> None:
    """From a synchronous hook: write the report on the loop (a reference kept until it is done)."""
    task = asyncio.ensure_future(report())
    _pending_reports.add(task)
    task.add_done_callback(_pending_reports.discard)


def _on_drain(state: GatewayState, report: "Callable[[], Awaitable[None]] | None") -> "Callable[[], None]":
    """The drain starts: /ready answers 503 from now on (and worker 0 learns it, for a worker 1..N-1)."""

    def stop() -> None:
        state.stopping = True
        if report is not None:
            _report_soon(report)

    return stop


def _fleet_readiness(reloader: Reloader, supervisor: "Supervisor", data_dir: str) -> "FleetReadiness":
    from egressproxy.runtime.fleet_readiness import FleetReadiness

    return FleetReadiness(data_dir, supervisor.processes, lambda: reloader.applied_fingerprint)


def _reload_everywhere(
    reloader: Reloader, supervisor: "Supervisor", data_dir: str
) -> "Callable[[], Awaitable[BuildResult | FleetReload]]":
    """POST /reload with workers: worker 0 reloads (which signals the others), then waits until every live worker
    reports the same files applied. Without the wait, a client's next connection could reach a worker still on the
    older generation after the newer one had answered it."""
    from egressproxy.runtime.worker_reports import FleetReload, wait_applied

    async def reload() -> "BuildResult | FleetReload":
        result = await reloader.reload()
        if not result.ok:
            return result
        live = supervisor.live_pids()
        others = await wait_applied(data_dir, live, reloader.applied_fingerprint, WORKER_RELOAD_WAIT_SECONDS)
        workers = {0: reloader.state.snapshot.generation if reloader.state.snapshot else None, **others}
        not_running = tuple(index for index in range(1, supervisor.count) if index not in live)
        fleet = FleetReload(result, workers, WORKER_RELOAD_WAIT_SECONDS, not_running)
        if fleet.lagging:
            log.warning("%s", "; ".join(fleet.problems))
        return fleet

    return reload


def mode_address(mode: str, default_port: int = 8080) -> tuple[str, int]:
    """`transparent@127.0.0.1:15001` -> ("127.0.0.1", 15001); `transparent@15001` -> ("0.0.0.0", 15001)."""
    _, _, listen = mode.partition("@")
    host, sep, port = listen.rpartition(":")
    if not sep:
        host, port = "", listen
    return (host.strip("[]") or "0.0.0.0", int(port) if port.isdigit() else default_port)


def start_udp_relays(state: GatewayState, modes: list[str]) -> list["TransparentUdpRelay"]:
    """Transparent modes also take UDP steered by TPROXY to the same port (when the process may)."""
    from egressproxy.runtime.udp_relay import TransparentUdpRelay

    relays: list[TransparentUdpRelay] = []
    snapshot = state.snapshot
    if snapshot is None or not any(listener.protocol == "UDP" for listener in snapshot.gateway.listeners):
        return relays  # no UDP listener: nothing to relay, and no privilege to ask for
    for mode in modes:
        if mode.startswith("transparent"):
            relay = TransparentUdpRelay(state, *mode_address(mode))
            if relay.start():
                relays.append(relay)
    return relays


def describe(snapshot: object, modes: list[str]) -> str:
    gateway = snapshot.gateway  # type: ignore[attr-defined]
    lines = [f"gateway {gateway.ref.namespace}/{gateway.ref.name}: defaultPolicy {gateway.default_policy}"]
    for listener in gateway.listeners:
        port = listener.port if listener.port is not None else "any"
        lines.append(f"  listener {listener.name}: {listener.protocol} port {port}")
    lines.append("modes: " + ", ".join(modes))
    return "\n".join(lines)
