"""Worker 0's /ready under --workers (egressproxy/runtime/fleet_readiness.py): which worker is not ready, and why."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from egressproxy.runtime.fleet_readiness import FleetReadiness, WorkerReadiness, judge
from egressproxy.runtime.worker_reports import LOADED, READY, STOPPING, AppliedConfig, write_report
from egressproxy.runtime.workers import WorkerProcess

RUNNING = WorkerProcess(1, 50)


@pytest.mark.parametrize(
    ("process", "report", "expected"),
    [
        (RUNNING, AppliedConfig(50, 3, "files", READY), WorkerReadiness(1, True, "", 50, 3)),
        (
            WorkerProcess(1, None, "exited (code -9), being restarted"),
            AppliedConfig(50, 3, "files", READY),  # the dead process's last report does not count
            WorkerReadiness(1, False, "exited (code -9), being restarted"),
        ),
        (RUNNING, None, WorkerReadiness(1, False, "starting: configuration not loaded yet", 50)),
        (
            RUNNING,
            AppliedConfig(49, 3, "files", READY),  # written by the process before a restart
            WorkerReadiness(1, False, "starting: configuration not loaded yet", 50),
        ),
        (
            RUNNING,
            AppliedConfig(50, 1, "files", LOADED),
            WorkerReadiness(1, False, "starting: configuration loaded, listeners not bound yet", 50, 1),
        ),
        (RUNNING, AppliedConfig(50, 3, "files", STOPPING), WorkerReadiness(1, False, "stopping (draining)", 50, 3)),
        (
            RUNNING,
            AppliedConfig(50, 2, "older", READY),
            WorkerReadiness(
                1,
                False,
                "serves other configuration files than worker 0: its reload is pending or it refused them (see its log)",
                50,
                2,
            ),
        ),
    ],
    ids=["ready", "dead", "no-report", "report-of-old-pid", "listeners-not-bound", "draining", "older-files"],
)
def test_a_worker_is_ready_only_running_bound_and_on_worker_0s_files(
    process: WorkerProcess, report: AppliedConfig | None, expected: WorkerReadiness
) -> None:
    assert judge(process, report, "files") == expected


def test_the_fleet_reads_each_workers_report(tmp_path: Path) -> None:
    write_report(tmp_path, 1, AppliedConfig(50, 3, "files", READY))
    processes = [WorkerProcess(1, 50), WorkerProcess(2, 60)]
    fleet = FleetReadiness(tmp_path, lambda: processes, lambda: "files")
    assert asyncio.run(fleet()) == [
        WorkerReadiness(1, True, "", 50, 3),
        WorkerReadiness(2, False, "starting: configuration not loaded yet", 60),
    ]


def test_a_not_ready_worker_says_why_in_json() -> None:
    assert WorkerReadiness(2, False, "stopping (draining)", 60, 4).to_json() == {
        "ready": False, "pid": 60, "generation": 4, "reason": "stopping (draining)"
    }
    assert WorkerReadiness(1, True, "", 50, 3).to_json() == {"ready": True, "pid": 50, "generation": 3}
