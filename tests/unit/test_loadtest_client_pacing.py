"""loadtest/client.py's open-loop pacing (`--rate`): connection i of C sends at start + i/R + k*C/R, and a request
held back by the previous answer counts its latency from its scheduled time (no coordinated omission)."""

from __future__ import annotations

import asyncio
import time

from loadtest.client import Pacer, Tally


def test_connections_share_the_rate_evenly() -> None:
    start = 1000.0
    pacers = [Pacer(100.0, i, 4, start) for i in range(4)]
    sends = sorted(p.next + k * p.interval for p in pacers for k in range(3))
    assert [round(t - start, 6) for t in sends] == [round(0.01 * n, 6) for n in range(12)]


def test_closed_loop_sends_at_once() -> None:
    pacer = Pacer(None, 3, 8, 0.0)
    before = time.time()
    started = asyncio.run(pacer.wait(last_done=0.0))
    assert before <= started <= time.time()


def test_a_request_held_back_by_the_previous_answer_counts_from_its_scheduled_time() -> None:
    now = time.time()
    pacer = Pacer(10.0, 0, 1, now - 1.0)  # its first send time is a second ago: the connection is behind
    started = asyncio.run(pacer.wait(last_done=now))  # the previous answer came after that time
    assert started == now - 1.0
    assert pacer.next == now - 0.9


def test_a_timely_request_counts_from_its_send_not_from_timer_jitter() -> None:
    now = time.time()
    pacer = Pacer(100.0, 0, 1, now + 0.02)
    started = asyncio.run(pacer.wait(last_done=now - 1.0))
    assert started >= now + 0.02  # the time it was actually sent, at or after the schedule


def test_open_loop_counts_a_request_in_the_window_it_was_sent_in() -> None:
    closed, opened = Tally(10.0, 20.0), Tally(10.0, 20.0, by_start=True)
    for tally in (closed, opened):
        tally.ok(19.5, 21.0)  # sent inside the window, answered 1.5 s later, after it
        tally.ok(9.5, 10.5)  # sent in the warm-up, answered inside the window
    assert (closed.requests, closed.latencies_us) == (1, [1000000])
    assert (opened.requests, opened.latencies_us) == (1, [1500000])
