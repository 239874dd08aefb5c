"""The per-connection HTTP/2 budgets (egressproxy/h2_abuse.py), driven by a fake clock."""

from __future__ import annotations

import pytest

from egressproxy.h2_abuse import DEFAULT_LIMITS, FrameKind, H2AbuseGuard, H2Limits, SlidingCount


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_count_is_over_only_past_the_limit_within_the_window() -> None:
    count = SlidingCount(limit=3, window=10.0)
    assert [count.add(t) for t in (0.0, 1.0, 2.0)] == [False, False, False]
    assert count.add(3.0) is True


def test_sliding_count_forgets_events_older_than_the_window() -> None:
    count = SlidingCount(limit=2, window=10.0)
    assert not count.add(0.0) and not count.add(5.0)
    assert count.add(10.0) is False  # the event at 0.0 left the window
    assert count.add(11.0) is True


def test_sliding_count_keeps_at_most_limit_plus_one_timestamps() -> None:
    count = SlidingCount(limit=5, window=1e9)
    for t in range(10_000):
        count.add(float(t))
    assert len(count._times) == 6


@pytest.mark.parametrize(
    "kind,budget", [(FrameKind.RESET, 200), (FrameKind.PING, 100), (FrameKind.SETTINGS, 100), (FrameKind.REFUSED, 100)]
)
def test_each_kind_is_refused_one_frame_past_its_default_budget(kind: FrameKind, budget: int) -> None:
    guard = H2AbuseGuard(clock=Clock())
    assert all(guard.observe(kind) is None for _ in range(budget))
    assert guard.observe(kind) is kind
    assert guard.refused is kind


def test_kinds_have_separate_budgets() -> None:
    guard = H2AbuseGuard(H2Limits(max_resets=2, max_pings=2, max_settings=2, max_refused=2), clock=Clock())
    for kind in FrameKind:
        assert guard.observe(kind) is None and guard.observe(kind) is None
    assert guard.refused is None


def test_a_slow_steady_client_is_never_refused() -> None:
    """Real clients cancel streams and ping now and then: five a second stay far under 100 per 10 s."""
    clock = Clock()
    guard = H2AbuseGuard(clock=clock)
    for _ in range(5000):
        clock.now += 0.2
        assert guard.observe(FrameKind.RESET) is None
        assert guard.observe(FrameKind.PING) is None


def test_refusal_is_reported_once() -> None:
    guard = H2AbuseGuard(H2Limits(max_pings=1), clock=Clock())
    guard.observe(FrameKind.PING)
    assert guard.observe(FrameKind.PING) is FrameKind.PING
    assert guard.observe(FrameKind.PING) is None
    assert guard.observe(FrameKind.RESET) is None


def test_reasons_are_the_metric_labels() -> None:
    assert {k.value for k in FrameKind} == {"h2-rapid-reset", "h2-ping-flood", "h2-settings-flood", "h2-stream-flood"}
    assert DEFAULT_LIMITS == H2Limits(window=10.0, max_resets=200, max_pings=100, max_settings=100, max_refused=100)
