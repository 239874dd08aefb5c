"""`egressproxy explain`: a dry run through the same decisions the data plane takes, the dial included.

The CONNECT, connection and request decisions are the functions the addons call (egressproxy/decisions.py);
the destination the first upstream candidate names then goes through the dial guard's own destination check
(hostAliases, DNS with the effective DNSPolicy, the SSRF guard, reverse lookup), so `explain` never says ALLOW
for a request the gateway answers with `destination-address-denied`. `--no-resolve` skips DNS (aliases and IP
literals are still checked) and says so. DESIGN.md 4.2 pins the `--json` document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

from egressproxy.compiler import compile_config
from egressproxy.config.loader import load_paths
from egressproxy.config.problems import ObjectRef
from egressproxy.credential_injection import cleartext_refused
from egressproxy.decisions import (
    RequestDecision,
    Action,
    RequestView,
    decide_connect,
    decide_connection,
    decide_request,
    gateway_policy,
    parent_for,
    route_name,
)
from egressproxy.commands.explain_policies import render_trace, request_policy_trace
from egressproxy.dialer import Dialer
from egressproxy.engine.destinations import Destination
from egressproxy.flowrecord import ConnectionRecord, Verdict
from egressproxy.hostnames import InvalidHostname, authority_host, canonical_host, is_ip_literal
from egressproxy.matching import Carries, select_listener
from egressproxy.metrics import GatewayMetrics
from egressproxy.resolver import Resolver
from egressproxy.snapshot import Backend, Listener, Route, Snapshot
from egressproxy.rate_limits import RateLimit
from egressproxy.request_guard import guard_request
from egressproxy.upstreams import RandomSource, Upstream

__all__ = ["check_destination", "explain", "explain_target"]

NO_RESOLVE_NOTE = "--no-resolve: DNS was not consulted; the SSRF guard and reverse lookup did not check this name"


def check_destination(snapshot: Snapshot, upstream: Upstream, *, resolve: bool = True) -> Destination | None:
    """The dial guard's destination check (the one dialer, egressproxy/dialer.py) for the candidate that would be
    dialled: through a parent, the parent itself (it resolves the destination and applies its own policy).

    None when `resolve` is False and the name needs DNS (hostAliases and IP literals need none).
    """
    if upstream.parent is not None:
        upstream = Upstream(upstream.parent.host, upstream.parent.port, "http", trusted=True)
    if not resolve and not (is_ip_literal(upstream.host) or snapshot.gateway.host_aliases.get(upstream.host)):
        return None
    metrics = GatewayMetrics()
    dialer = Dialer(Resolver(metrics), metrics)
    record = ConnectionRecord(generation=snapshot.generation)
    record.upstreams[upstream.key] = upstream
    return asyncio.run(dialer.destination(snapshot, record, upstream.host, upstream.port))


def _verdict(v: Verdict) -> dict[str, Any]:
    out: dict[str, Any] = {"allowed": v.allowed, "reason": v.reason, "policy": v.policy}
    if not v.allowed:
        out["status"] = v.status_code
        if v.message and v.message != v.reason:
            out["message"] = v.message
    return out


def _policies(
    snapshot: Snapshot,
    listener: Listener | None,
    route: Route | None,
    backend: Backend | None,
    rule: int | None,
    verdict: Verdict,
) -> list[dict[str, Any]]:
    """Each policy consulted for this traffic with its verdict. A policy whose fields this build does not
    enforce (`Snapshot.unsupported`) is `not-enforced`, never `applied`."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    route_ref = route.ref if route is not None else None
    backend_ref = backend.ref if backend is not None and backend.type != "Service" else None
    listener_name = listener.name if listener is not None else None
    budget = snapshot.compiled.rate_limits.for_request(snapshot.policies, route_ref, backend_ref, listener_name, rule)
    for kind in snapshot.policies.kinds():
        attached = snapshot.policies.policies(kind, route=route_ref, backend=backend_ref, listener=listener_name, rule=rule)
        for p in attached:
            if str(p.ref) not in seen:  # a policy attached twice (a route filter and a targetRef) is listed once
                out.append(_policy_entry(snapshot, p.ref, p.scope, verdict, budget))
                seen.add(str(p.ref))
    if verdict.policy and verdict.policy not in seen:
        kind, _, rest = verdict.policy.partition("/")
        namespace, _, name = rest.partition("/")
        out.append(_policy_entry(snapshot, ObjectRef(kind, namespace, name), None, verdict, budget))
    return out


