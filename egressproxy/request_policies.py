"""The request-level deny-type policies after routing: CEL (TrafficPolicy `rbac`, HTTPListenerPolicy
`celValidation`) and the request size limit (HTTPListenerPolicy `buffer.maxRequestBytes`).

Pure functions over compiled forms (`egressproxy/compiler/policy_programs.py` builds them once per snapshot), so
the data plane (addons/request_policies.py) and `explain` take the same decision. Order: the size limit, then
`celValidation` (listener), then `rbac` (route, backend, listener or gateway: the most specific TrafficPolicy
with an `rbac` decides). Each step says its verdict and the expression that decided.

Semantics (docs/policies.md):
- `rbac` with `action: Allow` (the default): the request passes when at least one expression is true; with
  `action: Deny`: it is denied when one is true. Denied: 403 `rbac-denied`.
- `celValidation.rules`: in order, the first rule whose expression is true decides by its `action`; when none
  is true, the request passes unless some rule is an `Allow` rule (then the rules are an allow-list).
  Denied: 403 `rbac-denied`.
- An expression that fails to evaluate denies (fail closed), whatever the action.
- `buffer.maxRequestBytes`: a body longer than it is 413 `body-too-large`.
- `enforcementMode: Report`: the request passes; the denial it would have been is a `PolicyReport`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from egressproxy.cel_programs import CelError, CelProgram, RequestVariables
from egressproxy.config.problems import ObjectRef
from egressproxy.flowrecord import Verdict

if TYPE_CHECKING:
    from egressproxy.snapshot import PolicyIndex

__all__ = [
    "BODY_TOO_LARGE",
    "RBAC_DENIED",
    "BodyLimit",
    "CelRule",
    "CelValidation",
    "PolicyReport",
    "PolicyStep",
    "RbacPolicy",
    "RequestPolicies",
    "RequestPolicyTable",
    "Outcome",
    "evaluate",
    "size_verdict",
]

RBAC_DENIED = "rbac-denied"
BODY_TOO_LARGE = "body-too-large"


@dataclass(frozen=True, slots=True)
class PolicyReport:
    """A denial a Report-mode policy would have made (`egress_policy_reports_total{reason, policy}`)."""

    reason: str
    policy: str
    message: str


@dataclass(frozen=True, slots=True)
class PolicyStep:
    """One policy consulted, for explain and the flow's comment: verdict `allow`, `deny` or `report`."""

    policy: str
    verdict: str
    reason: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RbacPolicy:
    ref: ObjectRef
    programs: tuple[CelProgram, ...]
    deny_on_match: bool = False  # action Deny
    report: bool = False


@dataclass(frozen=True, slots=True)
class CelRule:
    program: CelProgram
    allow: bool  # action Allow (else Deny)


@dataclass(frozen=True, slots=True)
class CelValidation:
    ref: ObjectRef
    rules: tuple[CelRule, ...]
    report: bool = False


@dataclass(frozen=True, slots=True)
class BodyLimit:
    ref: ObjectRef
    max_bytes: int


@dataclass(frozen=True, slots=True)
class RequestPolicies:
    """The policies one request is checked against (looked up once it is routed)."""

    limit: BodyLimit | None = None
    validation: CelValidation | None = None
    rbac: RbacPolicy | None = None

    @property
    def needs_body(self) -> bool:
        """Whether an expression may read `request.body` (only then is the body parsed)."""
        programs = [r.program for r in self.validation.rules] if self.validation else []
        programs += list(self.rbac.programs) if self.rbac else []
        return any(p.needs_body for p in programs)

    @property
    def reads(self) -> frozenset[str]:
        """The CEL variables any of the expressions may read (only those are built for the activation)."""
        programs = [r.program for r in self.validation.rules] if self.validation else []
        programs += list(self.rbac.programs) if self.rbac else []
        return frozenset().union(*(p.reads for p in programs))

    @property
    def has_cel(self) -> bool:
        return self.validation is not None or self.rbac is not None


@dataclass(frozen=True, slots=True)
class Outcome:
    denial: Verdict | None
    steps: tuple[PolicyStep, ...] = ()
    reports: tuple[PolicyReport, ...] = ()


