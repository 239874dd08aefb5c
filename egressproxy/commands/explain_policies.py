"""`explain`'s trace of the deny-type policies after routing: each region check (the region found and its
source), the request size limit, the CEL policies (the expression that decided) and the ext_authz call that
would be made (explain cannot make it), in the order the data plane consults them. The same functions as the
data plane (egressproxy/regions.py, request_policies.py, ext_auth.py)."""

from __future__ import annotations

from typing import Any

from egressproxy.cel_programs import RequestVariables, json_body
from egressproxy.config.problems import ObjectRef
from egressproxy.decisions import RequestDecision, RequestView
from egressproxy.flowrecord import Verdict
from egressproxy.request_policies import evaluate, size_verdict
from egressproxy.snapshot import Listener, Snapshot

__all__ = ["request_policy_trace", "render_trace"]


def request_policy_trace(
    snapshot: Snapshot,
    listener: Listener,
    decision: RequestDecision,
    view: RequestView,
    identity: str | None,
    body: bytes | None,
) -> tuple[list[dict[str, Any]], Verdict | None]:
    """The trace entries (`policyTrace` in --json) and the denial, if one of these policies denies."""
    trace: list[dict[str, Any]] = []
    if decision.route is not None and decision.route.deny is not None and decision.route.deny.report:
        deny = decision.route.deny
        trace.append({"policy": str(deny.policy), "check": "route", "verdict": "report", "reason": "route-denied",
                      "detail": "enforcementMode Report: the route's traffic passes"})
    for check in decision.region_checks:
        trace.append({"check": "region", **check.to_dump()})
    if not decision.verdict.allowed:
        return trace, None
    first = decision.upstreams[0] if decision.upstreams else None
    backend = first.backend if first is not None else None
    policies = snapshot.compiled.request_policies.for_request(
        snapshot.policies,
        decision.route.ref if decision.route is not None else None,
        backend.ref if backend is not None and backend.type != "Service" else None,
        listener.name,
        decision.rule_index,
    )
    if policies.limit is not None:
        too_large = size_verdict(policies.limit, len(body or b""))
        detail = f"{len(body or b'')} bytes, maxRequestBytes {policies.limit.max_bytes}"
        trace.append({"policy": str(policies.limit.ref), "check": "buffer", "verdict": "deny" if too_large else "allow",
                      "reason": too_large.reason if too_large else "", "detail": detail})
        if too_large is not None:
            return trace, too_large
    namespace, _, account = (identity or "unknown/unknown").partition("/")
    variables = RequestVariables(
        view.headers, view.path, view.method, view.host, "", namespace, account or "unknown", json_body(body)
    )
    outcome = evaluate(policies, variables)
    for step in outcome.steps:
        trace.append({"policy": step.policy, "check": "cel", "verdict": step.verdict, "reason": step.reason, "detail": step.detail})
    if outcome.denial is None:
        trace.extend(_ext_auth(snapshot, listener, decision, backend.ref if backend is not None and backend.type != "Service" else None))
    return trace, outcome.denial


def _ext_auth(snapshot: Snapshot, listener: Listener, decision: RequestDecision, backend: ObjectRef | None) -> list[dict[str, Any]]:
    """The ext_authz call the data plane would make: explain names it and cannot make it (the verdict is the
    service's), so it never changes explain's verdict."""
    route = decision.route.ref if decision.route is not None else None
    policy = snapshot.compiled.ext_auth.for_request(snapshot.policies, route, backend, listener.name, decision.rule_index)
    if policy is None or policy.service is None:
        return []
    service = policy.service
    mode = ", enforcementMode Report" if policy.report else ""
    on_failure = "failOpen" if service.fail_open else f"fail closed with {service.status_on_error}"
    detail = (f"{service.ref} at {service.host}:{service.port} would be called (timeout {service.timeout:g}s, "
              f"{on_failure}{mode}); explain cannot call it: the service decides")
    return [{"policy": str(policy.ref), "check": "ext-auth", "verdict": "call", "reason": "", "detail": detail}]


def render_trace(trace: list[dict[str, Any]]) -> list[str]:
    lines = []
    for entry in trace:
        reason = f" {entry['reason']}" if entry.get("reason") else ""
        lines.append(f"check     {entry['check']} {entry['policy']}: {entry['verdict']}{reason} ({entry['detail']})")
    return lines
