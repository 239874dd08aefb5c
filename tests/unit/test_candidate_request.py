"""prepare_candidate: each candidate's path, model and credential, from a replay buffer that never changes."""

from __future__ import annotations

import asyncio
import json

from egressproxy.candidate_request import CandidateContext, candidate_path, prepare_candidate
from egressproxy.cross_format import candidate_formats
from egressproxy.credential_injection import OutgoingRequest
from egressproxy.failover_plan import direct_reason
from egressproxy.gcp_tokens import ServiceAccountTokens
from egressproxy.outcomes import GatewayFailure
from egressproxy.snapshot import AIProvider, Snapshot
from egressproxy.upstreams import Upstream
from tests.support.addon_state import compile_snapshot

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  listeners:
  - {name: http, protocol: HTTP}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: ai}
spec:
  type: AI
  ai:
    priorityGroups:
    - providers:
      - name: cloud
        openai: {model: gpt-4o-mini, authToken: {kind: Inline, inline: sk-cloud-SECRET}}
    - providers:
      - name: local
        openai:
          model: llama3
          authToken: {kind: Inline, inline: sk-local-SECRET}
          hostOverride: {host: 127.0.0.1, port: 11434, scheme: http}
          pathOverride: {fullPath: /api/v1/chat}
      - name: claude
        anthropic: {model: claude-x, authToken: {kind: Inline, inline: sk-ant-SECRET}}
"""


def _snapshot() -> Snapshot:
    return compile_snapshot(CONFIG)


def _candidate(snapshot: Snapshot, name: str, scheme: str = "https", host: str = "api.openai.com", port: int = 443) -> Upstream:
    backend = next(b for b in snapshot.backends.values() if b.ref.name == "ai")
    provider = next(p for group in backend.ai_groups for p in group if p.name == name)
    return Upstream(host, port, scheme, backend=backend, provider=provider)


ORIGINAL = OutgoingRequest(
    "POST", "https", "llm.example.test", "/v1/chat/completions?x=1",
    [("host", "llm.example.test"), ("authorization", "Bearer workload"), ("content-type", "application/json")],
    json.dumps({"model": "asked", "messages": []}).encode(),
)


def _prepare(snapshot: Snapshot, upstream: Upstream) -> OutgoingRequest | GatewayFailure:
    async def fetch(uri: str, form: dict[str, str]) -> tuple[int, object]:
        raise AssertionError("no token fetch")

    return asyncio.run(prepare_candidate(snapshot, upstream, CandidateContext(None, None, "http"), ORIGINAL, ServiceAccountTokens(), fetch))


def test_each_candidate_gets_its_own_model_and_credential_and_the_buffer_is_untouched() -> None:
    snapshot = _snapshot()
    body_before, headers_before = ORIGINAL.body, list(ORIGINAL.headers)
    cloud = _prepare(snapshot, _candidate(snapshot, "cloud"))
    assert isinstance(cloud, OutgoingRequest)
    assert json.loads(cloud.body)["model"] == "gpt-4o-mini"
    assert cloud.header("authorization") == "Bearer sk-cloud-SECRET"
    assert cloud.header("content-length") == str(len(cloud.body))
    assert cloud.path == "/v1/chat/completions?x=1"
    assert (ORIGINAL.body, ORIGINAL.headers) == (body_before, headers_before)


def test_a_local_candidate_gets_its_path_and_model_and_no_credential_over_cleartext() -> None:
    snapshot = _snapshot()
    local = _prepare(snapshot, _candidate(snapshot, "local", "http", "127.0.0.1", 11434))
    assert isinstance(local, GatewayFailure) and local.reason == "credential-requires-tls"
    assert "SECRET" not in local.detail


def test_the_candidates_authority_is_what_a_signature_covers() -> None:
    snapshot = _snapshot()
    upstream = _candidate(snapshot, "cloud")

    async def fetch(uri: str, form: dict[str, str]) -> tuple[int, object]:
        raise AssertionError("no token fetch")

    prepared = asyncio.run(prepare_candidate(snapshot, upstream, CandidateContext(None, None, "http"), ORIGINAL,
                                             ServiceAccountTokens(), fetch, "api.openai.com"))
    assert isinstance(prepared, OutgoingRequest) and prepared.authority == "api.openai.com"
    assert ORIGINAL.authority == "llm.example.test"


def test_path_override_keeps_the_query() -> None:
    provider = AIProvider("local", "openai", path="/api/v1/chat")
    assert candidate_path("/v1/chat/completions?stream=1", Upstream("h", 80, provider=provider)) == "/api/v1/chat?stream=1"
    assert candidate_path("/v1/x", Upstream("h", 80)) == "/v1/x"


def test_a_translated_candidate_gets_the_translated_body_and_path_and_its_own_credential() -> None:
    snapshot = _snapshot()
    claude = _candidate(snapshot, "claude", host="api.anthropic.com")
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode()
    original = OutgoingRequest("POST", "https", "llm.example.test", "/v1/chat/completions?x=1",
                               [("host", "llm.example.test"), ("accept-encoding", "gzip"), ("openai-organization", "o")], body)
    translation = candidate_formats(original.path, body, None, (_candidate(snapshot, "cloud"), claude))[claude]
    assert not isinstance(translation, str)

    async def fetch(uri: str, form: dict[str, str]) -> tuple[int, object]:
        raise AssertionError("no token fetch")

    prepared = asyncio.run(prepare_candidate(snapshot, claude, CandidateContext(None, None, "http"), original,
                                             ServiceAccountTokens(), fetch, None, translation))
    assert isinstance(prepared, OutgoingRequest)
    assert prepared.path == "/v1/messages"
    sent = json.loads(prepared.body)
    assert sent["model"] == "claude-x" and sent["max_tokens"] == 4096
    assert prepared.header("accept-encoding") == "identity" and prepared.header("openai-organization") is None
    assert prepared.header("content-length") == str(len(prepared.body))
    assert prepared.header("x-api-key") == "sk-ant-SECRET"


def test_which_requests_are_walked() -> None:
    snapshot = _snapshot()
    cloud, local = _candidate(snapshot, "cloud"), _candidate(snapshot, "local")
    assert direct_reason((cloud, local), 10, 1024) is None
    assert direct_reason((cloud,), 10, 1024) == "one candidate"
    assert direct_reason((Upstream("a", 443), Upstream("b", 443)), 10, 1024) == "one candidate"
    too_big = direct_reason((cloud, local), 2048, 1024)
    assert too_big is not None and "replay buffer" in too_big
