"""ProviderHealth: cooldowns and outlier ejections, on an injected clock."""

from __future__ import annotations

import pytest

from egressproxy.provider_health import OutlierDetection, ProviderHealth

A = ("default/ai", "a", "a.example", 443)
B = ("default/ai", "b", "b.example", 443)
C = ("default/ai", "c", "c.example", 443)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_cooled_down_candidate_is_skipped_until_its_time_is_over(clock: Clock) -> None:
    health = ProviderHealth(clock)
    health.cool_down(A, 5.0, "rate-limited")
    assert not health.eligibility(A).ok and health.eligibility(A).reason == "cooled-down"
    assert health.eligibility(B).ok
    clock.now += 4.9
    assert health.describe(A) == "cooled down for 0.1s"
    clock.now += 0.1
    assert health.eligibility(A).ok and health.describe(A) is None


def test_a_shorter_cooldown_does_not_cut_a_longer_one(clock: Clock) -> None:
    health = ProviderHealth(clock)
    health.cool_down(A, 60.0, "quota-exhausted")
    health.cool_down(A, 1.0, "server-error")
    clock.now += 2
    assert not health.eligibility(A).ok


def test_consecutive_failures_eject_and_the_candidate_recovers_at_the_interval_tick(clock: Clock) -> None:
    ejected: list[tuple[str, str, str, int]] = []
    health = ProviderHealth(clock, on_ejection=ejected.append)
    outlier = OutlierDetection(consecutive_5xx=3, interval=2.0, base_ejection_time=3.0, max_ejection_percent=100)
    assert not health.failed(A, outlier) and not health.failed(A, outlier)
    assert health.failed(A, outlier)
    assert ejected == [A]
    assert health.eligibility(A).reason == "ejected"
    clock.now += 3.9  # 3s rounded up to the next 2s tick
    assert not health.eligibility(A).ok
    clock.now += 0.1
    assert health.eligibility(A).ok


def test_a_success_resets_the_consecutive_count(clock: Clock) -> None:
    health = ProviderHealth(clock)
    outlier = OutlierDetection(consecutive_5xx=2, interval=0, base_ejection_time=1, max_ejection_percent=100)
    health.failed(A, outlier)
    health.succeeded(A)
    assert not health.failed(A, outlier)
    assert health.failed(A, outlier)


def test_each_ejection_lasts_longer(clock: Clock) -> None:
    health = ProviderHealth(clock)
    outlier = OutlierDetection(consecutive_5xx=1, interval=0, base_ejection_time=10, max_ejection_percent=100)
    health.failed(A, outlier)
    clock.now += 10
    assert health.eligibility(A).ok
    health.failed(A, outlier)
    assert health.eligibility(A).remaining == pytest.approx(20)


def test_max_ejection_percent_keeps_some_candidates_in(clock: Clock) -> None:
    health = ProviderHealth(clock)
    outlier = OutlierDetection(consecutive_5xx=1, interval=0, base_ejection_time=10, max_ejection_percent=50)
    peers = (A, B, C)
    assert health.failed(A, outlier, peers)  # 1 of 3 (floor(1.5) = 1 allowed)
    assert not health.failed(B, outlier, peers)
    assert health.eligibility(B).ok


def test_at_least_one_may_be_ejected_and_zero_percent_ejects_none(clock: Clock) -> None:
    health = ProviderHealth(clock)
    assert health.failed(A, OutlierDetection(1, 0, 10, 10), (A, B, C))
    assert not health.failed(B, OutlierDetection(1, 0, 10, 0), (A, B, C))


def test_without_outlier_detection_nothing_is_ejected(clock: Clock) -> None:
    health = ProviderHealth(clock)
    for _ in range(10):
        assert not health.failed(A, None)
    assert health.eligibility(A).ok


def test_unavailable_lists_what_is_skipped_now(clock: Clock) -> None:
    health = ProviderHealth(clock)
    health.cool_down(A, 5.0, "rate-limited")
    health.failed(B, OutlierDetection(1, 0, 10, 100))
    health.cool_down(C, 1.0, "server-error")
    clock.now += 2
    assert health.unavailable() == [
        {"backend": "default/ai", "provider": "a", "address": "a.example:443", "state": "cooled-down", "seconds": 3.0},
        {"backend": "default/ai", "provider": "b", "address": "b.example:443", "state": "ejected", "seconds": 8.0},
    ]