def _policy_entry(
    snapshot: Snapshot, ref: ObjectRef, scope: str | None, verdict: Verdict, budget: RateLimit | None
) -> dict[str, Any]:
    entry: dict[str, Any] = {"policy": str(ref), "scope": scope}
    unsupported = snapshot.unsupported.get(ref)
    if unsupported:
        entry["verdict"] = "not-enforced"
        entry["unsupportedFields"] = list(unsupported)
    elif str(ref) == verdict.policy:
        entry["verdict"] = "allow" if verdict.allowed else "deny"
    else:
        entry["verdict"] = "applied"
    fields = snapshot.compiled.rate_limits.get(ref)
    if fields is not None and "unsupportedFields" not in entry:
        # The policy as written, and which of its fields the request's budget takes (the rest a more specific
        # policy overrides). Counters live in the running gateway: a dry run never says whether one is spent.
        entry["rateLimit"] = fields.to_dump()
        supplied = {name for name, source in budget.sources if source == ref} if budget is not None else set()
        entry["budgetFields"] = [name for name in fields.sets if name in supplied]
        entry["overriddenFields"] = [name for name in fields.sets if name not in supplied]
    return entry


def _rate_limit_text(limit: dict[str, Any]) -> str:
    """One budget (`RateLimit.to_dump()`): `10 requests and 5000 tokens per 60s PerAgent, Local store`."""
    budgets = [f"{limit[what]} {what}" for what in ("requests", "tokens") if limit.get(what) is not None]
    mode = ", Report only" if limit["enforcementMode"] == "Report" else ""
    deny = ", failureMode Deny" if limit["store"]["type"] == "Redis" and limit["failureMode"] == "Deny" else ""
    return f"{' and '.join(budgets)} per {limit['window']:g}s {limit['scope']}, {limit['store']['type']} store{deny}{mode}"


def _budget_fields_text(entry: dict[str, Any]) -> str:
    parts = []
    if entry["budgetFields"]:
        parts.append("budget fields: " + ", ".join(entry["budgetFields"]))
    if entry["overriddenFields"]:
        parts.append("overridden: " + ", ".join(entry["overriddenFields"]))
    return f" ({'; '.join(parts)})"


def _target(target: str) -> tuple[str, str, int, str]:
    if "://" in target:
        url = urlsplit(target)
        scheme = url.scheme.lower()
        port = url.port or (443 if scheme == "https" else 80)
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        return scheme, url.hostname or "", port, path
    host, _, p = target.rpartition(":")
    return "", host.strip("[]") or target, int(p) if p.isdigit() else 443, ""