@dataclass(frozen=True, slots=True)
class RequestPolicyTable:
    """Every compiled rbac, celValidation and buffer limit by policy, and the lookup for one request."""

    rbac: Mapping[ObjectRef, RbacPolicy] = field(default_factory=lambda: MappingProxyType({}))
    validation: Mapping[ObjectRef, CelValidation] = field(default_factory=lambda: MappingProxyType({}))
    limits: Mapping[ObjectRef, BodyLimit] = field(default_factory=lambda: MappingProxyType({}))

    def for_request(
        self, policies: PolicyIndex, route: ObjectRef | None, backend: ObjectRef | None, listener: str | None, rule: int | None
    ) -> RequestPolicies:
        if not (self.rbac or self.validation or self.limits):
            return RequestPolicies()
        listener_policies = policies.policies("HTTPListenerPolicy", listener=listener)
        traffic = policies.policies("TrafficPolicy", route=route, backend=backend, listener=listener, rule=rule)
        return RequestPolicies(
            _first(self.limits, listener_policies), _first(self.validation, listener_policies), _first(self.rbac, traffic)
        )

    def to_dump(self) -> dict[str, Any]:
        return {
            "rbac": {str(r): {"action": "Deny" if p.deny_on_match else "Allow", "matchExpressions": [x.source for x in p.programs],
                              "enforcementMode": _mode(p.report)} for r, p in sorted(self.rbac.items())},
            "celValidation": {str(r): {"rules": [{"expression": c.program.source, "action": "Allow" if c.allow else "Deny"} for c in v.rules],
                                       "enforcementMode": _mode(v.report)} for r, v in sorted(self.validation.items())},
            "maxRequestBytes": {str(r): limit.max_bytes for r, limit in sorted(self.limits.items())},
        }


def _mode(report: bool) -> str:
    return "Report" if report else "Enforce"


def _first(table: Mapping[ObjectRef, Any], attached: tuple[Any, ...]) -> Any:
    for policy in attached:
        found = table.get(policy.ref)
        if found is not None:
            return found
    return None


def size_verdict(limit: BodyLimit | None, size: int | None) -> Verdict | None:
    """413 `body-too-large` when a body of `size` bytes (None: not known yet) is past the limit."""
    if limit is None or size is None or size <= limit.max_bytes:
        return None
    return Verdict.deny(
        BODY_TOO_LARGE, str(limit.ref), f"the request body is larger than buffer.maxRequestBytes ({limit.max_bytes})", 413
    )


def evaluate(policies: RequestPolicies, variables: RequestVariables) -> Outcome:
    """celValidation, then rbac, over one request's variables (the size limit is checked where bytes arrive)."""
    steps: list[PolicyStep] = []
    reports: list[PolicyReport] = []
    activation = variables.to_cel(policies.reads) if policies.has_cel else {}
    for check in (_validation, _rbac):
        step, report = check(policies, activation)
        if step is None:
            continue
        steps.append(step)
        if report:
            reports.append(PolicyReport(step.reason, step.policy, step.detail))
        elif step.verdict == "deny":
            return Outcome(Verdict.deny(RBAC_DENIED, step.policy, step.detail), tuple(steps), tuple(reports))
    return Outcome(None, tuple(steps), tuple(reports))


def _decided(ref: ObjectRef, denied: bool, detail: str, report: bool) -> tuple[PolicyStep, bool]:
    if not denied:
        return PolicyStep(str(ref), "allow", "", detail), False
    return PolicyStep(str(ref), "report" if report else "deny", RBAC_DENIED, detail), report


def _validation(policies: RequestPolicies, activation: Mapping[str, Any]) -> tuple[PolicyStep | None, bool]:
    validation = policies.validation
    if validation is None:
        return None, False
    for rule in validation.rules:
        try:
            matched = rule.program.evaluate(activation)
        except CelError as e:
            return _decided(validation.ref, True, f"{e} (fail closed): {rule.program.source}", validation.report)
        if matched:
            action = "Allow" if rule.allow else "Deny"
            detail = f"{rule.program.path} ({action}) is true: {rule.program.source}"
            return _decided(validation.ref, not rule.allow, detail, validation.report)
    if any(rule.allow for rule in validation.rules):
        return _decided(validation.ref, True, "no Allow rule of celValidation is true", validation.report)
    return _decided(validation.ref, False, "no rule of celValidation is true", validation.report)


def _rbac(policies: RequestPolicies, activation: Mapping[str, Any]) -> tuple[PolicyStep | None, bool]:
    rbac = policies.rbac
    if rbac is None:
        return None, False
    for program in rbac.programs:
        try:
            matched = program.evaluate(activation)
        except CelError as e:
            return _decided(rbac.ref, True, f"{e} (fail closed): {program.source}", rbac.report)
        if matched:
            action = "Deny" if rbac.deny_on_match else "Allow"
            return _decided(rbac.ref, rbac.deny_on_match, f"{program.path} ({action}) is true: {program.source}", rbac.report)
    if rbac.deny_on_match:
        return _decided(rbac.ref, False, "no Deny expression of rbac is true", rbac.report)
    return _decided(rbac.ref, True, "no Allow expression of rbac is true", rbac.report)
