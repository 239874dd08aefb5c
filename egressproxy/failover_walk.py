"""The failover walk: try a request's upstream candidates in order until one gives an answer to keep.

Pure of mitmproxy and of sockets: the caller passes `send(upstream, timeout)`, which opens one attempt and returns
its response head (`Answer`) or raises `AttemptFailed` with the phase it reached. The walk then asks the one
`retryable()` (egressproxy/retryability.py) whether to go on, cools the provider down in the shared
`ProviderHealth`, counts failures for outlier detection, and skips candidates that are cooled down, ejected or
that the plan refuses (another API format, until translation lands).

Nothing is retried once a byte went to the client: the walk only ever looks at response *heads* (and, for a
429/5xx it will discard, up to 64 KiB of that body); the answer it returns is streamed by the caller.

When candidates run out:
- the last candidate tried answered with a retryable status (429, 5xx): that answer is kept and returned, so the
  client sees the provider's own status and Retry-After (every earlier one was tried first);
- no candidate gave an HTTP answer (all down, cooled down, ejected or refused): a failover walk ends in
  `no-healthy-backend` naming each candidate's account; a plain retry walk (TrafficPolicy) ends in the last
  attempt's own failure (502 `upstream-unreachable`, 504 `upstream-timeout`, ...).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from egressproxy.flowrecord import Verdict
from egressproxy.outcomes import DialOutcome, GatewayFailure
from egressproxy.outlier_detection import OutlierDetection
from egressproxy.provider_health import CandidateKey, ProviderHealth, candidate_key
from egressproxy.retryability import Phase, Retryability, retryable
from egressproxy.upstreams import Upstream

__all__ = ["Answer", "AttemptFailed", "Send", "WalkPlan", "WalkResult", "walk", "describe_candidate"]

PEEK_BYTES = 65536  # of a 429/5xx body, read to tell quota exhaustion apart


class Answer(Protocol):
    """An attempt's response head; its body is unread (except what `peek` buffered)."""

    status: int
    headers: Mapping[str, str]  # lower-case names

    async def peek(self, limit: int) -> bytes: ...

    async def close(self) -> None: ...


class AttemptFailed(Exception):
    """An attempt ended before a response head: where (`phase`) and why (the typed outcome)."""

    def __init__(self, phase: Phase, outcome: DialOutcome) -> None:
        self.phase = phase
        self.outcome = outcome
        super().__init__(outcome.message if isinstance(outcome, GatewayFailure) else outcome.reason)


Send = Callable[[Upstream, float | None], Awaitable[Answer]]
# (retryable()'s verdict, the status or None, the response headers) -> try the next attempt?
Allows = Callable[[Retryability, int | None, Mapping[str, str]], bool]


def _failover_allows(result: Retryability, status: int | None, headers: Mapping[str, str]) -> bool:
    return result.retry


@dataclass(frozen=True, slots=True)
class WalkPlan:
    """What to try, in order, and the rules of this walk."""

    attempts: tuple[Upstream, ...]  # candidates in try order (a retry policy may repeat them)
    failover: bool = True  # AI failover: cooldowns apply, exhaustion is no-healthy-backend
    per_try_timeout: float | None = None  # seconds to the response head, per attempt
    allows: Allows = _failover_allows  # TrafficPolicy retryOn decides which outcomes go on
    backoff: float = 0.0  # seconds before the first retry, doubling each time (TrafficPolicy)
    max_backoff: float = 0.0
    skip: Callable[[Upstream], str | None] = lambda _u: None  # a reason not to try a candidate at all
    outlier: Callable[[Upstream], OutlierDetection | None] = lambda _u: None


@dataclass(slots=True)
class WalkResult:
    answer: Answer | None = None
    upstream: Upstream | None = None  # the candidate that answered
    failure: DialOutcome | None = None  # when no answer is kept
    accounts: list[str] = field(default_factory=list)  # one line per candidate not kept, for the 503 body
    failovers: int = 0  # attempts that were given up for a next one


# (candidate, outcome, given up for a next attempt): outcome "ok", a retryability reason, or a skip reason
Events = Callable[[Upstream, str, bool], None]


