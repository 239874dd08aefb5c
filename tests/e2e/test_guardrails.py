"""TrafficPolicy `ai` through the real gateway (docs/guardrails.md): prompt guard REJECT and MASK per builtin with
true and false positives (a 16-digit number failing Luhn is no card), a custom pattern with a customResponse,
answers masked whole and while streaming (a card number split over two SSE events, the first part of the text
reaching the client before the origin sends the rest), a REJECT ending a stream, enrichment and defaults as the
provider sees them, and the gateway-wide model deny list. Workloads: the OpenAI SDK and httpx, through the
explicit proxy to a fake provider on loopback; one gateway serves the module."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.chat_origin import ChatOrigin
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.e2e

HOSTS = ["reject", "mask", "custom", "enrich", "rstream", "report"]

GATEWAY = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: http, protocol: HTTP}
  upstreamTLS:
    hostAliases:
    - {ip: 127.0.0.1, hostnames: [%s]}
""" % ", ".join(f"{h}.example.test" for h in HOSTS)


def _route(name: str) -> str:
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}}}
spec:
  parentRefs: [{{name: eg, sectionName: http}}]
  hostnames: [{name}.example.test]
  rules: [{{}}]
"""


def _policy(name: str, ai: str, target: str | None = None, mode: str = "Enforce") -> str:
    target = target or f"{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: {name}}}"
    body = "".join(f"\n    {line}" for line in ai.strip().splitlines())
    return f"""
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: {name}}}
spec:
  targetRefs: [{target}]
  enforcementMode: {mode}
  ai:{body}
"""


ALL = "[CreditCard, Email, PhoneNumber, Ssn, CaSin]"
POLICIES = [
    _policy("reject", f"promptGuard:\n  request:\n    regex: {{action: REJECT, builtins: {ALL}}}"),
    _policy("mask", f"""
promptGuard:
  request:
    regex: {{action: MASK, builtins: {ALL}}}
  response:
    regex: {{action: MASK, builtins: [CREDIT_CARD, EMAIL]}}
"""),
    _policy("custom", """
promptGuard:
  request:
    customResponse: {message: "project codes stay inside", statusCode: 422}
    regex:
      action: REJECT
      matches: [{pattern: 'ACME-\\d{6}', name: project code}]
"""),
    _policy("enrich", """
promptEnrichment:
  prepend: [{role: SYSTEM, content: "Answer in French."}]
  append: [{role: USER, content: "Be brief."}]
defaults:
- {field: temperature, value: 0.2}
- {field: max_tokens, value: 256, override: true}
"""),
    _policy("rstream", "promptGuard:\n  response:\n    regex: {action: REJECT, builtins: [CreditCard]}"),
    _policy("models", "models: {denied: ['gpt-3.5*', 'claude-2*']}",
            target="{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}"),
    _policy("report", """
promptGuard:
  request:
    regex: {action: REJECT, builtins: [CreditCard]}
  response:
    regex: {action: REJECT, builtins: [CreditCard]}
