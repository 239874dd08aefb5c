"""Cross-format failover through the real process: an OpenAI client served by an Anthropic fallback and an
Anthropic client served by an OpenAI fallback, JSON and streamed, each parsed by its own official SDK.

`api.openai.com` and `api.anthropic.com` resolve (hostAliases) to two scripted TLS origins on loopback with
certificates from the test CA the gateway trusts; each answers in the format its request path names
(tests/support/provider_origin.py). Every case has its own Backend (own cooldowns) and route
(`<case>.llm.test`) and names itself to the origins in `x-test-case`. The workloads hold a dummy key; SDK retries
are off, so every retry seen is the gateway's.
"""

from __future__ import annotations

import json
import ssl
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.pki import TestCA
from tests.support.provider_origin import Json, ProviderOrigin, Reset, Sse
from tests.support.loopback import random_loopback

pytestmark = pytest.mark.e2e

OPENAI_KEY = "sk-openai-SECRET-xlate"
ANTHROPIC_KEY = "sk-ant-SECRET-xlate"
DUMMY = "dummy-workload-key"

GPT = f"""      - name: gpt
        openai: {{model: gpt-4o-mini, authToken: {{kind: Inline, inline: {OPENAI_KEY}}}}}"""
CLAUDE = f"""      - name: claude
        anthropic: {{model: claude-x, authToken: {{kind: Inline, inline: {ANTHROPIC_KEY}}}}}"""
GPT_AGAIN = f"""      - name: gpt-again
        openai: {{model: gpt-4o-mini, authToken: {{kind: Inline, inline: {OPENAI_KEY}}}}}"""

# case -> priority groups
OPENAI_FIRST = {c: [[GPT], [CLAUDE]] for c in ("oa-json", "oa-stream", "oa-first", "oa-cut", "oa-400")}
ANTHROPIC_FIRST = {c: [[CLAUDE], [GPT]] for c in ("ao-json", "ao-stream")}
CASES = {**OPENAI_FIRST, **ANTHROPIC_FIRST, "oa-n2": [[GPT], [CLAUDE], [GPT_AGAIN]]}



def _case(case: str, groups: list[list[str]]) -> str:
    body = "".join("\n    - providers:\n" + "\n".join(group) for group in groups)
    return f"""apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: ai-{case}}}
spec:
  type: AI
  ai:
    priorityGroups:{body}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r-{case}}}
spec:
  parentRefs: [{{name: eg, sectionName: https}}]
  hostnames: [{case}.llm.test]
  rules:
  - backendRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: ai-{case}}}]
"""


class Scene:
    def __init__(self, gw: GatewayProcess, gpt: ProviderOrigin, claude: ProviderOrigin, ca: Path) -> None:
        self.gw, self.gpt, self.claude, self.ca = gw, gpt, claude, ca

    def http(self) -> httpx.Client:
        return httpx.Client(proxy=self.gw.proxy_url, verify=ssl.create_default_context(cafile=str(self.ca)), timeout=20)

    def openai(self, case: str) -> openai.OpenAI:
        return openai.OpenAI(api_key=DUMMY, base_url=f"https://{case}.llm.test/v1", max_retries=0,
                             default_headers={"x-test-case": case}, http_client=self.http())

    def anthropic(self, case: str) -> anthropic.Anthropic:
        # This SDK brings its own httpx fork (httpx2): its client, with the same proxy and trust.
        http = anthropic.DefaultHttpxClient(proxy=self.gw.proxy_url, verify=ssl.create_default_context(cafile=str(self.ca)), timeout=20)
        return anthropic.Anthropic(api_key=DUMMY, base_url=f"https://{case}.llm.test", max_retries=0,
                                   default_headers={"x-test-case": case}, http_client=http)

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.gw.metrics().splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory, origin_ca: TestCA, gateway_ca: tuple[Path, str]) -> Iterator[Scene]:
    tmp = tmp_path_factory.mktemp("xlate")
    gpt_ip, claude_ip = random_loopback(), random_loopback()
    gcert = origin_ca.issue("api.openai.com").write(tmp / "gpt", "leaf")
    ccert = origin_ca.issue("api.anthropic.com").write(tmp / "claude", "leaf")
    with ProviderOrigin("openai", gpt_ip, 443, tls=gcert) as gpt, ProviderOrigin("anthropic", claude_ip, 443, tls=ccert) as claude:
        trust = textwrap.indent(origin_ca.cert_pem.decode(), "    ")
        hosts = [f"{c}.llm.test" for c in CASES]
        docs = [
            gateway_ca[1],
            f"apiVersion: v1\nkind: Secret\nmetadata: {{name: origin-ca}}\nstringData:\n  ca.crt: |\n{trust}",
            f"""apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: deny-all
  listeners:
  - {{name: https, protocol: HTTPS, tls: {{mode: Terminate, caCertRef: {{name: egress-ca}}}}}}
  upstreamTLS:
    additionalTrustBundleSecretRef: {{name: origin-ca}}
    hostAliases:
    - {{ip: {gpt_ip}, hostnames: [api.openai.com]}}
    - {{ip: {claude_ip}, hostnames: [api.anthropic.com]}}
    - {{ip: 127.0.0.1, hostnames: {json.dumps(hosts)}}}
""",
            *(_case(case, groups) for case, groups in CASES.items()),
        ]
        config = tmp / "config"
        config.mkdir()
        for i, doc in enumerate(docs):
            (config / f"{i:02d}.yaml").write_text(doc)
        with GatewayProcess(config, tmp / "data", extra_args=["--log-level", "debug"]) as gw:
            yield Scene(gw, gpt, claude, gateway_ca[0])


