"""RateLimitPolicy on HTTP requests: check before the request goes upstream, count tokens as the response streams.

Runs after the routing addon (which wrote the request's budget, its RateLimitPolicies merged, into the flow
record) and before the body taps (which build the response's tap chain from `FlowRecord.response_taps`). Over the
limit the client gets 429 with `Retry-After`, `x-egress-denied: rate-limited` and the JSON denial body naming the
budget's most specific policy. A budget with `tokens` puts a token-counting tap on the response; when the body
ends (or the flow fails) the tokens the provider reported are spent, off the hook, on that budget. At shutdown
the limiter's Redis clients are closed.
"""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import http

from egressproxy.engine.answers import answer_denied, flow_record
from egressproxy.flowrecord import Check
from egressproxy.engine.guard import fail_closed
from egressproxy.rate_limiter import RATE_LIMITED
from egressproxy.rate_limits import EXECUTION_HEADER, RateLimit
from egressproxy.runtime.idle_steps import RATE_LIMIT_STEP
from egressproxy.runtime.state import GatewayState
from egressproxy.snapshot import Snapshot
from egressproxy.token_usage import TokenCountingTap

__all__ = ["RateLimits"]

log = logging.getLogger("egressproxy")

SHUTDOWN_GRACE = 1.0  # seconds token spending in flight may take at shutdown (one Redis timeout, doubled)


class RateLimits:
    step = RATE_LIMIT_STEP  # idle without any RateLimitPolicy, or for a request given no budget (runtime/idle_steps.py)

    @staticmethod
    def idle_on(snapshot: Snapshot) -> bool:
        return not snapshot.compiled.rate_limits

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.pending: dict[str, tuple[RateLimit, str]] = {}  # flow id -> the token budget (and bucket) to charge
        self.spending: set[asyncio.Task[None]] = set()

    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        frec = flow_record(flow)
        if frec.rate_limit is None:
            return
        headers = {EXECUTION_HEADER: flow.request.headers.get(EXECUTION_HEADER, "")}
        check = await self.state.rate_limiter.check(frec.rate_limit, frec.identity, frec.route, headers)
        if check.report is not None:
            name = check.report.name
            self.state.metrics.policy_reports.labels(RATE_LIMITED, name).inc()
            log.info("report: %s would deny %s %s for %s (enforcementMode Report)", name, flow.request.method,
                     frec.host, frec.identity)
        verdict = "deny" if check.denial is not None else "report" if check.report is not None else "allow"
        frec.checks.append(Check("rate-limit", frec.rate_limit.name, verdict, RATE_LIMITED if verdict != "allow" else "within budget"))
        if check.denial is not None:
            self.state.metrics.denials.labels(RATE_LIMITED).inc()
            answer_denied(flow, check.denial)
            assert flow.response is not None
            flow.response.headers["retry-after"] = str(check.retry_after)
            return
        if check.spend is not None:
            self.pending[flow.id] = check.spend

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        spend = self.pending.pop(flow.id, None)
        if spend is None:
            return
        assert flow.response is not None
        headers = flow.response.headers
        tap = TokenCountingTap(
            headers.get("content-type", ""), headers.get("content-encoding", ""), lambda n: self._spend(spend, n)
        )
        flow_record(flow).response_taps.append(tap)

    def response(self, flow: http.HTTPFlow) -> None:
        self.pending.pop(flow.id, None)

    def error(self, flow: http.HTTPFlow) -> None:
        """A response that failed mid-stream: the tokens reported before the failure are still spent."""
        self.pending.pop(flow.id, None)
        for tap in flow_record(flow).response_taps:
            if isinstance(tap, TokenCountingTap):
                tap.settle()

    async def done(self) -> None:
        """Shutdown: let token spending in flight finish, then close the Redis clients."""
        if self.spending:
            await asyncio.wait(set(self.spending), timeout=SHUTDOWN_GRACE)
        await self.state.rate_limiter.close()

    def _spend(self, spend: tuple[RateLimit, str], tokens: int) -> None:
        if tokens <= 0:
            return
        task = asyncio.ensure_future(self.state.rate_limiter.spend(spend, tokens))
        self.spending.add(task)
        task.add_done_callback(self._spent)

    def _spent(self, task: asyncio.Task[None]) -> None:
        self.spending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("spending rate-limit tokens failed: %r", task.exception())