models: {denied: ['o1*']}
""", mode="Report"),
]

CARD = "4111 1111 1111 1111"  # Luhn-valid
NOT_A_CARD = "4111 1111 1111 1112"  # 16 digits, Luhn fails
TRUE_POSITIVES = {
    "CreditCard": f"my card is {CARD} thanks",
    "Email": "write to jane.doe@example.com please",
    "PhoneNumber": "call me at (555) 123-4567 today",
    "Ssn": "my ssn is 123-45-6789",
    "CaSin": "my SIN is 046 454 286",
}
FALSE_POSITIVES = {
    "CreditCard": f"order number {NOT_A_CARD}",
    "Email": "the user jane at example dot com",
    "PhoneNumber": "the build 12345 took 20 s",
    "Ssn": "ssn 000-12-3456 is never issued",
    "CaSin": "sin 046 454 287 fails its checksum",
}
MASKS = {"CreditCard": "<CREDIT_CARD>", "Email": "<EMAIL>", "PhoneNumber": "<PHONE_NUMBER>", "Ssn": "<SSN>",
         "CaSin": "<CA_SIN>"}


@pytest.fixture(scope="module")
def origin() -> Iterator[ChatOrigin]:
    with ChatOrigin() as o:
        yield o


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("guardrails")
    config = root / "config"
    config.mkdir()
    for i, doc in enumerate([GATEWAY, *(_route(h) for h in HOSTS), *POLICIES]):
        (config / f"{i:02d}.yaml").write_text(doc)
    proc = GatewayProcess(config, root / "data", extra_args=["--log-level", "debug"])
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def client(gw: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(proxy=gw.proxy_url, timeout=15) as c:
        yield c


def _url(origin: ChatOrigin, host: str, path: str = "/v1/chat/completions") -> str:
    return f"http://{host}.example.test:{origin.port}{path}"


def _chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


def _sdk(gw: GatewayProcess, origin: ChatOrigin, host: str) -> openai.OpenAI:
    http_client = httpx.Client(proxy=gw.proxy_url, timeout=15)
    return openai.OpenAI(base_url=_url(origin, host, "/v1"), api_key="dummy-key", http_client=http_client, max_retries=0)


def assert_rejected(r: httpx.Response, policy: str, message: str, status: int = 403) -> None:
    assert r.status_code == status, r.text
    assert r.headers["x-egress-denied"] == "prompt-rejected"
    assert r.json() == {"error": message, "reason": "prompt-rejected", "policy": f"TrafficPolicy/default/{policy}"}


# --- request: REJECT ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("builtin", sorted(TRUE_POSITIVES))
def test_reject_refuses_each_builtin_before_the_provider_sees_it(gw, origin, client, builtin) -> None:
    before = len(origin.bodies)
    r = client.post(_url(origin, "reject"), json=_chat(TRUE_POSITIVES[builtin]))
    assert_rejected(r, "reject", "the request was rejected by a prompt guard")
    assert len(origin.bodies) == before


@pytest.mark.parametrize("builtin", sorted(FALSE_POSITIVES))
def test_reject_lets_look_alikes_pass_unchanged(gw, origin, client, builtin) -> None:
    r = client.post(_url(origin, "reject"), json=_chat(FALSE_POSITIVES[builtin]))
    assert r.status_code == 200, r.text
    assert origin.bodies[-1]["messages"][0]["content"] == FALSE_POSITIVES[builtin]


def test_reject_reads_every_message_of_an_anthropic_request(gw, origin, client) -> None:
    body = {"model": "claude-3-5-haiku", "max_tokens": 10, "system": "be nice",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                         {"role": "assistant", "content": "hello"},
                         {"role": "user", "content": [{"type": "text", "text": TRUE_POSITIVES["Ssn"]}]}]}
    r = client.post(_url(origin, "reject", "/v1/messages"), json=body)
    assert_rejected(r, "reject", "the request was rejected by a prompt guard")


def test_custom_pattern_answers_with_the_custom_response(gw, origin, client) -> None:
    r = client.post(_url(origin, "custom"), json=_chat("about ACME-123456 and more"))
    assert_rejected(r, "custom", "project codes stay inside", 422)
    r = client.post(_url(origin, "custom"), json=_chat("about ACME-12345 and more"))  # five digits: no match
    assert r.status_code == 200


# --- request: MASK ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("builtin", sorted(TRUE_POSITIVES))
def test_mask_replaces_each_builtin_in_what_the_provider_receives(gw, origin, client, builtin) -> None:
    r = client.post(_url(origin, "mask"), json=_chat(TRUE_POSITIVES[builtin], user="jane.doe@example.com"))
    assert r.status_code == 200, r.text
    sent = origin.bodies[-1]
    assert MASKS[builtin] in sent["messages"][0]["content"]
    assert sent["user"] == "jane.doe@example.com"  # only message text is guarded, never other fields


def test_mask_leaves_false_positives_alone(gw, origin, client) -> None:
    text = " / ".join(FALSE_POSITIVES.values())
    assert client.post(_url(origin, "mask"), json=_chat(text)).status_code == 200
    assert origin.bodies[-1]["messages"][0]["content"] == text


def test_mask_covers_anthropic_system_and_text_blocks(gw, origin, client) -> None:
    body = {"model": "claude-3-5-haiku", "max_tokens": 10, "system": [{"type": "text", "text": TRUE_POSITIVES["Email"]}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": TRUE_POSITIVES["CreditCard"]}]}]}
    assert client.post(_url(origin, "mask", "/v1/messages"), json=body).status_code == 200
    sent = origin.bodies[-1]
    assert sent["system"] == [{"type": "text", "text": "write to <EMAIL> please"}]
    assert sent["messages"][0]["content"] == [{"type": "text", "text": "my card is <CREDIT_CARD> thanks"}]


# --- responses ---------------------------------------------------------------------------------------------------


def test_json_answers_are_masked_for_both_formats(gw, origin, client) -> None:
    origin.answer(f"card {CARD}, mail bob@example.org, not {NOT_A_CARD}")
    origin.gate.set()
    expected = f"card <CREDIT_CARD>, mail <EMAIL>, not {NOT_A_CARD}"
    r = client.post(_url(origin, "mask"), json=_chat("hi"))
    assert r.json()["choices"][0]["message"]["content"] == expected
    assert int(r.headers["content-length"]) == len(r.content)
    r = client.post(_url(origin, "mask", "/v1/messages"), json={"model": "claude-3-5-haiku", "max_tokens": 5,
                                                                  "messages": [{"role": "user", "content": "hi"}]})
    assert r.json()["content"][0]["text"] == expected
    assert origin.headers[-1].get("Accept-Encoding") == "identity"  # so the answer can be read as it streams


def test_a_card_split_over_two_sse_events_is_masked_and_the_stream_still_streams(gw, origin) -> None:
    """The OpenAI SDK as the workload: the first text arrives before the origin sends the second event."""
    origin.answer("Your card is 4111 1111", " 1111 1111, thanks")
    sdk = _sdk(gw, origin, "mask")
    stream = sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True)
    texts: list[str] = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            texts.append(chunk.choices[0].delta.content)
            if "".join(texts) == "Your card is ":
                origin.gate.set()  # only now does the origin send the rest of the number
    assert origin.gate.is_set()
    assert "".join(texts) == "Your card is <CREDIT_CARD>, thanks"
    assert texts[0] == "Your card is "  # the held part was never the plain words before the number


def test_anthropic_stream_is_masked_across_events(gw, origin, client) -> None:
    origin.answer("reach me at bob@exa", "mple.org soon")
    body = {"model": "claude-3-5-haiku", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    texts: list[str] = []
    with client.stream("POST", _url(origin, "mask", "/v1/messages"), json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if event.get("type") == "content_block_delta":
                    texts.append(event["delta"]["text"])
                    if "".join(texts) == "reach me at ":
                        origin.gate.set()
    assert "".join(texts) == "reach me at <EMAIL> soon"


def test_reject_on_a_stream_ends_it_with_an_error_and_never_sends_the_value(gw, origin) -> None:
    origin.answer("number 4111 1111", " 1111 1111 end")
    origin.gate.set()
    sdk = _sdk(gw, origin, "rstream")
    texts: list[str] = []
    with pytest.raises(openai.APIError, match="rejected by a prompt guard"):
        for chunk in sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                texts.append(chunk.choices[0].delta.content)
    assert "".join(texts) == "number "


def test_reject_on_a_json_answer_replaces_it_with_the_denial(gw, origin, client) -> None:
    origin.answer(f"number {CARD}")
    r = client.post(_url(origin, "rstream"), json=_chat("hi"))
    assert_rejected(r, "rstream", "the response was rejected by a prompt guard")
    assert CARD not in r.text


# --- enrichment, defaults, models -------------------------------------------------------------------------------


def test_enrichment_and_defaults_reach_the_openai_provider(gw, origin) -> None:
    origin.gate.set()
    sdk = _sdk(gw, origin, "enrich")
    sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}], max_tokens=9)
    sent = origin.bodies[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hello"},
        {"role": "user", "content": "Be brief."},
    ]
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 256  # absent: set; override: replaced
    sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], temperature=1)
    assert origin.bodies[-1]["temperature"] == 1  # present and no override: the client's value stays


def test_enrichment_puts_a_system_message_into_anthropic_system(gw, origin, client) -> None:
    body = {"model": "claude-3-5-haiku", "max_tokens": 5, "system": "You are terse.",
            "messages": [{"role": "user", "content": "Hello"}]}
    assert client.post(_url(origin, "enrich", "/v1/messages"), json=body).status_code == 200
    sent = origin.bodies[-1]
    assert sent["system"] == "Answer in French.\n\nYou are terse."
    assert sent["messages"] == [{"role": "user", "content": "Hello"}, {"role": "user", "content": "Be brief."}]


@pytest.mark.parametrize("host", ["mask", "enrich"])
def test_a_model_on_the_gateway_deny_list_is_refused_on_every_route(gw, origin, client, host) -> None:
    before = len(origin.bodies)
    r = client.post(_url(origin, host), json=_chat("hi", model="gpt-3.5-turbo"))
    assert_rejected(r, "models", "model gpt-3.5-turbo is denied")
    assert len(origin.bodies) == before
    assert client.post(_url(origin, host), json=_chat("hi", model="gpt-4o")).status_code == 200


def test_denials_are_counted_and_no_guarded_value_reaches_logs_or_config_dump(gw, origin, client) -> None:
    client.post(_url(origin, "reject"), json=_chat(TRUE_POSITIVES["CreditCard"]))
    counted = re.search(r'^egress_denials_total\{reason="prompt-rejected"\} ([0-9.]+)$', gw.metrics(), re.M)
    assert counted is not None and float(counted.group(1)) >= 1
    dump = gw.admin("/config_dump").text
    assert '"TrafficPolicy/default/mask"' in dump
    for text in (gw.logs(), dump, gw.metrics()):
        for value in (CARD, "4111111111111111", "123-45-6789", "046 454 286", "jane.doe@example.com", "ACME-123456"):
            assert value not in text



# --- Report mode ------------------------------------------------------------------------------------------------


def _reports(gw: GatewayProcess) -> float:
    found = re.search(r'^egress_policy_reports_total\{policy="TrafficPolicy/default/report",reason="prompt-rejected"\} '
                      r'([0-9.]+)$', gw.metrics(), re.M)
    return float(found.group(1)) if found else 0.0


def test_report_mode_lets_rejections_pass_and_counts_each(gw, origin, client) -> None:
    origin.answer("number 4111 1111", " 1111 1111 end")
    origin.gate.set()
    before = _reports(gw)
    r = client.post(_url(origin, "report"), json=_chat(TRUE_POSITIVES["CreditCard"], model="o1-mini"))
    assert r.status_code == 200, r.text
    assert origin.bodies[-1]["messages"][0]["content"] == TRUE_POSITIVES["CreditCard"]  # passed as sent
    assert r.json()["choices"][0]["message"]["content"] == f"number {CARD} end"
    assert _reports(gw) == before + 3  # the model, the prompt and the answer
    texts = []
    for chunk in _sdk(gw, origin, "report").chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            texts.append(chunk.choices[0].delta.content)
    assert "".join(texts) == f"number {CARD} end"
    assert _reports(gw) == before + 4
    assert "report: TrafficPolicy/default/report would deny POST" in gw.logs()
