"""addons/token_metrics.py with mitmproxy's test helpers: which requests are GenAI calls, and their usage."""

from __future__ import annotations

import json
from pathlib import Path

from mitmproxy.test import taddons, tflow, tutils

from addons.token_metrics import TokenMetrics
from egressproxy.engine.answers import flow_record
from egressproxy.runtime.state import GatewayState
from egressproxy.taps import TapChain


def flow_to(host: str, body: dict[str, object]):  # type: ignore[no-untyped-def]
    flow = tflow.tflow()
    flow.request.host = host
    flow.request.path = "/v1/messages"
    flow.request.content = json.dumps(body).encode()
    flow_record(flow).host = host
    return flow


def respond(addon: TokenMetrics, flow, body: bytes, content_type: str = "application/json") -> None:  # type: ignore[no-untyped-def]
    flow.response = tutils.tresp(content=b"")
    flow.response.headers["content-type"] = content_type
    addon.responseheaders(flow)
    chain = TapChain(flow_record(flow).response_taps)
    chain.feed(body)
    chain.finish()
    addon.response(flow)


def test_a_provider_call_records_the_requested_model_and_the_reported_usage(tmp_path: Path) -> None:
    addon = TokenMetrics(GatewayState(tmp_path))
    with taddons.context(addon):
        flow = flow_to("api.anthropic.com", {"model": "claude-x", "messages": []})
        addon.request(flow)
        usage = {"input_tokens": 5, "cache_read_input_tokens": 50, "output_tokens": 7}
        respond(addon, flow, json.dumps({"usage": usage}).encode())
    call = flow_record(flow).gen_ai
    assert call is not None
    assert (call.provider, call.request_model, call.input_tokens, call.output_tokens, call.reported) == (
        "anthropic", "claude-x", 55, 7, True
    )


def test_a_host_that_is_no_provider_is_not_parsed(tmp_path: Path) -> None:
    addon = TokenMetrics(GatewayState(tmp_path))
    with taddons.context(addon):
        flow = flow_to("api.example.test", {"model": "x"})
        addon.request(flow)
        respond(addon, flow, b'{"usage": {"total_tokens": 3}}')
    assert flow_record(flow).gen_ai is None and flow_record(flow).response_taps == []


def test_a_stream_cut_short_still_records_what_was_reported(tmp_path: Path) -> None:
    addon = TokenMetrics(GatewayState(tmp_path))
    with taddons.context(addon):
        flow = flow_to("api.openai.com", {"model": "gpt-x", "stream": True})
        addon.request(flow)
        flow.response = tutils.tresp(content=b"")
        flow.response.headers["content-type"] = "text/event-stream"
        addon.responseheaders(flow)
        TapChain(flow_record(flow).response_taps).feed(
            b'data: {"usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}\n\n'
        )
        addon.error(flow)
    call = flow_record(flow).gen_ai
    assert call is not None and (call.input_tokens, call.output_tokens, call.reported) == (4, 2, True)
