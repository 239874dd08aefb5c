"""The configured provider model replaces the client's (egressproxy/model_rewrite.py), on the `request` hook.

Runs after the body taps (the capture keeps what the client sent) and before credential injection (a SigV4
signature covers the body as sent). A Content-Encoding is decoded and re-applied by mitmproxy's content
accessors, which also keep Content-Length right.
"""

from __future__ import annotations

from mitmproxy import http

from egressproxy.engine.answers import flow_record
from egressproxy.engine.guard import fail_closed
from egressproxy.model_rewrite import configured_model, rewrite_model
from egressproxy.runtime.state import GatewayState

__all__ = ["ModelRewrite"]


class ModelRewrite:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        upstream = flow_record(flow).upstream
        model = configured_model(upstream.provider if upstream is not None else None)
        if flow.response is not None or model is None:
            return
        body = flow.request.get_content(strict=False)
        rewritten = rewrite_model(body, model) if body is not None else None
        if rewritten is not None:
            flow.request.set_content(rewritten)
