"""A request body through its AI policy: field defaults, the model lists, the prompt guard, then enrichment.

A pure function over bytes, used by the data plane (addons/ai_guardrails.py, on the buffered body in the
`request` hook, so a failover replay carries the same transformed body) and by `egressproxy explain --body`.

Order, and why:
1. `defaults` first: an `override: true` default for `model` is what the model lists must judge.
2. the model lists (extension `ai.models`): any JSON object body with a string `model` (embeddings too).
3. `promptGuard.request`: REJECT on the first confirmed match in any message text, or MASK them all. Only the
   client's text is judged: the operator's enrichment is added after.
4. `promptEnrichment`.
Steps 3 and 4 apply to OpenAI Chat Completions and Anthropic Messages requests only (by path, else by shape); a
body that is not a JSON object passes untouched (the provider refuses it anyway).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from egressproxy.ai_formats.formats import detect_format
from egressproxy.chat_bodies import apply_defaults, enrich, map_request_texts, request_texts
from egressproxy.flowrecord import Verdict
from egressproxy.prompt_guard import REJECTED, AiPolicy

__all__ = ["RequestGuardOutcome", "guard_request", "DEFAULT_REJECT_MESSAGE"]

DEFAULT_REJECT_MESSAGE = "the request was rejected by a prompt guard"


@dataclass(frozen=True, slots=True)
class RequestGuardOutcome:
    """What the policy did: a denial, or the body to send (None: unchanged), and one line per step taken."""

    verdict: Verdict | None = None
    body: bytes | None = None
    steps: tuple[str, ...] = ()
    reports: tuple[Verdict, ...] = ()  # denials a Report-mode policy would have made (the request passes)


def guard_request(policy: AiPolicy, path: str, body: bytes) -> RequestGuardOutcome:
    document = _json_object(body)
    if document is None:
        return RequestGuardOutcome(steps=("ai: body is not a JSON object: not inspected",))
    steps: list[str] = []
    reports: list[Verdict] = []
    changed = False
    if policy.defaults:
        if apply_defaults(document, policy.defaults):
            changed = True
            steps.append(f"defaults: applied by {policy.defaults_policy}")
    if policy.models is not None:
        model = document.get("model")
        refusal = policy.models.refuses(model if isinstance(model, str) else None)
        if refusal is not None:
            denied = _rejected(policy.models.policy, refusal, 403, steps, report=policy.models.report)
            if not policy.models.report:
                return RequestGuardOutcome(denied, None, tuple(steps))
            reports.append(denied)
        else:
            steps.append(f"models: {model} allowed by {policy.models.policy}")
    fmt = detect_format(path, document)
    if fmt is None:
        steps.append("ai: not an OpenAI or Anthropic chat request: prompt guard and enrichment not applied")
        return _outcome(document, changed, steps, reports)
    guard = policy.request
    if guard is not None:
        regex = guard.regex
        if regex.masks:
            if map_request_texts(document, fmt, regex.mask):
                changed = True
                steps.append(f"promptGuard.request: masked by {regex.policy}")
            else:
                steps.append(f"promptGuard.request: nothing to mask ({regex.policy})")
        else:
            found = next((name for text in request_texts(document, fmt) if (name := regex.rejects(text))), None)
            if found is not None:
                message = guard.message or DEFAULT_REJECT_MESSAGE
                denied = _rejected(regex.policy, message, guard.status_code, steps, f"{found} found", report=regex.report)
                if not regex.report:
                    return RequestGuardOutcome(denied, None, tuple(steps))
                reports.append(denied)
            else:
                steps.append(f"promptGuard.request: passed ({regex.policy})")
    if policy.enrichment is not None and enrich(document, fmt, policy.enrichment):
        changed = True
        steps.append(f"promptEnrichment: applied by {policy.enrichment_policy}")
    return _outcome(document, changed, steps, reports)


def _json_object(body: bytes) -> dict[str, Any] | None:
    if not body or not body.lstrip()[:1] == b"{":
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _rejected(
    policy: str, message: str, status: int, steps: list[str], why: str = "", *, report: bool = False
) -> Verdict:
    """A denial, noted in `steps`. `why` names the detector (never the value found); the client sees only
    `message`."""
    mode = " (Report mode: passes)" if report else ""
    steps.append(f"{REJECTED} by {policy}" + (f": {why}" if why else f": {message}") + mode)
    return Verdict.deny(REJECTED, policy, message, status)


def _outcome(document: dict[str, Any], changed: bool, steps: list[str], reports: list[Verdict]) -> RequestGuardOutcome:
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode() if changed else None
    return RequestGuardOutcome(None, body, tuple(steps), tuple(reports))
