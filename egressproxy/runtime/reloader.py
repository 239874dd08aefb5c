"""Loading, compiling and hot-reloading the configuration.

Reading files and compiling run in a worker thread; only the final reference swap happens on the event loop.
A configuration that fails validation never replaces a working one: its problems are logged, counted in
`egress_config_reloads_total{result="rejected"}` and shown by the admin port's /stats.

A configuration that is served may still set fields this build does not enforce (honest status, DESIGN.md
section 6): each such object gets one warning at start and on every accepted reload, naming its fields, so an
operator reading the log never takes a rate limit or an injected credential for one in force.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from egressproxy.ca import GatewayCAStore
from egressproxy.compiler import compile_config
from egressproxy.compiler.enforcement import unsupported_message
from egressproxy.config.loader import config_files, load_paths
from egressproxy.runtime.state import GatewayState, ReloadStatus
from egressproxy.snapshot import Snapshot

__all__ = ["ConfigSource", "BuildResult", "Reloader", "warn_unsupported"]

log = logging.getLogger("egressproxy")


def warn_unsupported(snapshot: Snapshot, logger: logging.Logger = log) -> None:
    """One warning per object that sets fields this build validates but does not enforce."""
    for ref, paths in snapshot.unsupported.items():
        logger.warning("%s is not enforced in full (Programmed=False, Unsupported): %s", ref, unsupported_message(paths))


@dataclass(frozen=True)
class BuildResult:
    snapshot: Snapshot | None
    problems: tuple[str, ...]
    files: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.snapshot is not None and not self.problems


@dataclass(frozen=True)
class ConfigSource:
    paths: tuple[str, ...]
    gateway: str | None = None
    secrets_dir: str | None = None
    # Reads or mints the CA of a Terminate listener without caCertRef (under --data-dir); None writes nothing.
    gateway_cas: GatewayCAStore | None = field(default=None, compare=False)

    def build(self, generation: int) -> BuildResult:
        """Load, validate and compile (blocking: call it from a worker thread)."""
        loaded = load_paths(self.paths)
        problems = [str(p) for p in loaded.problems]
        if problems:
            return BuildResult(None, tuple(problems), tuple(loaded.files))
        compiled = compile_config(
            loaded.resources,
            gateway_name=self.gateway,
            secrets_dir=self.secrets_dir,
            generation=generation,
            gateway_cas=self.gateway_cas,
        )
        problems = [str(p) for p in compiled.problems]
        snapshot = compiled.snapshot if not problems else None
        return BuildResult(snapshot, tuple(problems), tuple(loaded.files))

    def fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        """Sizes and mtimes of every config and secret file (blocking: call it from a worker thread)."""
        files, _ = config_files(self.paths)
        if self.secrets_dir and os.path.isdir(self.secrets_dir):
            for root, _dirs, names in os.walk(self.secrets_dir, followlinks=True):
                files.extend(os.path.join(root, n) for n in names)
        out = []
        for f in sorted(files):
            try:
                st = Path(f).stat()
            except OSError:
                continue
            out.append((f, st.st_mtime_ns, st.st_size))
        return tuple(out)


def fingerprint_digest(fingerprint: tuple[tuple[str, int, int], ...]) -> str:
    return hashlib.sha256(repr(fingerprint).encode()).hexdigest()


class Reloader:
    def __init__(self, source: ConfigSource, state: GatewayState, poll_interval: float = 1.0) -> None:
        self.source = source
        self.state = state
        self.poll_interval = poll_interval
        self._generation = 0
        self._lock = asyncio.Lock()
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()
        # Digest of the files (paths, sizes, mtimes) the snapshot now served was built from: how workers tell
        # worker 0 which configuration they applied (runtime/worker_reports.py).
        self.applied_fingerprint = ""
        self._task: asyncio.Task[None] | None = None
        # Coroutines run after every accepted reload (certificate preloads, trust bundle files, ...).
        self.on_swap: list[Callable[[], Awaitable[None]]] = []

    def load_initial(self) -> BuildResult:
        """The first load, before the proxy starts (blocking is fine here)."""
        self._fingerprint = self.source.fingerprint()
        self._generation += 1
        result = self.source.build(self._generation)
        self._record(result)
        return result

    async def reload(self, reason: str = "request") -> BuildResult:
        async with self._lock:
            self._fingerprint = await asyncio.to_thread(self.source.fingerprint)
            result = await asyncio.to_thread(self.source.build, self._generation + 1)
            self._record(result)
            if result.ok:
                for callback in self.on_swap:
                    await callback()
                log.info("configuration reloaded (%s): generation %d", reason, self._generation)
            else:
                log.error(
                    "configuration rejected (%s); still serving generation %d:\n  %s",
                    reason,
                    self._generation,
                    "\n  ".join(result.problems),
                )
            return result

    def _record(self, result: BuildResult) -> None:
        metrics = self.state.metrics
        if result.ok and result.snapshot is not None:
            self._generation = result.snapshot.generation
            self.applied_fingerprint = fingerprint_digest(self._fingerprint)
            self.state.swap(result.snapshot)
            if not self.state.worker:  # worker 0 speaks for all: one warning per object, not one per process
                warn_unsupported(result.snapshot)
            metrics.config_reloads.labels("accepted").inc()
            metrics.config_last_reload_success.set(1)
        else:
            metrics.config_reloads.labels("rejected").inc()
            metrics.config_last_reload_success.set(0)
        self.state.last_reload = ReloadStatus(self._generation, result.ok, result.problems, result.files)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload("SIGHUP")))
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (mitmweb) or no signals
            pass
        self._task = asyncio.ensure_future(self._watch())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                current = await asyncio.to_thread(self.source.fingerprint)
                if current != self._fingerprint:
                    await self.reload("files changed")
            except asyncio.CancelledError:
                raise
            except Exception:  # keep watching whatever one attempt did
                log.exception("configuration watch failed")
