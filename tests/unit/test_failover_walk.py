"""The failover walk over fake attempts: no sockets, no mitmproxy."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from egressproxy.failover_walk import AttemptFailed, WalkPlan, walk
from egressproxy.outcomes import GatewayFailure
from egressproxy.outlier_detection import OutlierDetection
from egressproxy.provider_health import ProviderHealth, candidate_key
from egressproxy.retryability import Phase
from egressproxy.snapshot import AIProvider, Backend, ObjectRef
from egressproxy.upstreams import Upstream

BACKEND = Backend(ObjectRef("Backend", "default", "ai"), "AI")


def _candidate(name: str, group: int = 0) -> Upstream:
    return Upstream(f"{name}.example", 443, backend=BACKEND, provider=AIProvider(name, "openai"), group=group)


A, B, C = _candidate("a"), _candidate("b", 1), _candidate("c", 2)


@dataclass
class FakeAnswer:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    closed: bool = False

    async def peek(self, limit: int) -> bytes:
        return self.body[:limit]

    async def close(self) -> None:
        self.closed = True


class Script:
    """Each candidate's outcome: a FakeAnswer or an AttemptFailed; records the attempts and their timeouts."""

    def __init__(self, **outcomes: FakeAnswer | AttemptFailed) -> None:
        self.outcomes = outcomes
        self.sent: list[tuple[str, float | None]] = []

    async def __call__(self, upstream: Upstream, timeout: float | None) -> FakeAnswer:
        assert upstream.provider is not None
        self.sent.append((upstream.provider.name, timeout))
        outcome = self.outcomes.get(upstream.provider.name, FakeAnswer(200))
        if isinstance(outcome, AttemptFailed):
            raise outcome
        return outcome


def _run(plan: WalkPlan, script: Script, health: ProviderHealth | None = None, events: list[tuple[str, str, bool]] | None = None):  # type: ignore[no-untyped-def]
    health = health or ProviderHealth(lambda: 0.0)
    log = events if events is not None else []
    return asyncio.run(walk(plan, script, health, lambda u, r, g: log.append((u.provider.name if u.provider else "", r, g))))


def _refused() -> AttemptFailed:
    return AttemptFailed(Phase.CONNECT, GatewayFailure("upstream-unreachable", "connection refused"))


def test_the_first_good_answer_is_kept_and_nothing_more_is_tried() -> None:
    script = Script()
    result = _run(WalkPlan((A, B, C)), script)
    assert result.upstream == A and result.answer is not None and result.answer.status == 200
    assert [name for name, _ in script.sent] == ["a"]


def test_refused_503_429_go_on_and_the_discarded_answers_are_closed() -> None:
    busy = FakeAnswer(503)
    script = Script(a=_refused(), b=busy)
    events: list[tuple[str, str, bool]] = []
    result = _run(WalkPlan((A, B, C)), script, events=events)
    assert result.upstream == C and busy.closed
    assert events == [("a", "connect-failure", True), ("b", "server-error", True), ("c", "ok", False)]
    assert result.failovers == 2


def test_a_400_is_kept_as_it_is() -> None:
    bad = FakeAnswer(400, b'{"error": "bad"}')
    result = _run(WalkPlan((A, B)), Script(a=bad))
    assert result.answer is bad and not bad.closed and result.upstream == A


def test_a_429_cools_down_and_the_next_walk_skips_it() -> None:
    health = ProviderHealth(lambda: 0.0)
    _run(WalkPlan((A, B)), Script(a=FakeAnswer(429, headers={"retry-after": "30"})), health)
    assert health.eligibility(candidate_key(A)).remaining == 30
    script = Script()
    events: list[tuple[str, str, bool]] = []
    result = _run(WalkPlan((A, B)), script, health, events)
    assert result.upstream == B and [n for n, _ in script.sent] == ["b"]
    assert events[0] == ("a", "cooled-down", False)


def test_the_last_candidates_retryable_answer_is_returned_not_discarded() -> None:
    last = FakeAnswer(503, headers={"retry-after": "2"})
    result = _run(WalkPlan((A, B)), Script(a=FakeAnswer(503), b=last))
    assert result.answer is last and not last.closed and result.upstream == B


