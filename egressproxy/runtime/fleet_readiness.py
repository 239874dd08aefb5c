"""Worker 0's `/ready` under `--workers N`: ready only when every worker is, and which one is not, and why.

Worker 0 answers for the pod, but the kernel hands each new connection to any worker bound to the port
(SO_REUSEPORT). A worker that died, is still starting, or serves older files than worker 0 answers clients
differently, so it makes the whole gateway not ready. What worker 0 knows of the others comes from two places:
the supervisor (is the process running, under which pid) and the worker's report file (runtime/worker_reports.py:
the pid that wrote it, the digest of the files it serves, whether its listeners are bound).

A worker is ready when all of these hold:
- it is running (the supervisor's child has not exited);
- its report was written by that very process (a restarted worker's old report does not count);
- its report says `ready` (configuration loaded and every listener bound; not draining);
- it serves the files worker 0 serves (same digest): otherwise its reload is pending or it refused the files.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from egressproxy.runtime.worker_reports import LOADED, READY, STOPPING, AppliedConfig, read_report
from egressproxy.runtime.workers import WorkerProcess

__all__ = ["WorkerReadiness", "FleetReadiness", "judge"]

_STATUS_REASON = {
    LOADED: "starting: configuration loaded, listeners not bound yet",
    STOPPING: "stopping (draining)",
}


@dataclass(frozen=True)
class WorkerReadiness:
    """One worker's answer in worker 0's /ready."""

    index: int
    ready: bool
    reason: str = ""  # why not, when not ready
    pid: int | None = None
    generation: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ready": self.ready, "pid": self.pid, "generation": self.generation}
        if not self.ready:
            out["reason"] = self.reason
        return out


def judge(process: WorkerProcess, report: AppliedConfig | None, fingerprint: str) -> WorkerReadiness:
    """Whether one worker (1..N-1) is ready, from what the supervisor and its report say."""
    index = process.index
    if process.pid is None:
        return WorkerReadiness(index, False, process.down)
    if report is None or report.pid != process.pid:
        return WorkerReadiness(index, False, "starting: configuration not loaded yet", process.pid)
    if report.status != READY:
        reason = _STATUS_REASON.get(report.status, f"reports status {report.status!r}")
        return WorkerReadiness(index, False, reason, process.pid, report.generation)
    if report.fingerprint != fingerprint:
        reason = (
            "serves other configuration files than worker 0: its reload is pending or it refused them (see its log)"
        )
        return WorkerReadiness(index, False, reason, process.pid, report.generation)
    return WorkerReadiness(index, True, "", process.pid, report.generation)


class FleetReadiness:
    """Judges workers 1..N-1 for worker 0's /ready (reads their report files off the event loop)."""

    def __init__(
        self, data_dir: str | Path, processes: Callable[[], Sequence[WorkerProcess]], fingerprint: Callable[[], str]
    ) -> None:
        self.data_dir = data_dir
        self.processes = processes
        self.fingerprint = fingerprint

    async def __call__(self) -> list[WorkerReadiness]:
        processes = self.processes()
        reports = await asyncio.to_thread(self._read, [p.index for p in processes])
        fingerprint = self.fingerprint()
        return [judge(p, reports.get(p.index), fingerprint) for p in processes]

    def _read(self, indices: list[int]) -> dict[int, AppliedConfig | None]:
        return {index: read_report(self.data_dir, index) for index in indices}
