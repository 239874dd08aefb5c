"""GenAI token usage for `gen_ai_client_token_usage`: note the provider and requested model, count the usage.

On the `request` hook (the body is buffered; runs before the model rewrite, so the model is the client's) a
request to a GenAI provider (egressproxy/gen_ai.py) gets a `GenAiCall` on its record. On `responseheaders` a
token-counting tap joins the response's tap chain (before the body taps build it); when the body ends the usage
the provider reported lands on the record, and the metrics sink observes it from the finished record.
"""

from __future__ import annotations

import dataclasses

from mitmproxy import http

from egressproxy.engine.answers import flow_record
from egressproxy.engine.guard import fail_closed
from egressproxy.flowrecord import FlowRecord, GenAiCall
from egressproxy.gen_ai import provider_name, requested_model
from egressproxy.runtime.state import GatewayState
from egressproxy.token_usage import TokenCountingTap, TokenUsage

__all__ = ["TokenMetrics"]


class TokenMetrics:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.taps: dict[str, TokenCountingTap] = {}  # flow id -> the tap of a response being counted

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        record = flow_record(flow)
        upstream = record.upstream
        provider = upstream.provider if upstream is not None else None
        name = provider_name(provider, record.host)
        if name is None:
            return
        model = requested_model(flow.request.raw_content, flow.request.path, provider.model if provider else None)
        record.gen_ai = GenAiCall(name, model)

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        record = flow_record(flow)
        if record.gen_ai is None:
            return
        assert flow.response is not None
        headers = flow.response.headers
        tap = TokenCountingTap(headers.get("content-type", ""), headers.get("content-encoding", ""), lambda _: None)
        tap.on_usage = lambda _: _record_usage(record, tap.usage)
        record.response_taps.append(tap)
        self.taps[flow.id] = tap

    def response(self, flow: http.HTTPFlow) -> None:
        self.taps.pop(flow.id, None)

    def error(self, flow: http.HTTPFlow) -> None:
        """A response that failed mid-stream: the usage reported before the failure still counts."""
        tap = self.taps.pop(flow.id, None)
        if tap is not None:
            tap.settle()


def _record_usage(record: FlowRecord, usage: TokenUsage) -> None:
    if record.gen_ai is not None and usage.seen:
        record.gen_ai = dataclasses.replace(
            record.gen_ai, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, reported=True
        )
