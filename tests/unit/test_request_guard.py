"""egressproxy/request_guard.py and chat_bodies.py: a request body through its AI policy - defaults, model lists,
the prompt guard on every message text (never keys or other fields), enrichment - in that order."""

from __future__ import annotations

import json
from typing import Any

from egressproxy.pii_detectors import builtin, custom
from egressproxy.prompt_guard import AiPolicy, Enrichment, FieldDefault, ModelLists, RegexGuard, RequestGuard
from egressproxy.request_guard import DEFAULT_REJECT_MESSAGE, guard_request

P = "TrafficPolicy/ns/p"
CARD = "4111 1111 1111 1111"
MASK = RequestGuard(RegexGuard("MASK", (builtin("CreditCard"), builtin("Email")), P))
REJECT = RequestGuard(RegexGuard("REJECT", (builtin("Ssn"), custom(r"ACME-\d+", "code")), P), "no PII", 451)
OPENAI = "/v1/chat/completions"
ANTHROPIC = "/v1/messages"


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def sent(outcome: Any) -> dict[str, Any]:
    assert outcome.verdict is None and outcome.body is not None
    return json.loads(outcome.body)  # type: ignore[no-any-return]


def test_mask_rewrites_message_text_in_strings_and_parts_but_not_keys_or_other_fields() -> None:
    messages = [
        {"role": "system", "content": f"card {CARD}"},
        {"role": "user", "content": [{"type": "text", "text": "me@example.com"}, {"type": "image_url", "image_url": {"url": "x"}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "function": {"arguments": f'{{"c": "{CARD}"}}'}}]},
    ]
    out = sent(guard_request(AiPolicy(request=MASK), OPENAI, body(model="m", messages=messages, user="me@example.com")))
    assert out["messages"][0]["content"] == "card <CREDIT_CARD>"
    assert out["messages"][1]["content"][0] == {"type": "text", "text": "<EMAIL>"}
    assert out["messages"][2]["tool_calls"][0]["function"]["arguments"] == f'{{"c": "{CARD}"}}'
    assert out["user"] == "me@example.com"


def test_reject_names_the_policy_and_answers_the_custom_response_without_the_value() -> None:
    outcome = guard_request(AiPolicy(request=REJECT), ANTHROPIC,
                            body(model="m", system="ssn 123-45-6789", messages=[{"role": "user", "content": "hi"}]))
    assert outcome.verdict is not None and not outcome.verdict.allowed
    assert (outcome.verdict.reason, outcome.verdict.policy) == ("prompt-rejected", P)
    assert (outcome.verdict.message, outcome.verdict.status_code) == ("no PII", 451)
    assert "123-45-6789" not in " ".join(outcome.steps) and "Ssn found" in outcome.steps[-1]


def test_reject_without_a_custom_response_uses_the_default_message() -> None:
    guard = RequestGuard(REJECT.regex)
    outcome = guard_request(AiPolicy(request=guard), OPENAI, body(messages=[{"role": "user", "content": "ACME-1"}]))
    assert outcome.verdict is not None and outcome.verdict.message == DEFAULT_REJECT_MESSAGE
    assert outcome.verdict.status_code == 403


def test_clean_requests_pass_unchanged() -> None:
    outcome = guard_request(AiPolicy(request=REJECT), OPENAI, body(messages=[{"role": "user", "content": "hello"}]))
    assert outcome.verdict is None and outcome.body is None


def test_enrichment_openai_and_anthropic() -> None:
    enrichment = Enrichment((("SYSTEM", "Be exact."), ("user", "Context.")), (("USER", "Thanks."),))
    policy = AiPolicy(enrichment=enrichment, enrichment_policy=P)
    out = sent(guard_request(policy, OPENAI, body(messages=[{"role": "user", "content": "Q"}])))
    assert [m["role"] for m in out["messages"]] == ["system", "user", "user", "user"]
    out = sent(guard_request(policy, ANTHROPIC, body(messages=[{"role": "user", "content": "Q"}])))
    assert out["system"] == "Be exact."
    assert out["messages"] == [{"role": "user", "content": "Context."}, {"role": "user", "content": "Q"},
                               {"role": "user", "content": "Thanks."}]
    out = sent(guard_request(policy, ANTHROPIC, body(system=[{"type": "text", "text": "S"}], messages=[])))
    assert out["system"] == [{"type": "text", "text": "Be exact."}, {"type": "text", "text": "S"}]


def test_enrichment_is_not_judged_by_the_prompt_guard() -> None:
    policy = AiPolicy(request=REJECT, enrichment=Enrichment((("system", "ACME-1 is ours"),), ()), enrichment_policy=P)
    assert guard_request(policy, OPENAI, body(messages=[{"role": "user", "content": "hi"}])).verdict is None


def test_defaults_set_absent_fields_and_override_when_told() -> None:
    defaults = (FieldDefault(("temperature",), 0.2), FieldDefault(("max_tokens",), 100, override=True),
                FieldDefault(("metadata", "team"), "a"))
    policy = AiPolicy(defaults=defaults, defaults_policy=P)
    out = sent(guard_request(policy, OPENAI, body(messages=[], temperature=1, max_tokens=5)))
    assert (out["temperature"], out["max_tokens"], out["metadata"]) == (1, 100, {"team": "a"})
    out = sent(guard_request(policy, OPENAI, body(messages=[])))
    assert out["temperature"] == 0.2


def test_model_lists_judge_the_model_after_defaults() -> None:
    models = ModelLists(("gpt-4o*",), ("gpt-4o-audio*",), P)
    assert guard_request(AiPolicy(models=models), OPENAI, body(model="gpt-4o-mini", messages=[])).verdict is None
    denied = guard_request(AiPolicy(models=models), OPENAI, body(model="gpt-4o-audio-preview", messages=[])).verdict
    assert denied is not None and denied.message == "model gpt-4o-audio-preview is denied"
    other = guard_request(AiPolicy(models=models), "/v1/embeddings", body(model="text-embedding-3")).verdict
    assert other is not None and other.message == "model text-embedding-3 is not in the allowed models"
    forced = AiPolicy(models=models, defaults=(FieldDefault(("model",), "gpt-4o", override=True),), defaults_policy=P)
    assert guard_request(forced, OPENAI, body(model="o1", messages=[])).verdict is None


def test_bodies_that_are_not_chat_json_pass() -> None:
    policy = AiPolicy(request=REJECT)
    assert guard_request(policy, OPENAI, b"not json").verdict is None
    assert guard_request(policy, "/v1/embeddings", body(input="ssn 123-45-6789")).verdict is None


def test_report_mode_passes_what_it_would_reject_and_reports_it() -> None:
    regex = RegexGuard("REJECT", (builtin("Ssn"),), P, report=True)
    models = ModelLists((), ("o1*",), "TrafficPolicy/ns/models", report=True)
    outcome = guard_request(AiPolicy(request=RequestGuard(regex), models=models), OPENAI,
                            body(model="o1", messages=[{"role": "user", "content": "ssn 123-45-6789"}]))
    assert outcome.verdict is None and outcome.body is None
    assert [(v.reason, v.policy) for v in outcome.reports] == [
        ("prompt-rejected", "TrafficPolicy/ns/models"), ("prompt-rejected", P)]
    assert outcome.steps[-1].endswith("(Report mode: passes)")