def explain_target(
    snapshot: Snapshot,
    target: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    *,
    resolve: bool = True,
    rng: RandomSource | None = None,
    identity: str | None = None,
    body: bytes | None = None,
) -> dict[str, Any]:
    """What the gateway would do with a request to URL, or a connection to HOST:PORT (DESIGN.md 4.2).

    `identity` (`NS/SA`) and `body` are what CEL policies see as `source.identity` and `request.body`; with
    `body`, the request's AI guardrails judge it as the data plane would."""
    extra = (identity, body)
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    scheme, host, port, path = _target(target)
    result: dict[str, Any] = {"gateway": snapshot.gateway.name, "target": target, "connect": None, "connection": None}
    result["request"] = None
    result["policies"] = []
    try:
        name = canonical_host(host)
    except InvalidHostname as e:
        result["verdict"] = _verdict(Verdict.deny("invalid-host", gateway_policy(snapshot.gateway), str(e), 400))
        return result
    result["host"], result["port"] = name, port
    if scheme == "http":
        # Absolute-form HTTP to the explicit proxy: the request picks its listener; its URL names the destination.
        choice = select_listener(snapshot.gateway, Carries.HTTP, port, name, None)
        result["connection"] = {"via": "absolute-form HTTP", "listener": choice.listener.name if choice.listener else None}
        return _with_request(result, snapshot, choice.listener, name, port, method, path, headers, scheme, resolve, rng, extra)
    connect = decide_connect(snapshot, name, port)
    result["connect"] = {"verdict": _verdict(connect.verdict), "listener": connect.listener.name if connect.listener else None}
    if not connect.verdict.allowed:
        result["verdict"] = _verdict(connect.verdict)
        result["policies"] = _policies(snapshot, connect.listener, connect.route, None, None, connect.verdict)
        return result
    carries = Carries.TLS if scheme == "https" or not scheme else Carries.TCP
    conn = decide_connection(snapshot, carries, port, connect_host=name, sni=name if carries is Carries.TLS else None)
    result["connection"] = {
        "carries": carries.value,
        "listener": conn.listener.name if conn.listener else None,
        "action": conn.action.value,
        "route": route_name(conn.route),
        "verdict": _verdict(conn.verdict),
    }
    if conn.action is Action.INTERCEPT and scheme:
        return _with_request(result, snapshot, conn.listener, name, port, method, path, headers, scheme, resolve, rng, extra)
    verdict = conn.verdict
    if verdict.allowed:
        # A relayed tunnel dials the destination the client named (through the gateway's parent, if any).
        parent = parent_for(snapshot, None)
        verdict = _destination(result, snapshot, Upstream(name, port, "https", parent=parent), resolve) or verdict
    result["verdict"] = _verdict(verdict)
    result["policies"] = _policies(snapshot, conn.listener, conn.route, None, None, verdict)
    return result


def _with_request(
    result: dict[str, Any],
    snapshot: Snapshot,
    listener: Listener | None,
    host: str,
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    scheme: str,
    resolve: bool,
    rng: RandomSource | None,
    extra: tuple[str | None, bytes | None] = (None, None),
) -> dict[str, Any]:
    if listener is None:
        verdict = Verdict.deny("no-route", gateway_policy(snapshot.gateway))
        result["verdict"] = _verdict(verdict)
        result["policies"] = _policies(snapshot, None, None, None, None, verdict)
        return result
    # The Host header names the request's host; it must agree with the name the connection was decided on.
    request_host = host
    if "host" in headers:
        try:
            request_host = canonical_host(authority_host(headers["host"]))
        except InvalidHostname as e:
            result["verdict"] = _verdict(Verdict.deny("invalid-host", gateway_policy(snapshot.gateway), str(e), 400))
            return result
    query = {k: v for k, v in parse_qs(path.partition("?")[2], keep_blank_values=True).items()}
    view = RequestView(request_host, port, method.upper(), path, headers, query, scheme)
    decision = decide_request(snapshot, listener, view, connection_host=host, rng=rng)
    first = decision.upstreams[0] if decision.upstreams else None
    result["request"] = {
        "method": view.method,
        "path": path,
        "route": route_name(decision.route),
        "rule": decision.rule_index,
        "backend": first.backend_name if first is not None else None,
        "directResponse": str(decision.direct_response.ref) if decision.direct_response else None,
        "upstreams": [u.to_dump() for u in decision.upstreams],
        # The one rate-limit budget the request counts against: its RateLimitPolicies merged field by field.
        "rateLimit": decision.rate_limit.to_dump() if decision.rate_limit is not None else None,
    }
    trace, denial = request_policy_trace(snapshot, listener, decision, view, *extra)
    result["policyTrace"] = trace
    verdict = denial or decision.verdict
    answered = decision.direct_response is not None or (decision.rule is not None and decision.rule.filters.redirect is not None)
    if verdict.allowed and not answered and decision.ai is not None:
        # The data plane judges the buffered body before anything is dialled (addons/ai_guardrails.py).
        verdict = _guardrails(result["request"], decision, path, extra[1]) or verdict
    if verdict.allowed and not answered:  # the gateway answers a direct response or redirect itself, dialling nothing
        if first is None:
            verdict = Verdict.deny("no-healthy-backend", "", "no backendRef of the rule leaves a candidate to try", 502)
        else:
            verdict = _destination(result, snapshot, first, resolve) or verdict
        if verdict.allowed and first is not None:
            verdict = _credential(result["request"], snapshot, first, decision, listener) or verdict
    result["verdict"] = _verdict(verdict)
    backend = first.backend if first is not None else None
    result["policies"] = _policies(snapshot, listener, decision.route, backend, decision.rule_index, verdict)
    return result


