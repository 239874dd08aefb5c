"""The supervisor of `--workers N` (egressproxy/runtime/workers.py): what it says of each worker process."""

from __future__ import annotations

import subprocess
from typing import Any

from egressproxy.runtime.workers import Supervisor, WorkerProcess, worker_modes


class FakeChild:
    def __init__(self, pid: int, code: int | None = None) -> None:
        self.pid = pid
        self.code = code

    def poll(self) -> int | None:
        return self.code


def _supervisor(children: dict[int, Any], count: int = 4) -> Supervisor:
    supervisor = Supervisor(["run"], count)
    supervisor.children = children  # type: ignore[assignment]
    return supervisor


def test_each_worker_is_running_exited_not_started_or_given_up() -> None:
    supervisor = _supervisor({1: FakeChild(11), 2: FakeChild(12, code=-9)}, count=5)
    supervisor.given_up[4] = 1
    assert supervisor.processes() == [
        WorkerProcess(1, 11),
        WorkerProcess(2, None, "exited (code -9), being restarted"),
        WorkerProcess(3, None, "not started yet"),
        WorkerProcess(4, None, "exited (code 1), not restarted: 5 restarts within 300s"),
    ]
    assert supervisor.live_pids() == {1: 11}


def test_a_worker_that_exits_is_started_again_with_a_new_pid() -> None:
    """The real watch loop over a real child process that exits at once."""
    import asyncio
    import sys

    spawned: list[int] = []

    def spawn(self: Supervisor, index: int) -> None:
        code = "pass" if not spawned else "import time; time.sleep(30)"  # the first exits, its successor stays
        self.children[index] = subprocess.Popen([sys.executable, "-c", code])
        spawned.append(self.children[index].pid)

    async def scenario() -> list[WorkerProcess]:
        supervisor = Supervisor(["run"], 2)
        supervisor._spawn = spawn.__get__(supervisor)  # type: ignore[method-assign]
        supervisor.start()
        while len(spawned) < 2:
            await asyncio.sleep(0.05)
        processes = supervisor.processes()
        await supervisor.stop()
        return processes

    processes = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert processes == [WorkerProcess(1, spawned[1])]
    assert spawned[0] != spawned[1]


def test_restarts_are_budgeted_per_window_not_for_life() -> None:
    """Five restarts within five minutes stop a crash loop; restarts older than the window no longer count."""
    supervisor = _supervisor({})
    supervisor.restart_times.extend([1000.0, 1100.0, 1200.0, 1250.0, 1290.0])
    assert not supervisor._may_restart(1299.0)
    assert supervisor._may_restart(1301.0)  # the one at 1000 s left the window
    assert list(supervisor.restart_times) == [1100.0, 1200.0, 1250.0, 1290.0]


def test_extra_workers_bind_the_tcp_modes_only() -> None:
    assert worker_modes(["regular@8080", "dns@5353", "transparent@15001"]) == ["regular@8080", "transparent@15001"]
