"""egressproxy/deferred_work.py and its use by addons/flow_metrics.py: a request's finishing runs after the hook
task's current step (the one that writes the response) has returned, in order, nothing lost, timed at the hook.
"""

from __future__ import annotations

import asyncio
import types
from pathlib import Path

import pytest
from mitmproxy.test import tflow, tutils

import addons.flow_metrics as flow_metrics
from addons.flow_metrics import FlowMetrics
from egressproxy.deferred_work import DeferredWork
from egressproxy.engine.answers import flow_record
from egressproxy.flowrecord import FinishedRequest, Verdict
from egressproxy.runtime.state import GatewayState
from egressproxy.sinks import Sink


def test_outside_a_running_loop_the_work_runs_at_once() -> None:
    ran: list[int] = []
    work = DeferredWork()
    work.defer(lambda: ran.append(1))
    assert ran == [1] and len(work) == 0


def test_the_work_runs_only_after_the_current_callback_returned_in_order() -> None:
    """What a hook defers runs after everything the hook's task does next in the same step: mitmproxy's write of
    the response (`server_event` after the hook returned) is such a thing."""
    events: list[str] = []
    work = DeferredWork()

    async def hook_task() -> None:
        work.defer(lambda: events.append("finish 1"))
        work.defer(lambda: events.append("finish 2"))
        events.append("response written")  # the rest of the step: the layer resumes and writes
        await asyncio.sleep(0)  # the next loop turn
        events.append("next turn")

    asyncio.run(hook_task())
    assert events == ["response written", "finish 1", "finish 2", "next turn"]


def test_a_failing_piece_costs_no_other_and_flush_runs_what_is_queued(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    work = DeferredWork()

    def fails() -> None:
        raise RuntimeError("Authorization: Bearer sk-secret-value")

    async def main() -> int:
        work.defer(fails)
        work.defer(lambda: events.append("after the failure"))
        assert events == [] and len(work) == 2
        return work.flush()  # graceful stop: at once, without waiting for the loop's turn

    assert asyncio.run(main()) == 2
    assert events == ["after the failure"] and len(work) == 0
    assert "deferred finishing failed: RuntimeError" in caplog.text
    assert "sk-secret-value" not in caplog.text  # an error's text never reaches the log


def test_work_deferred_while_draining_still_runs() -> None:
    events: list[str] = []
    work = DeferredWork()

    async def main() -> None:
        work.defer(lambda: work.defer(lambda: events.append("second")))
        for _ in range(3):
            await asyncio.sleep(0)

    asyncio.run(main())
    assert events == ["second"] and len(work) == 0


class Collect(Sink):
    name = "collect"

    def __init__(self) -> None:
        self.records: list[FinishedRequest] = []

    def request_finished(self, record: FinishedRequest) -> None:
        self.records.append(record)


@pytest.fixture
def state(tmp_path: Path) -> GatewayState:
    state = GatewayState(tmp_path)
    state.flow_traces = False  # as `egressproxy run`
    return state


def test_the_response_hook_leaves_the_record_to_the_next_turn_timed_when_the_response_was_complete(
    state: GatewayState, monkeypatch: pytest.MonkeyPatch
) -> None:
    collect = Collect()
    state.sinks.register(collect)
    now = [100.0]
    monkeypatch.setattr(flow_metrics, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    flow = tflow.tflow(resp=tutils.tresp(status_code=201))
    record = flow_record(flow)
    record.verdict, record.started = Verdict.allow("route"), 99.5

    async def hook_task() -> None:
        FlowMetrics(state).response(flow)
        assert collect.records == []  # the client is not kept waiting for it
        now[0] = 130.0  # the finishing runs late (a busy loop): the record's timing must not show it
        await asyncio.sleep(0)

    asyncio.run(hook_task())
    [finished] = collect.records
    assert finished.status == 201 and finished.duration == pytest.approx(0.5)
    assert finished.exchange is not None and finished.exchange.bytes_sent == len(flow.response.raw_content or b"")


def test_the_addons_done_hook_flushes_finishing_left_behind(state: GatewayState) -> None:
    collect = Collect()
    state.sinks.register(collect)
    flow = tflow.tflow(resp=tutils.tresp(status_code=200))
    flow_record(flow).verdict = Verdict.allow("route")
    addon = FlowMetrics(state)

    async def main() -> None:
        addon.response(flow)
        addon.done()  # mitmproxy's shutdown, before the loop's next turn
        assert len(collect.records) == 1

    asyncio.run(main())
    assert len(collect.records) == 1  # once: the scheduled drain finds nothing left


def test_tied_to_a_task_the_work_waits_for_its_end_past_a_held_lock() -> None:
    """mitmproxy's shape: a hook task started eagerly inside an event that holds the connection's lock; after the
    hook it waits for that lock, then writes. A plain next-turn callback would run before the write; work tied
    to the hook task runs after it."""
    events: list[str] = []
    work = DeferredWork()

    async def main() -> None:
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # as mitmproxy's master
        lock = asyncio.Lock()

        async def hook_task() -> None:
            task = asyncio.current_task()
            work.defer(lambda: events.append("finish (tied)"), after=task)
            work.defer(lambda: events.append("finish (next turn)"))
            async with lock:  # `server_event(HookCompleted)`: the lock the starting event holds
                events.append("response written")

        async with lock:  # the event that asked for the hook
            task = asyncio.create_task(hook_task())  # eager: the hook runs now, then waits for the lock
        await task
        for _ in range(3):
            await asyncio.sleep(0)

    asyncio.run(main())
    assert events == ["finish (next turn)", "response written", "finish (tied)"]


def test_flush_runs_tied_work_once_even_if_its_task_ends_later() -> None:
    events: list[str] = []
    work = DeferredWork()

    async def main() -> None:
        gate = asyncio.Event()

        async def hook_task() -> None:
            work.defer(lambda: events.append("finish"), after=asyncio.current_task())
            await gate.wait()

        task = asyncio.create_task(hook_task())
        await asyncio.sleep(0)
        assert work.flush() == 1  # graceful stop before the task ended
        gate.set()
        await task
        await asyncio.sleep(0)

    asyncio.run(main())
    assert events == ["finish"]