def _credential(request: dict[str, Any], snapshot: Snapshot, first: Upstream, decision: RequestDecision, listener: Listener) -> Verdict | None:
    """The credential the gateway would inject (its source and target names, never a value), and the 502 the
    data plane answers when it would go over cleartext the route did not allow."""
    table = snapshot.compiled.credentials
    route = decision.route.ref if decision.route is not None else None
    credential = table.for_request(first, route, decision.rule_index, listener.name)
    if credential is None:
        return None
    request["credential"] = credential.to_dump()
    if cleartext_refused(credential, first.scheme, table.cleartext_allowed(route)):
        return Verdict.deny("credential-requires-tls", "", f"{credential.source}: a credential is only sent over verified TLS", 502)
    return None


def _guardrails(request: dict[str, Any], decision: RequestDecision, path: str, body: bytes | None) -> Verdict | None:
    """The TrafficPolicy `ai` that applies, and with a body its verdict: each step taken (detector names, never
    the values found), the body as it would be sent, or the denial."""
    assert decision.ai is not None
    ai: dict[str, Any] = {"policies": decision.ai.to_dump()}
    request["ai"] = ai
    if body is None:
        ai["steps"] = ["pass --body FILE to judge a request body"]
        return None
    outcome = guard_request(decision.ai, path.partition("?")[0], body)
    ai["steps"] = list(outcome.steps)
    if outcome.body is not None:
        ai["body"] = outcome.body.decode("utf-8", "replace")
    return outcome.verdict


def _destination(result: dict[str, Any], snapshot: Snapshot, upstream: Upstream, resolve: bool) -> Verdict | None:
    """Run the destination check on the candidate dialled first: its denial (403) or failure (502), else None."""
    dialled = upstream.parent or upstream
    out: dict[str, Any] = {"host": dialled.host, "port": dialled.port, "resolved": resolve}
    if upstream.parent is not None:
        out["via"] = "parent"
    result["destination"] = out
    checked = check_destination(snapshot, upstream, resolve=resolve)
    if checked is None:
        out["resolved"] = False
        out["note"] = NO_RESOLVE_NOTE
        return None
    if checked.denial is not None:
        return checked.denial
    if checked.unreachable is not None:
        out["unreachable"] = checked.unreachable
        return Verdict.deny("upstream-unreachable", "", checked.unreachable, 502)
    out["address"] = checked.address
    return None


def _ai_lines(ai: dict[str, Any]) -> list[str]:
    parts = ai["policies"]
    lines = []
    for name, key in (("request guard", "request"), ("response guard", "response")):
        if parts[key]:
            guard = parts[key]
            lines.append(f"ai        {name} {guard['action']} {', '.join(guard['detectors'])} by {guard['policy']}")
    for name, key in (("enrichment", "enrichment"), ("defaults", "defaults"), ("models", "models")):
        if parts[key]:
            lines.append(f"ai        {name} by {parts[key]}")
    lines.extend(f"guard     {step}" for step in ai["steps"])
    if "body" in ai:
        lines.append(f"body      {ai['body']}")
    return lines


