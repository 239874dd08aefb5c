"""`--workers N`: N processes serving the same proxy ports (SO_REUSEPORT), one of them the supervisor.

Worker 0 is the process the operator started: it binds the side ports (admin, readiness, metrics), the DNS
listener and the transparent UDP relay, and supervises workers 1..N-1, which serve only the TCP proxy ports.
Every worker loads, validates and watches the configuration itself; a reload asked of worker 0 (POST /reload,
SIGHUP) is passed on as SIGHUP, and POST /reload answers once every worker reports it applied the same files
(runtime/worker_reports.py). Metrics are Prometheus multi-process: each worker writes its counters under
the data dir and worker 0's /metrics sums them. A worker that exits is started again (a few times); worker 0's
/ready answers 503 naming it until its new process reports its listeners bound (runtime/fleet_readiness.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WORKER_FLAG", "prepare_metrics_dir", "Supervisor", "WorkerProcess", "worker_modes"]

log = logging.getLogger("egressproxy")

WORKER_FLAG = "--worker-index"
# A worker that exits is started again unless MAX_RESTARTS restarts (of any worker) happened in the last
# RESTART_WINDOW_SECONDS: a crash loop stops (and /ready stays 503), an occasional crash over weeks does not
# use the budget up for good.
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 300.0


def prepare_metrics_dir(data_dir: str) -> None:
    """Point prometheus_client at a fresh multi-process directory (before it is imported)."""
    path = Path(data_dir).resolve() / "prometheus-multiproc"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def worker_modes(modes: list[str]) -> list[str]:
    """What an extra worker binds: the TCP proxy modes only (DNS is UDP, served by worker 0)."""
    return [m for m in modes if not m.startswith("dns")]


def forget_dead_gauges(pid: int) -> None:
    """A dead worker's live gauges leave the sum (its counters stay: what it counted did happen)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


@dataclass(frozen=True)
class WorkerProcess:
    """One worker as the supervisor sees it: its pid while running, else why it is not."""

    index: int
    pid: int | None
    down: str = ""  # "" while running


class Supervisor:
    def __init__(self, argv: list[str], count: int) -> None:
        self.argv = argv
        self.count = count
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.restarts = 0
        self.restart_times: deque[float] = deque()  # monotonic times of the restarts within the window
        self.given_up: dict[int, int] = {}  # index -> exit code of a worker not started again
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        for index in range(1, self.count):
            self._spawn(index)
        self._task = asyncio.ensure_future(self._watch())

    def _spawn(self, index: int) -> None:
        argv = [sys.executable, "-m", "egressproxy", *self.argv, WORKER_FLAG, str(index)]
        self.children[index] = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        log.info("worker %d started (pid %d)", index, self.children[index].pid)

    def live_pids(self) -> dict[int, int]:
        """index -> pid of every worker running now (a restarted worker has a new pid)."""
        return {index: child.pid for index, child in self.children.items() if child.poll() is None}

    def processes(self) -> list[WorkerProcess]:
        """Workers 1..N-1 now: running (pid), exited and about to be started again, or given up on."""
        out = []
        for index in range(1, self.count):
            child = self.children.get(index)
            if index in self.given_up:
                last = self.given_up[index]
                why = f"exited (code {last}), not restarted: {MAX_RESTARTS} restarts within {RESTART_WINDOW_SECONDS:g}s"
                out.append(WorkerProcess(index, None, why))
            elif child is None:
                out.append(WorkerProcess(index, None, "not started yet"))
            elif (code := child.poll()) is not None:
                out.append(WorkerProcess(index, None, f"exited (code {code}), being restarted"))
            else:
                out.append(WorkerProcess(index, child.pid))
        return out

    def signal_all(self, sig: int) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(sig)

    async def _watch(self) -> None:
        while not self._stopping:
            await asyncio.sleep(1)
            for index, child in list(self.children.items()):
                code = child.poll()
                if code is None:
                    continue
                if self._stopping:
                    return
                forget_dead_gauges(child.pid)
                if not self._may_restart(time.monotonic()):
                    log.error(
                        "worker %d exited with %s; not restarting (%d restarts within %gs)",
                        index, code, MAX_RESTARTS, RESTART_WINDOW_SECONDS,
                    )
                    self.given_up[index] = code
                    del self.children[index]
                    continue
                self.restarts += 1
                self.restart_times.append(time.monotonic())
                log.error("worker %d exited with %s; starting it again", index, code)
                self._spawn(index)

    def _may_restart(self, now: float) -> bool:
        while self.restart_times and now - self.restart_times[0] > RESTART_WINDOW_SECONDS:
            self.restart_times.popleft()
        return len(self.restart_times) < MAX_RESTARTS

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
        self.signal_all(signal.SIGTERM)
        for child in self.children.values():
            try:
                await asyncio.to_thread(child.wait, 10)
            except subprocess.TimeoutExpired:
                child.kill()
