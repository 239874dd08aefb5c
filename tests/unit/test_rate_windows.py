"""Fixed-window counters (egressproxy/rate_windows.py) on a clock the test moves."""

from __future__ import annotations

import pytest

from egressproxy.rate_windows import Admission, FixedWindows


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_requests_up_to_the_limit_pass_then_the_rest_wait_for_the_window(clock: Clock) -> None:
    windows = FixedWindows(clock)
    assert [windows.admit("a", 3, "a", None, 60).allowed for _ in range(3)] == [True, True, True]
    clock.now += 20
    denied = windows.admit("a", 3, "a", None, 60)
    assert denied == Admission(False, 40.0, "requests")  # the window opened at the first request
    clock.now += 39.9
    assert not windows.admit("a", 3, "a", None, 60).allowed
    clock.now += 0.1
    assert windows.admit("a", 3, "a", None, 60).allowed  # the window closed: a fresh one opens


def test_a_denied_request_is_not_counted(clock: Clock) -> None:
    windows = FixedWindows(clock)
    windows.admit("a", 1, "a", None, 10)
    for _ in range(5):
        assert not windows.admit("a", 1, "a", None, 10).allowed
    assert windows.count("a") == 1


def test_buckets_are_separate(clock: Clock) -> None:
    windows = FixedWindows(clock)
    assert windows.admit("a", 1, "a", None, 10).allowed
    assert windows.admit("b", 1, "b", None, 10).allowed
    assert not windows.admit("a", 1, "a", None, 10).allowed


def test_tokens_are_checked_before_and_spent_after_so_one_request_may_overdraw(clock: Clock) -> None:
    windows = FixedWindows(clock)
    assert windows.admit("a", None, "a", 100, 60).allowed  # nothing spent yet
    windows.spend("a", 250, 60)  # the response reported more than the whole budget: allowed once
    clock.now += 10
    assert windows.admit("a", None, "a", 100, 60) == Admission(False, 50.0, "tokens")
    clock.now += 50
    assert windows.admit("a", None, "a", 100, 60).allowed
    assert windows.count("a") == 0


def test_spent_out_tokens_deny_without_counting_the_request(clock: Clock) -> None:
    windows = FixedWindows(clock)
    windows.spend("t", 10, 60)
    assert windows.admit("r", 5, "t", 10, 60).exhausted == "tokens"
    assert windows.count("r") == 0


def test_spending_nothing_opens_no_window(clock: Clock) -> None:
    windows = FixedWindows(clock)
    windows.spend("a", 0, 60)
    assert len(windows) == 0


def test_memory_stays_bounded_under_many_distinct_keys(clock: Clock) -> None:
    windows = FixedWindows(clock, max_buckets=10)
    for i in range(10):
        windows.admit(f"k{i}", 1, f"k{i}", None, 60)
    clock.now += 61  # all closed: the sweep drops them
    windows.admit("new", 1, "new", None, 60)
    assert len(windows) == 1
    for i in range(25):
        windows.admit(f"live{i}", 1, f"live{i}", None, 60)
    assert len(windows) <= 10