def _render(result: dict[str, Any]) -> str:
    lines = [f"gateway   {result['gateway']}", f"target    {result['target']}"]
    if result.get("connect"):
        c = result["connect"]
        lines.append(f"CONNECT   {'allowed' if c['verdict']['allowed'] else 'denied'} (listener {c['listener']})")
    if result.get("connection"):
        c = result["connection"]
        lines.append("listener  " + str(c.get("listener")) + (f"  action {c['action']}" if "action" in c else ""))
        if c.get("route"):
            lines.append(f"route     {c['route']}")
    if result.get("request"):
        r = result["request"]
        matched = f"route {r['route']} rule {r['rule']}" if r["route"] is not None else "no route matched (defaultPolicy decides)"
        lines.append(f"request   {r['method']} {r['path']}: {matched}")
        if r["backend"]:
            lines.append(f"backend   {r['backend']}")
        if r["directResponse"]:
            lines.append(f"answer    {r['directResponse']}")
        if r.get("credential"):
            c = r["credential"]
            targets = [*c["headers"], *(f"?{q}" for q in c["query"])]
            targets += ["Google token"] if c["gcpServiceAccount"] else []
            targets += ["SigV4"] if c["awsSigV4"] else []
            lines.append(f"credential {c['source']}: " + ("passthrough" if c["passthrough"] else ", ".join(targets)))
        for u in r["upstreams"]:
            via = f" via parent {u['parent']}" if u.get("parent") else ""
            lines.append(f"upstream  group {u['group']}: {u['scheme']}://{u['host']}:{u['port']} ({u['backend'] or 'requested destination'}){via}")
        if r.get("rateLimit"):
            lines.append(f"budget    {r['rateLimit']['policy']}: {_rate_limit_text(r['rateLimit'])}")
        if r.get("ai"):
            lines.extend(_ai_lines(r["ai"]))
    lines += render_trace(result.get("policyTrace") or [])  # in the order the data plane consults them, before the dial
    if result.get("destination"):
        d = result["destination"]
        where = f"{d['host']}:{d['port']}"
        if "address" in d:
            lines.append(f"dial      {where} -> {d['address']}")
        elif "note" in d:
            lines.append(f"dial      {where}: {d['note']}")
        elif "unreachable" in d:
            lines.append(f"dial      {where}: unreachable ({d['unreachable']})")
        else:
            lines.append(f"dial      {where}: refused")
    for p in result.get("policies") or []:
        detail = f" {', '.join(p['unsupportedFields'])}" if p.get("unsupportedFields") else ""
        detail += _budget_fields_text(p) if p.get("rateLimit") else ""
        lines.append(f"policy    {p['policy']} ({p['scope'] or 'decides'}): {p['verdict']}{detail}")
    v = result.get("verdict", {})
    word = "ALLOW" if v.get("allowed") else f"DENY {v.get('status', '')}".strip()
    lines.append(f"verdict   {word}: {v.get('reason')}" + (f" by {v['policy']}" if v.get("policy") else "") + (f" ({v['message']})" if v.get("message") else ""))
    return "\n".join(lines)


def _read_body(source: str | None) -> bytes | None:
    """`--body FILE`, or `--body -` for standard input: the request body CEL policies (`request.body`) and AI
    guardrails see."""
    if source is None:
        return None
    if source == "-":
        return sys.stdin.buffer.read()
    with open(source, "rb") as f:
        return f.read()


def explain(args: argparse.Namespace, out: TextIO) -> int:
    loaded = load_paths(args.config)
    compiled = compile_config(loaded.resources, gateway_name=args.gateway, secrets_dir=args.secrets_dir) if loaded.ok else None
    problems = [str(p) for p in loaded.problems] or ([str(p) for p in compiled.problems] if compiled else [])
    if problems or compiled is None or compiled.snapshot is None:
        for p in problems:
            out.write(f"{p}\n")
        return 1
    headers: dict[str, str] = {}
    for h in args.header:
        k, sep, v = h.partition(":")
        if not sep:
            out.write(f"error: --header takes K:V, got {h!r}\n")
            return 2
        headers[k.strip()] = v.strip()
    resolve = not getattr(args, "no_resolve", False)
    try:
        body = _read_body(getattr(args, "body", None))
    except OSError as e:
        out.write(f"error: --body: {e.strerror or e}: {args.body}\n")
        return 2
    result = explain_target(
        compiled.snapshot, args.target, args.method, headers, resolve=resolve, identity=args.identity, body=body
    )
    if args.identity:
        result["identity"] = args.identity
    out.write(json.dumps(result, indent=2) + "\n" if getattr(args, "json", False) else _render(result) + "\n")
    return 0 if result.get("verdict", {}).get("allowed") else 3
