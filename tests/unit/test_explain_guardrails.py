"""`egressproxy explain --body FILE` on config/ai-guardrails: the TrafficPolicy `ai` that applies and its verdict
on a body, line by line, as the data plane would judge it (the value found is never printed)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from egressproxy.cli import main

CONFIG = str(Path(__file__).resolve().parents[2] / "config" / "ai-guardrails")
OPENAI = "https://api.openai.com/v1/chat/completions"
ANTHROPIC = "https://api.anthropic.com/v1/messages"
OPENAI_POLICY = "TrafficPolicy/ai-guardrails/openai-guardrails"
GATEWAY_POLICY = "TrafficPolicy/ai-guardrails/gateway-guardrails"


def explain(tmp_path: Path, url: str, body: dict[str, object] | None, *extra: str) -> tuple[int, list[str]]:
    argv = ["explain", "-c", CONFIG, "--no-resolve", "--method", "POST", url, *extra]
    if body is not None:
        path = tmp_path / "body.json"
        path.write_text(json.dumps(body))
        argv += ["--body", str(path)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(argv)
    return status, out.getvalue().splitlines()


def test_a_card_in_the_prompt_is_rejected_naming_the_detector_not_the_value(tmp_path: Path) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "card 4111 1111 1111 1111"}]}
    status, lines = explain(tmp_path, OPENAI, body)
    assert status == 3
    assert [line for line in lines if line.startswith(("ai ", "guard ", "verdict "))] == [
        f"ai        request guard REJECT CreditCard, Ssn, CaSin, project code by {OPENAI_POLICY}",
        f"ai        response guard MASK CreditCard, Email by {OPENAI_POLICY}",
        f"ai        enrichment by {OPENAI_POLICY}",
        f"ai        defaults by {OPENAI_POLICY}",
        f"ai        models by {GATEWAY_POLICY}",
        f"guard     defaults: applied by {OPENAI_POLICY}",
        f"guard     models: gpt-4o allowed by {GATEWAY_POLICY}",
        f"guard     prompt-rejected by {OPENAI_POLICY}: CreditCard found",
        f"verdict   DENY 403: prompt-rejected by {OPENAI_POLICY} (The request contains data that may not leave the company.)",
    ]
    assert not any("4111" in line for line in lines)


def test_a_clean_prompt_is_allowed_and_the_body_shows_enrichment_and_defaults(tmp_path: Path) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
    status, lines = explain(tmp_path, OPENAI, body, "--json")
    document = json.loads("\n".join(lines))
    assert status == 0 and document["verdict"]["allowed"]
    ai = document["request"]["ai"]
    assert ai["steps"][-2:] == [f"promptGuard.request: passed ({OPENAI_POLICY})", f"promptEnrichment: applied by {OPENAI_POLICY}"]
    sent = json.loads(ai["body"])
    assert sent["temperature"] == 0.2 and sent["messages"][0]["role"] == "system"


def test_masking_shows_the_body_as_it_would_be_sent(tmp_path: Path) -> None:
    body = {"model": "claude-3-5-haiku", "max_tokens": 9, "system": "terse",
            "messages": [{"role": "user", "content": "call (555) 123-4567"}]}
    status, lines = explain(tmp_path, ANTHROPIC, body)
    assert status == 0
    sent = json.loads(next(line for line in lines if line.startswith("body "))[10:])
    assert sent == {"model": "claude-3-5-haiku", "max_tokens": 1024,
                    "system": "terse\n\nAnswer in at most three sentences.",
                    "messages": [{"role": "user", "content": "call <PHONE_NUMBER>"}]}


def test_a_denied_model_is_refused_by_the_gateway_policy(tmp_path: Path) -> None:
    body = {"model": "claude-2.1", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}
    status, lines = explain(tmp_path, ANTHROPIC, body)
    assert status == 3
    assert lines[-1] == f"verdict   DENY 403: prompt-rejected by {GATEWAY_POLICY} (model claude-2.1 is denied)"


def test_without_a_body_explain_says_how_to_judge_one(tmp_path: Path) -> None:
    status, lines = explain(tmp_path, OPENAI, None)
    assert status == 0
    assert "guard     pass --body FILE to judge a request body" in lines


def test_body_dash_reads_standard_input(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps({"model": "gpt-3.5-turbo", "messages": []}).encode()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(body)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["explain", "-c", CONFIG, "--no-resolve", "--method", "POST", OPENAI, "--body", "-"])
    assert status == 3
    assert out.getvalue().splitlines()[-1].endswith("(model gpt-3.5-turbo is denied)")


def test_an_unreadable_body_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["explain", "-c", CONFIG, "--no-resolve", OPENAI, "--body", str(tmp_path / "missing.json")])
    assert status == 2 and out.getvalue().startswith("error: --body: No such file or directory")
