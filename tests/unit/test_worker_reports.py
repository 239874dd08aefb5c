"""Worker reports (egressproxy/runtime/worker_reports.py): POST /reload waits until every worker applied the files."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from egressproxy.runtime.worker_reports import (
    AppliedConfig,
    FleetReload,
    clear_reports,
    read_report,
    wait_applied,
    write_report,
)


def test_a_report_reads_back_and_clearing_removes_it(tmp_path: Path) -> None:
    write_report(tmp_path, 1, AppliedConfig(123, 7, "abc"))
    assert read_report(tmp_path, 1) == AppliedConfig(123, 7, "abc")
    clear_reports(tmp_path)
    assert read_report(tmp_path, 1) is None


def test_a_half_written_or_missing_report_is_no_report(tmp_path: Path) -> None:
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / "1.json").write_text('{"pid": 1, "gener')
    assert read_report(tmp_path, 1) is None
    assert read_report(tmp_path, 2) is None


def test_wait_returns_once_the_worker_reports_the_same_files(tmp_path: Path) -> None:
    write_report(tmp_path, 1, AppliedConfig(50, 3, "old"))

    async def scenario() -> dict[int, int | None]:
        waiting = asyncio.ensure_future(wait_applied(tmp_path, {1: 50}, "new", timeout=10))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # still the old files: not applied yet
        write_report(tmp_path, 1, AppliedConfig(50, 4, "new"))
        return await waiting

    started = time.monotonic()
    assert asyncio.run(scenario()) == {1: 4}
    assert time.monotonic() - started < 5


def test_a_report_of_another_pid_does_not_count(tmp_path: Path) -> None:
    """A worker that was restarted (new pid) has not applied anything the old one reported."""
    write_report(tmp_path, 1, AppliedConfig(50, 4, "new"))
    assert asyncio.run(wait_applied(tmp_path, {1: 51}, "new", timeout=0.1)) == {1: None}


def test_a_lagging_worker_makes_the_reload_not_ok_and_is_named() -> None:
    class Built:
        ok = True
        problems = ()

    assert FleetReload(Built(), {1: 2}, 10.0).ok
    late = FleetReload(Built(), {1: 2, 2: None}, 10.0)
    assert (late.ok, late.lagging) == (False, (2,))
    assert late.problems == ("worker 2 has not applied this configuration within 10s; it still serves the one before",)