def describe_candidate(upstream: Upstream) -> str:
    name = upstream.backend_name or "destination"
    provider = f" {upstream.provider.name}" if upstream.provider is not None else ""
    return f"{name}{provider} ({upstream.host}:{upstream.port})"


async def walk(plan: WalkPlan, send: Send, health: ProviderHealth, on_attempt: Events | None = None) -> WalkResult:
    result = WalkResult()
    events = on_attempt or (lambda _u, _r, _g: None)
    last_failure: DialOutcome | None = None
    tried = 0
    for index, upstream in enumerate(plan.attempts):
        key = candidate_key(upstream)
        skipped = plan.skip(upstream)
        refusal = skipped or _ineligible(health, key, plan)
        if refusal is not None:
            result.accounts.append(f"{describe_candidate(upstream)}: {refusal}")
            events(upstream, "skipped" if skipped else refusal.split(" ")[0], False)
            continue
        if tried and plan.backoff > 0:
            await asyncio.sleep(min(plan.backoff * 2 ** (tried - 1), max(plan.max_backoff, plan.backoff)))
        tried += 1
        try:
            answer = await send(upstream, plan.per_try_timeout)
        except AttemptFailed as e:
            verdict = retryable(None, b"", {}, e.phase)
            _record_failure(health, plan, upstream, key, verdict)
            allowed = plan.allows(verdict, None, {})
            events(upstream, verdict.reason, allowed)
            last_failure = e.outcome
            result.accounts.append(f"{describe_candidate(upstream)}: {_outcome_text(e.outcome)}")
            if not allowed:
                result.failure = e.outcome
                return result
            result.failovers += 1
            continue
        body = await answer.peek(PEEK_BYTES) if answer.status == 429 or answer.status >= 500 else b""
        verdict = retryable(answer.status, body, answer.headers, Phase.RESPONSE)
        if verdict.retry:
            _record_failure(health, plan, upstream, key, verdict)
        else:
            health.succeeded(key)
        go_on = plan.allows(verdict, answer.status, answer.headers) and _any_left(plan, health, index)
        events(upstream, verdict.reason if verdict.retry else ("retried-status" if go_on else "ok"), go_on)
        if not go_on:
            result.answer, result.upstream = answer, upstream
            return result
        result.accounts.append(f"{describe_candidate(upstream)}: answered {answer.status} ({verdict.reason})")
        result.failovers += 1
        await answer.close()
    if plan.failover or last_failure is None:
        why = "; ".join(result.accounts) or "no candidate to try"
        result.failure = GatewayFailure("no-healthy-backend", f"no upstream candidate could take the request: {why}")
    else:
        result.failure = last_failure
    return result


def _ineligible(health: ProviderHealth, key: CandidateKey, plan: WalkPlan) -> str | None:
    eligibility = health.eligibility(key)
    if eligibility.ok or (eligibility.reason == "cooled-down" and not plan.failover):
        return None
    return f"{eligibility.reason} for {eligibility.remaining:.1f}s more"


def _record_failure(health: ProviderHealth, plan: WalkPlan, upstream: Upstream, key: CandidateKey, verdict: Retryability) -> None:
    if plan.failover:
        health.cool_down(key, verdict.cooldown, verdict.reason)
    if verdict.reason in ("server-error", "connect-failure", "timeout", "tls-failure"):
        outlier = plan.outlier(upstream)
        if outlier is not None:
            peers = tuple(dict.fromkeys(candidate_key(u) for u in plan.attempts if u.backend_name == upstream.backend_name))
            health.failed(key, outlier, peers)


def _any_left(plan: WalkPlan, health: ProviderHealth, index: int) -> bool:
    """Whether a later attempt could still be made (a later candidate neither refused nor out of health)."""
    return any(plan.skip(u) is None and _ineligible(health, candidate_key(u), plan) is None for u in plan.attempts[index + 1 :])


def _outcome_text(outcome: DialOutcome) -> str:
    if isinstance(outcome, Verdict):
        return f"{outcome.reason}: {outcome.message}" if outcome.message else outcome.reason
    return f"{outcome.reason}: {outcome.detail}"