def _openai_chat(scene: Scene, case: str, **kwargs: Any) -> Any:
    return scene.openai(case).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], **kwargs)


def _anthropic_message(scene: Scene, case: str, **kwargs: Any) -> Any:
    return scene.anthropic(case).messages.create(model="claude-asked", max_tokens=64,
                                                 messages=[{"role": "user", "content": "hi"}], **kwargs)


def test_an_openai_client_is_answered_by_the_anthropic_fallback_in_openai_json(scene: Scene) -> None:
    scene.gpt.script("oa-json", Json(503, {"error": {"message": "overloaded"}}))
    completion = _openai_chat(scene, "oa-json")
    assert completion.choices[0].message.content == "from anthropic"
    assert completion.model == "gpt-4o" and completion.choices[0].finish_reason == "stop"
    [sent] = scene.claude.seen("oa-json")
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY and "authorization" not in sent.headers
    assert sent.headers["anthropic-version"] == "2023-06-01"
    body = json.loads(sent.body)
    assert body["model"] == "claude-x" and body["max_tokens"] == 4096
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_an_openai_client_streams_from_the_anthropic_fallback(scene: Scene) -> None:
    scene.gpt.script("oa-stream", Json(503))
    scene.claude.script("oa-stream", Sse(events=3))
    chunks = list(_openai_chat(scene, "oa-stream", stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "anthropic-0 anthropic-1 anthropic-2 "
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    assert json.loads(scene.claude.seen("oa-stream")[0].body)["stream"] is True


def test_the_translated_stream_sends_its_first_event_before_the_fallback_sends_its_last(scene: Scene) -> None:
    gate = threading.Event()
    scene.gpt.script("oa-first", Json(503))
    scene.claude.script("oa-first", Sse(events=3, wait_after=0, gate=gate))
    received: list[str] = []
    for chunk in _openai_chat(scene, "oa-first", stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            received.append(chunk.choices[0].delta.content)
            gate.set()  # the origin sends events 1 and 2 only once the client has event 0
    assert received == ["anthropic-0 ", "anthropic-1 ", "anthropic-2 "]


def test_a_cut_translated_stream_ends_with_an_error_never_a_clean_end(scene: Scene) -> None:
    scene.gpt.script("oa-cut", Json(503))
    scene.claude.script("oa-cut", Reset(events=1))
    got: list[str] = []
    with scene.http() as client, client.stream(
        "POST", "https://oa-cut.llm.test/v1/chat/completions", headers={"x-test-case": "oa-cut"},
        json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    ) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.HTTPError):
            for line in response.iter_lines():
                got.append(line)
    text = "\n".join(got)
    assert "anthropic-0" in text
    assert '"error"' in text and "[DONE]" not in text
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        list(_openai_chat(scene, "oa-cut", stream=True))


def test_a_client_error_of_the_fallback_reaches_the_client_in_its_own_format(scene: Scene) -> None:
    scene.gpt.script("oa-400", Json(503))
    scene.claude.script("oa-400", Json(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}))
    with pytest.raises(openai.BadRequestError) as raised:
        _openai_chat(scene, "oa-400")
    assert raised.value.status_code == 400 and raised.value.message.endswith("bad")
    assert len(scene.claude.seen("oa-400")) == 1


def test_an_anthropic_client_is_answered_by_the_openai_fallback_in_anthropic_json(scene: Scene) -> None:
    scene.claude.script("ao-json", Json(529, {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}))
    message = _anthropic_message(scene, "ao-json")
    assert message.content[0].text == "from openai" and message.model == "claude-asked"
    assert message.stop_reason == "end_turn"
    [sent] = scene.gpt.seen("ao-json")
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert "x-api-key" not in sent.headers and "anthropic-version" not in sent.headers
    body = json.loads(sent.body)
    assert body["model"] == "gpt-4o-mini" and body["messages"] == [{"role": "user", "content": "hi"}]


def test_an_anthropic_client_streams_from_the_openai_fallback(scene: Scene) -> None:
    scene.claude.script("ao-stream", Json(503))
    scene.gpt.script("ao-stream", Sse(events=3))
    kinds: list[str] = []
    text = ""
    for event in _anthropic_message(scene, "ao-stream", stream=True):
        kinds.append(event.type)
        if event.type == "content_block_delta":
            text += event.delta.text
    assert text == "openai-0 openai-1 openai-2 "
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"


def test_an_untranslatable_request_skips_the_other_format_candidate(scene: Scene) -> None:
    """OpenAI's n=2 has no Anthropic equivalent: the Anthropic fallback is never sent the prompt, the next
    OpenAI candidate is."""
    scene.gpt.script("oa-n2", Json(503), Json())
    completion = _openai_chat(scene, "oa-n2", n=2)
    assert completion.choices[0].message.content == "from openai"
    assert scene.claude.seen("oa-n2") == []
    assert len(scene.gpt.seen("oa-n2")) == 2
    assert scene.metric("egress_upstream_attempts_total", backend="default/ai-oa-n2", provider="claude", outcome="skipped") == 1


def test_no_secret_reaches_logs_or_metrics(scene: Scene) -> None:
    text = scene.gw.logs() + scene.gw.metrics()
    assert OPENAI_KEY not in text and ANTHROPIC_KEY not in text