def test_an_answer_is_kept_when_every_later_candidate_is_cooled_down() -> None:
    health = ProviderHealth(lambda: 0.0)
    health.cool_down(candidate_key(B), 10, "rate-limited")
    first = FakeAnswer(503)
    result = _run(WalkPlan((A, B)), Script(a=first), health)
    assert result.answer is first and not first.closed


def test_no_answer_at_all_is_no_healthy_backend_naming_each_candidate() -> None:
    health = ProviderHealth(lambda: 0.0)
    health.cool_down(candidate_key(C), 10, "rate-limited")
    tls = AttemptFailed(Phase.TLS, GatewayFailure("upstream-tls-invalid", "certificate verify failed"))
    result = _run(WalkPlan((A, B, C)), Script(a=_refused(), b=tls), health)
    assert result.answer is None and isinstance(result.failure, GatewayFailure)
    assert result.failure.reason == "no-healthy-backend" and result.failure.status == 503
    detail = result.failure.detail
    assert "default/ai a (a.example:443): upstream-unreachable: connection refused" in detail
    assert "default/ai b (b.example:443): upstream-tls-invalid: certificate verify failed" in detail
    assert "default/ai c (c.example:443): cooled-down for 10.0s more" in detail


def test_a_skipped_candidate_is_never_sent_anything() -> None:
    script = Script(a=FakeAnswer(503))
    plan = WalkPlan((A, B, C), skip=lambda u: "speaks another API" if u is B else None)
    result = _run(plan, script)
    assert result.upstream == C and [n for n, _ in script.sent] == ["a", "c"]
    assert "default/ai b (b.example:443): speaks another API" in result.accounts


def test_the_per_try_timeout_is_passed_to_each_attempt() -> None:
    script = Script(a=_refused())
    _run(WalkPlan((A, B), per_try_timeout=1.5), script)
    assert script.sent == [("a", 1.5), ("b", 1.5)]


def test_outlier_detection_ejects_after_consecutive_failures() -> None:
    health = ProviderHealth(lambda: 0.0)
    outlier = OutlierDetection(consecutive_5xx=2, interval=0, base_ejection_time=30, max_ejection_percent=100)
    plan = WalkPlan((A, B), failover=False, outlier=lambda u: outlier)
    _run(plan, Script(a=FakeAnswer(500)), health)
    assert health.eligibility(candidate_key(A)).ok
    _run(plan, Script(a=FakeAnswer(500)), health)
    assert health.eligibility(candidate_key(A)).reason == "ejected"


def test_a_retry_walk_keeps_its_last_failure_and_stops_when_retry_on_says_no() -> None:
    failure = _refused()
    result = _run(WalkPlan((A, A, A), failover=False), Script(a=failure))
    assert result.failure is failure.outcome
    only_5xx = WalkPlan((A, A), failover=False, allows=lambda r, status, headers: status is not None)
    script = Script(a=_refused())
    result = _run(only_5xx, script)
    assert [n for n, _ in script.sent] == ["a"] and result.failure is not None


def test_a_retry_walk_repeats_one_candidate_without_cooling_it() -> None:
    health = ProviderHealth(lambda: 0.0)
    outcomes = iter([FakeAnswer(503), FakeAnswer(200)])

    async def send(upstream: Upstream, timeout: float | None) -> FakeAnswer:
        return next(outcomes)

    result = asyncio.run(walk(WalkPlan((A, A), failover=False), send, health))
    assert result.answer is not None and result.answer.status == 200
    assert health.eligibility(candidate_key(A)).ok


@pytest.mark.parametrize("status", [500, 529])
def test_5xx_fails_over(status: int) -> None:
    result = _run(WalkPlan((A, B)), Script(a=FakeAnswer(status)))
    assert result.upstream == B


def test_a_refused_candidate_is_neither_cooled_down_nor_counted_for_ejection() -> None:
    health = ProviderHealth(lambda: 0.0)
    refused = AttemptFailed(Phase.REFUSED, GatewayFailure("credential-requires-tls", "cleartext"))
    outlier = OutlierDetection(consecutive_5xx=1, interval=0, base_ejection_time=30, max_ejection_percent=100)
    result = _run(WalkPlan((A, B), outlier=lambda u: outlier), Script(a=refused), health)
    assert result.upstream == B
    assert health.eligibility(candidate_key(A)).ok
