"""addons/ai_guardrails.py with mitmproxy's test helpers: request denial and masking (a large body judged off the
event loop), the response guard tap put first in the chain for SSE, JSON answers buffered and masked whole."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from mitmproxy.test import taddons, tflow, tutils

from addons.ai_guardrails import THREAD_ABOVE, AiGuardrails
from egressproxy.engine.answers import flow_record
from egressproxy.pii_detectors import builtin
from egressproxy.prompt_guard import AiPolicy, RegexGuard, RequestGuard
from egressproxy.runtime.state import GatewayState
from egressproxy.stream_masking import SseGuardTap
from egressproxy.taps import Tap
from tests.support.addon_state import counter
from tests.support.trace import trace_lines

P = "TrafficPolicy/ns/p"
CARD = "4111 1111 1111 1111"
REJECT = AiPolicy(request=RequestGuard(RegexGuard("REJECT", (builtin("CreditCard"),), P)))
MASK_BOTH = AiPolicy(request=RequestGuard(RegexGuard("MASK", (builtin("CreditCard"),), P)),
                     response=RegexGuard("MASK", (builtin("CreditCard"),), P))


def chat_flow(policy: AiPolicy, text: str):  # type: ignore[no-untyped-def]
    flow = tflow.tflow()
    flow.request.method, flow.request.path = "POST", "/v1/chat/completions"
    flow.request.set_content(json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode())
    flow_record(flow).ai = policy
    return flow


def test_a_large_body_is_judged_off_the_loop_and_still_rejected(tmp_path: Path) -> None:
    state = GatewayState(tmp_path)
    addon = AiGuardrails(state)
    flow = chat_flow(REJECT, "x " * THREAD_ABOVE + CARD)
    with taddons.context(addon):
        asyncio.run(addon.request(flow))
    assert flow.response is not None and flow.response.status_code == 403
    assert flow.response.headers["x-egress-denied"] == "prompt-rejected"
    assert counter(state, "egress_denials_total", reason="prompt-rejected") == 1
    assert flow.marked and trace_lines(flow) == [  # the trace mitmweb shows, as explain --body prints it
        "ai: prompt-rejected by TrafficPolicy/ns/p: CreditCard found",
    ]


def test_mask_rewrites_the_request_and_asks_for_identity_encoding(tmp_path: Path) -> None:
    addon = AiGuardrails(GatewayState(tmp_path))
    flow = chat_flow(MASK_BOTH, f"card {CARD}")
    flow.request.headers["accept-encoding"] = "gzip, br"
    asyncio.run(addon.request(flow))
    assert flow.response is None
    assert json.loads(flow.request.content or b"")["messages"][0]["content"] == "card <CREDIT_CARD>"
    assert flow.request.headers["accept-encoding"] == "identity"


def test_an_sse_answer_gets_the_guard_tap_first(tmp_path: Path) -> None:
    addon = AiGuardrails(GatewayState(tmp_path))
    flow = chat_flow(MASK_BOTH, "hi")
    flow.response = tutils.tresp(headers=[(b"content-type", b"text/event-stream"), (b"transfer-encoding", b"chunked")])
    flow.response.stream = True
    counting = Tap()
    flow_record(flow).response_taps.append(counting)
    addon.responseheaders(flow)
    taps = flow_record(flow).response_taps
    assert isinstance(taps[0], SseGuardTap) and taps[1] is counting
    assert flow.response.stream is True


def test_a_json_answer_is_buffered_and_masked_whole(tmp_path: Path) -> None:
    addon = AiGuardrails(GatewayState(tmp_path))
    flow = chat_flow(MASK_BOTH, "hi")
    answer = {"choices": [{"message": {"role": "assistant", "content": f"card {CARD}"}}]}
    flow.response = tutils.tresp(headers=[(b"content-type", b"application/json")], content=json.dumps(answer).encode())
    flow.response.stream = True
    addon.responseheaders(flow)
    assert flow.response.stream is False
    addon.response(flow)
    assert json.loads(flow.response.content or b"")["choices"][0]["message"]["content"] == "card <CREDIT_CARD>"
    assert flow.response.headers["content-length"] == str(len(flow.response.raw_content or b""))


def test_flows_without_ai_are_left_alone(tmp_path: Path) -> None:
    addon = AiGuardrails(GatewayState(tmp_path))
    flow = tflow.tflow(resp=True)
    before = flow.request.content
    asyncio.run(addon.request(flow))
    addon.responseheaders(flow)
    addon.response(flow)
    assert flow.request.content == before and flow_record(flow).response_taps == []
