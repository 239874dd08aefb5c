"""How worker 0 learns that every worker applied a configuration, so `POST /reload` means applied everywhere.

Each worker reads the configuration files itself and reloads on SIGHUP at its own moment. Without a report back,
`POST /reload` on worker 0 returned once worker 0 had swapped, while worker 1 might still be compiling: a client
whose next connection the kernel gave to worker 1 was answered by the older generation after the newer one had
answered it (tests/reliability/test_reload_under_load.py, `two-workers`).

After every accepted load a worker writes `<data-dir>/workers/<index>.json`: its pid, its generation, the
digest of the files it built from (paths, sizes, mtimes: `Reloader.applied_fingerprint`) and its status (loaded,
ready once its listeners are bound, stopping once it drains). Worker 0 waits until each live worker's report
names its own digest, and its /ready reads the same reports (runtime/fleet_readiness.py). Generation numbers
are not compared: each worker counts its own reloads (a file-watch reload and a SIGHUP for the same edit are two
generations in one worker, one in another).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "AppliedConfig", "FleetReload", "LOADED", "READY", "STOPPING", "clear_reports", "read_report", "wait_applied",
    "write_report",
]

POLL_SECONDS = 0.02
# A worker's status in its report: configuration applied but listeners not bound yet; serving; draining.
LOADED, READY, STOPPING = "loaded", "ready", "stopping"


@dataclass(frozen=True)
class AppliedConfig:
    """What one worker serves now."""

    pid: int
    generation: int
    fingerprint: str
    status: str = LOADED


def _reports_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "workers"


def clear_reports(data_dir: str | Path) -> None:
    """Worker 0, before starting the others: no report of an earlier run may pass for a current one."""
    shutil.rmtree(_reports_dir(data_dir), ignore_errors=True)
    _reports_dir(data_dir).mkdir(parents=True, exist_ok=True)


def write_report(data_dir: str | Path, index: int, applied: AppliedConfig) -> None:
    """Atomically (blocking, a few hundred bytes): worker 0 never reads half a report."""
    directory = _reports_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{index}.json.tmp"
    tmp.write_text(json.dumps(asdict(applied)))
    os.replace(tmp, directory / f"{index}.json")


def read_report(data_dir: str | Path, index: int) -> AppliedConfig | None:
    try:
        raw: dict[str, Any] = json.loads((_reports_dir(data_dir) / f"{index}.json").read_text())
        status = str(raw.get("status", LOADED))
        return AppliedConfig(int(raw["pid"]), int(raw["generation"]), str(raw["fingerprint"]), status)
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class FleetReload:
    """Worker 0's reload result plus what each worker applied (None: not within the wait).

    `not_running` are the workers that were down when the reload was asked (exited, being restarted): they serve
    nothing, so they do not make the reload fail; a restarted worker loads the files as they are when it starts.
    """

    build: Any  # reloader.BuildResult (not imported: this module stays free of the compiler)
    workers: Mapping[int, int | None]
    waited_seconds: float
    not_running: tuple[int, ...] = ()

    @property
    def lagging(self) -> tuple[int, ...]:
        return tuple(index for index, generation in self.workers.items() if generation is None)

    @property
    def ok(self) -> bool:
        return bool(self.build.ok) and not self.lagging

    @property
    def problems(self) -> tuple[str, ...]:
        late = tuple(
            f"worker {index} has not applied this configuration within {self.waited_seconds:g}s; it still serves the one before"
            for index in self.lagging
        )
        return tuple(self.build.problems) + late


async def wait_applied(
    data_dir: str | Path, pids: Mapping[int, int], fingerprint: str, timeout: float
) -> dict[int, int | None]:
    """Wait until every worker in `pids` (index -> its current pid) reports `fingerprint`; per worker the
    generation it reported, or None when it had not by `timeout`."""
    deadline = time.monotonic() + timeout
    applied: dict[int, int | None] = {index: None for index in pids}
    while True:
        for index, pid in pids.items():
            if applied[index] is None:
                report = await asyncio.to_thread(read_report, data_dir, index)
                if report is not None and report.pid == pid and report.fingerprint == fingerprint:
                    applied[index] = report.generation
        if all(g is not None for g in applied.values()) or time.monotonic() >= deadline:
            return applied
        await asyncio.sleep(POLL_SECONDS)
