"""A request's whole decision trace, in one shape, built once from its FlowRecord when the flow ends.

mitmweb shows a flow's comment (and its marker), not its metadata, so the trace is text there: a headline
(`denied: <reason> by <Kind/ns/name>`, `allowed: <status>`, `gateway error: <reason>: <detail>`), then one
`key: value` line per part, in the order the gateway decided. The same parts as plain data go to
`flow.metadata[TRACE_KEY]` for scripts and `mitmdump -w` dumps. Lines are stable so that mitmproxy filter
expressions select on them (docs/mitmweb.md lists the tested ones): `~comment "^outcome: deny"`,
`~comment "reason: no-route"`, `~comment "^policy TrafficPolicy/team-a/rbac: deny"`.

Everything here is a name, a reason, an address or a status: the record holds no header, body or credential
value, so none can reach the trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from egressproxy.flowrecord import UNKNOWN_IDENTITY, Check, FlowRecord

__all__ = ["TRACE_KEY", "Ending", "render", "trace_data", "check_line"]

TRACE_KEY = "egress_trace"


@dataclass(frozen=True, slots=True)
class Ending:
    """What only the finished flow knows: the status sent, the address dialled, a refused dial, the capture."""

    status: int | None = None
    dialled: str | None = None  # ip:port the gateway connected to (None: it never dialled)
    refused_dial: str | None = None  # why the destination check refused the dial (reason and object)
    captured: bool = False  # the capture sink keeps this request
    via_hop: bool = False  # the request went through the failover hop (its attempts say where)


def check_line(check: Check) -> str:
    """`<stage> <Kind/ns/name>: <verdict> (<reason>; <detail>)`, or the detail alone for a free note."""
    head = f"{check.stage} {check.policy}".rstrip()
    why = "; ".join(p for p in (check.reason, check.detail) if p)
    if not check.verdict:
        return f"{head}: {why}" if why else head
    return f"{head}: {check.verdict}" + (f" ({why})" if why else "")


def render(record: FlowRecord, ending: Ending) -> str:
    """The comment mitmweb shows: a headline, then one line per part (see the module docstring)."""
    lines = [_headline(record, ending), _outcome(record, ending), f"identity: {_identity(record)}"]
    for name in ("listener", "route", "backend"):
        lines.append(f"{name}: {getattr(record, name) or '-'}")
    lines.extend(_candidates(record))
    lines.extend(check_line(c) for c in record.checks)
    lines.append(f"destination: {_destination(record, ending)}")
    if record.credential:
        lines.append(f"credential: {record.credential}")
    if ending.captured:
        # The store numbers captures when it writes its batch, after the flow ended: the query finds it.
        trace = f", trace {record.trace_id}" if record.trace_id else ""
        lines.append(f"capture: kept{trace} (egressproxy captures --identity {record.identity})")
    return "\n".join(lines)


def trace_data(record: FlowRecord, ending: Ending) -> dict[str, Any]:
    """The same parts as plain data (for `flow.metadata[TRACE_KEY]`)."""
    verdict = record.verdict
    return {
        "decision": record.decision,
        "status": ending.status,
        "reason": record.error or (verdict.reason if verdict else None),
        "policy": verdict.policy if verdict else None,
        "identity": {"namespace": record.identity.namespace, "serviceAccount": record.identity.service_account,
                     "source": _identity_source(record)},
        "listener": record.listener,
        "route": record.route,
        "backend": record.backend,
        "candidates": _candidate_names(record),
        "attempts": [{"candidate": a.candidate, "outcome": a.outcome, "wentOn": a.went_on} for a in record.attempts],
        "checks": [{"stage": c.stage, "policy": c.policy, "verdict": c.verdict, "reason": c.reason, "detail": c.detail}
                   for c in record.checks],
        "destination": _destination(record, ending),
        "credential": record.credential,
        "captured": ending.captured,
        "traceId": record.trace_id,
    }


def _headline(record: FlowRecord, ending: Ending) -> str:
    verdict = record.verdict
    if record.error:
        return f"gateway error: {record.error}" + (f": {record.error_detail}" if record.error_detail else "")
    if verdict is not None and not verdict.allowed:
        return f"denied: {verdict.reason}" + (f" by {verdict.policy}" if verdict.policy else "")
    return f"allowed: {ending.status}" if ending.status is not None else "allowed: no response"


def _outcome(record: FlowRecord, ending: Ending) -> str:
    verdict = record.verdict
    reason = record.error or (verdict.reason if verdict is not None else "") or "-"
    policy = verdict.policy if verdict is not None and verdict.policy and not record.error else ""
    status = ending.status if ending.status is not None else "-"
    return f"outcome: {record.decision} {status} reason: {reason}" + (f" by {policy}" if policy else "")


def _identity_source(record: FlowRecord) -> str:
    if record.identity.source:
        return record.identity.source
    if record.identity == UNKNOWN_IDENTITY:
        return "none: no proxy credentials and no sidecar identity"
    return "connection"


def _identity(record: FlowRecord) -> str:
    return f"{record.identity} (from {_identity_source(record)})"


def _candidate_names(record: FlowRecord) -> list[str]:
    out = []
    for upstream in record.candidates:
        name = upstream.backend_name or "destination"
        provider = f" {upstream.provider.name}" if upstream.provider is not None else ""
        via = f" via parent {upstream.parent.host}:{upstream.parent.port}" if upstream.parent is not None else ""
        out.append(f"{name}{provider} ({upstream.host}:{upstream.port}){via}")
    return out


def _candidates(record: FlowRecord) -> list[str]:
    """`candidates:` in try order, then `attempt N:` per candidate a walk tried (failover, retries)."""
    names = _candidate_names(record)
    lines = []
    if names:
        lines.append("candidates: " + ", ".join(f"{i}. {n}" for i, n in enumerate(names, 1)))
    for i, attempt in enumerate(record.attempts, 1):
        lines.append(f"attempt {i}: {attempt.candidate}: {attempt.outcome}" + (" (went on)" if attempt.went_on else ""))
    return lines


def _destination(record: FlowRecord, ending: Ending) -> str:
    target = f"{record.host}:{record.port}" if record.host else "-"
    if ending.refused_dial:
        return f"{target} refused ({ending.refused_dial})"
    if ending.via_hop:
        return f"{target} through the failover hop (see attempts)"
    if ending.dialled:
        return f"{target} dialled {ending.dialled} (destination check passed)"
    return f"{target} not dialled"
