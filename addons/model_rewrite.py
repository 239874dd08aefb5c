"""The candidate's path and model replace the client's (egressproxy/candidate_request.py), on the `request` hook.

`pathOverride.fullPath` replaces the path (the query kept), and the provider's configured model replaces the
body's (kgateway's AI Backend `model`), with the same functions the failover hop applies to each replay.

Runs after the body taps (the capture keeps what the client sent) and before credential injection (a SigV4
signature covers the path and body as sent). A Content-Encoding is decoded and re-applied by mitmproxy's
content accessors, which also keep Content-Length right. A request sent through the failover hop is left
alone: the hop prepares it for each candidate.
"""

from __future__ import annotations

from mitmproxy import http

from egressproxy.candidate_request import candidate_path
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
        frec = flow_record(flow)
        upstream = frec.upstream
        if flow.response is not None or upstream is None or frec.hop is not None:
            return
        path = candidate_path(flow.request.path, upstream)
        if path != flow.request.path:
            flow.request.path = path
        model = configured_model(upstream.provider)
        if model is None:
            return
        body = flow.request.get_content(strict=False)
        rewritten = rewrite_model(body, model) if body is not None else None
        if rewritten is not None:
            flow.request.set_content(rewritten)
