"""TrafficPolicy `ai` compiled: prompt guards, enrichment, field defaults and the model lists (docs/guardrails.md).

`AiPolicy` is one TrafficPolicy's `ai` block in ready-to-use form (regexes compiled, builtins resolved), built
once per snapshot by egressproxy/compiler/ai_policy_forms.py. The policies that apply to a request merge field
by field, most specific first (Rule > Route > Backend > Listener > Gateway, DESIGN.md 4): each part
(`request`, `response`, `enrichment`, `defaults`, `models`) comes whole from the most specific policy that sets
it, and names that policy in a denial.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from egressproxy.config.problems import ObjectRef
from egressproxy.pii_detectors import Detector

if TYPE_CHECKING:
    from egressproxy.snapshot import PolicyIndex

__all__ = [
    "REJECTED",
    "RegexGuard",
    "RequestGuard",
    "Enrichment",
    "FieldDefault",
    "ModelLists",
    "AiPolicy",
    "AiPolicyTable",
]

REJECTED = "prompt-rejected"  # the DESIGN.md 4.1 reason of every guardrail denial (model lists included)
MAX_HOLD_CHARS = 256  # the most characters of streamed text a response guard holds back (stream_masking.py)


@dataclass(frozen=True, slots=True)
class RegexGuard:
    """`promptGuard.{request,response}.regex`: REJECT on the first confirmed match, or MASK every one."""

    action: str  # "REJECT" | "MASK"
    detectors: tuple[Detector, ...]
    policy: str  # "TrafficPolicy/ns/name"
    report: bool = False  # enforcementMode Report: a REJECT is counted and logged, and the traffic passes

    @property
    def masks(self) -> bool:
        return self.action == "MASK"

    def rejects(self, text: str) -> str | None:
        """The name of the first detector that finds something in `text` (never the value found), or None."""
        for detector in self.detectors:
            if detector.first(text) is not None:
                return detector.name
        return None

    def mask(self, text: str) -> str:
        for detector in self.detectors:
            text = detector.substitute(text)
        return text

    def open_from(self, text: str, pos: int = 0) -> int:
        """Where the earliest match later text could still complete starts; len(text) when none is open."""
        starts = [s for d in self.detectors if (s := d.open_from(text, pos)) is not None]
        return min(starts, default=len(text))

    def to_dump(self) -> dict[str, Any]:
        return {"action": self.action, "detectors": [d.name for d in self.detectors], "policy": self.policy,
                "enforcementMode": "Report" if self.report else "Enforce"}


@dataclass(frozen=True, slots=True)
class RequestGuard:
    """`promptGuard.request`: the regex guard and the answer a rejection gets (`customResponse`)."""

    regex: RegexGuard
    message: str = ""  # customResponse.message; empty: the default text
    status_code: int = 403


@dataclass(frozen=True, slots=True)
class Enrichment:
    """`promptEnrichment`: messages added before and after the conversation, as (role, content)."""

    prepend: tuple[tuple[str, str], ...]
    append: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class FieldDefault:
    """One `defaults[]` / `fieldDefaults[]` entry: `path` is the JSON field, dot-separated for nested objects."""

    path: tuple[str, ...]
    value: Any
    override: bool = False


@dataclass(frozen=True, slots=True)
class ModelLists:
    """The extension `ai.models`: `denied` globs always refuse; with `allowed` set, only those models pass."""

    allowed: tuple[str, ...]
    denied: tuple[str, ...]
    policy: str
    report: bool = False  # enforcementMode Report

    def refuses(self, model: str | None) -> str | None:
        """Why `model` is refused (a message naming it), or None when it may be used."""
        shown = model if model is not None else "(none)"
        if model is not None and any(fnmatch.fnmatchcase(model, p) for p in self.denied):
            return f"model {shown} is denied"
        if self.allowed and (model is None or not any(fnmatch.fnmatchcase(model, p) for p in self.allowed)):
            return f"model {shown} is not in the allowed models"
        return None


@dataclass(frozen=True, slots=True)
class AiPolicy:
    """The `ai` of the TrafficPolicies that apply to one request, each part from the most specific setter."""

    request: RequestGuard | None = None
    response: RegexGuard | None = None
    enrichment: Enrichment | None = None
    defaults: tuple[FieldDefault, ...] | None = None
    models: ModelLists | None = None
    enrichment_policy: str = ""
    defaults_policy: str = ""

    @property
    def empty(self) -> bool:
        return all(p is None for p in (self.request, self.response, self.enrichment, self.defaults, self.models))

    def over(self, less_specific: "AiPolicy") -> "AiPolicy":
        """This policy's parts, each missing one taken from `less_specific`."""
        return AiPolicy(
            self.request or less_specific.request,
            self.response or less_specific.response,
            self.enrichment or less_specific.enrichment,
            self.defaults if self.defaults is not None else less_specific.defaults,
            self.models or less_specific.models,
            self.enrichment_policy if self.enrichment else less_specific.enrichment_policy,
            self.defaults_policy if self.defaults is not None else less_specific.defaults_policy,
        )

    def to_dump(self) -> dict[str, Any]:
        return {
            "request": self.request.regex.to_dump() if self.request else None,
            "response": self.response.to_dump() if self.response else None,
            "enrichment": self.enrichment_policy or None,
            "defaults": self.defaults_policy or None,
            "models": self.models.policy if self.models else None,
        }


@dataclass(frozen=True, slots=True)
class AiPolicyTable:
    """Every TrafficPolicy's compiled `ai`, and each request's merge of those that apply (memoised)."""

    by_policy: Mapping[ObjectRef, AiPolicy] = field(default_factory=lambda: MappingProxyType({}))
    _memo: dict[tuple[Any, ...], AiPolicy | None] = field(default_factory=dict, repr=False, compare=False)

    def __bool__(self) -> bool:
        return bool(self.by_policy)

    def for_request(
        self,
        policies: PolicyIndex,
        route: ObjectRef | None,
        backend: ObjectRef | None,
        listener: str | None,
        rule: int | None,
    ) -> AiPolicy | None:
        """The merged `ai` of the TrafficPolicies attached to this request's rule, route, backend, listener and
        gateway; None when none of them has an `ai` block."""
        key = (route, backend, listener, rule)
        if key in self._memo:
            return self._memo[key]
        merged = AiPolicy()
        for attached in reversed(policies.policies("TrafficPolicy", route, backend, listener, rule)):
            compiled = self.by_policy.get(attached.ref)
            if compiled is not None:
                merged = compiled.over(merged)
        result = None if merged.empty else merged
        self._memo[key] = result
        return result

    def to_dump(self) -> dict[str, Any]:
        return {str(ref): p.to_dump() for ref, p in sorted(self.by_policy.items())}
