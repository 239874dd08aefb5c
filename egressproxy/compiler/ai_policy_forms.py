"""TrafficPolicy `ai` compiled once per snapshot (egressproxy/prompt_guard.py): builtins resolved, custom patterns
compiled with the `regex` module. A pattern `re` accepted but `regex` refuses is a validation problem naming
`spec.ai.promptGuard.{request,response}.regex.matches[i].pattern`; the policy is then not served."""

from __future__ import annotations

from typing import Any

import regex

from egressproxy.compiler.compilation import Compilation
from egressproxy.config.problems import ObjectRef
from egressproxy.config.resource import Resource
from egressproxy.pii_detectors import Detector, builtin, custom
from egressproxy.prompt_guard import AiPolicy, Enrichment, FieldDefault, ModelLists, RegexGuard, RequestGuard

__all__ = ["compile_ai_policies"]


def compile_ai_policies(comp: Compilation) -> dict[ObjectRef, AiPolicy]:
    out: dict[ObjectRef, AiPolicy] = {}
    for res in comp.of_kind("TrafficPolicy"):
        ai = res.spec.get("ai")
        if not isinstance(ai, dict):
            continue
        compiled = _ai(comp, res, ai)
        if not compiled.empty:
            out[res.ref] = compiled
    return out


def _ai(comp: Compilation, res: Resource, ai: dict[str, Any]) -> AiPolicy:
    name = f"TrafficPolicy/{res.namespace}/{res.name}"
    report = res.spec.get("enforcementMode") == "Report"
    guard = ai.get("promptGuard") or {}
    request = guard.get("request") or {}
    request_regex = _regex(comp, res, "spec.ai.promptGuard.request.regex", request.get("regex"), name, report)
    custom_response = request.get("customResponse") or {}
    request_guard = (
        RequestGuard(request_regex, custom_response.get("message") or "", custom_response.get("statusCode") or 403)
        if request_regex is not None
        else None
    )
    response_regex = _regex(
        comp, res, "spec.ai.promptGuard.response.regex", (guard.get("response") or {}).get("regex"), name, report
    )
    enrichment = ai.get("promptEnrichment")
    defaults = [*(ai.get("defaults") or ()), *(ai.get("fieldDefaults") or ())]
    models = ai.get("models")
    return AiPolicy(
        request=request_guard,
        response=response_regex,
        enrichment=_enrichment(enrichment) if enrichment else None,
        defaults=tuple(_default(d) for d in defaults) if defaults else None,
        models=(
            ModelLists(tuple(models.get("allowed") or ()), tuple(models.get("denied") or ()), name, report)
            if models
            else None
        ),
        enrichment_policy=name if enrichment else "",
        defaults_policy=name if defaults else "",
    )


def _regex(comp: Compilation, res: Resource, path: str, spec: Any, policy: str, report: bool) -> RegexGuard | None:
    if not isinstance(spec, dict):
        return None
    detectors: list[Detector] = []
    seen: set[str] = set()
    for name in spec.get("builtins") or ():
        detector = builtin(name)
        if detector.name not in seen:  # CreditCard and CREDIT_CARD are one detector
            seen.add(detector.name)
            detectors.append(detector)
    for i, match in enumerate(spec.get("matches") or ()):
        try:
            detectors.append(custom(match["pattern"], match.get("name")))
        except regex.error as e:
            comp.problem(res, f"{path}.matches[{i}].pattern", f"invalid regular expression: {e}")
    if not detectors:
        return None
    return RegexGuard(spec.get("action") or "REJECT", tuple(detectors), policy, report)


def _enrichment(spec: dict[str, Any]) -> Enrichment:
    def messages(key: str) -> tuple[tuple[str, str], ...]:
        return tuple((m["role"], m["content"]) for m in spec.get(key) or ())

    return Enrichment(messages("prepend"), messages("append"))


def _default(spec: dict[str, Any]) -> FieldDefault:
    path = spec.get("field") or spec.get("path") or ""
    return FieldDefault(tuple(path.split(".")), spec["value"], bool(spec.get("override")))
