"""`egressproxy explain`: a dry run through the same decision functions the data plane calls."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

from egressproxy.compiler import compile_config
from egressproxy.config.loader import load_paths
from egressproxy.decisions import (
    Action,
    RequestView,
    decide_connect,
    decide_connection,
    decide_request,
    route_name,
)
from egressproxy.flowrecord import Verdict
from egressproxy.hostnames import InvalidHostname, canonical_host
from egressproxy.matching import Carries, select_listener
from egressproxy.snapshot import Listener, Snapshot

__all__ = ["explain", "explain_target"]


def _verdict(v: Verdict) -> dict[str, Any]:
    out: dict[str, Any] = {"allowed": v.allowed, "reason": v.reason, "policy": v.policy}
    if not v.allowed:
        out["status"] = v.status_code
        if v.message and v.message != v.reason:
            out["message"] = v.message
    return out


def _policies(snapshot: Snapshot, listener: Listener | None, route: Any, backend: Any, rule: int | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for kind in snapshot.policies.kinds():
        attached = snapshot.policies.policies(
            kind,
            route=route.ref if route is not None else None,
            backend=backend.ref if backend is not None else None,
            listener=listener.name if listener is not None else None,
            rule=rule,
        )
        if attached:
            out[kind] = [f"{p.ref} ({p.scope})" for p in attached]
    return out


def explain_target(
    snapshot: Snapshot, target: str, method: str = "GET", headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """What the gateway would do with a request to URL, or a connection to HOST:PORT."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    if "://" in target:
        url = urlsplit(target)
        scheme = url.scheme.lower()
        host = url.hostname or ""
        port = url.port or (443 if scheme == "https" else 80)
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    else:
        scheme, path = "", ""
        host, _, p = target.rpartition(":")
        port = int(p) if p.isdigit() else 443
        host = host.strip("[]") or target
    result: dict[str, Any] = {"gateway": snapshot.gateway.name, "target": target}
    try:
        name = canonical_host(host)
    except InvalidHostname as e:
        result["verdict"] = _verdict(Verdict.deny("invalid-host", message=str(e), status_code=400))
        return result
    result["host"], result["port"] = name, port
    if scheme == "http":
        choice = select_listener(snapshot.gateway, Carries.HTTP, port, name, None)
        result["connection"] = {"via": "absolute-form HTTP", "listener": choice.listener.name if choice.listener else None}
        return _with_request(result, snapshot, choice.listener, name, port, method, path, headers, scheme, None)
    connect = decide_connect(snapshot, name, port)
    result["connect"] = {"verdict": _verdict(connect.verdict), "listener": connect.listener.name if connect.listener else None}
    if not connect.verdict.allowed:
        result["verdict"] = _verdict(connect.verdict)
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
        return _with_request(result, snapshot, conn.listener, name, port, method, path, headers, scheme, name)
    result["verdict"] = _verdict(conn.verdict)
    result["policies"] = _policies(snapshot, conn.listener, conn.route, None, None)
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
    connection_host: str | None,
) -> dict[str, Any]:
    if listener is None:
        result["verdict"] = _verdict(Verdict.deny("no-route", f"EgressGateway/{snapshot.gateway.ref.namespace}/{snapshot.gateway.ref.name}"))
        return result
    query = {k: v for k, v in parse_qs(path.partition("?")[2], keep_blank_values=True).items()}
    view = RequestView(host, port, method.upper(), path, headers, query, scheme)
    decision = decide_request(snapshot, listener, view, connection_host=connection_host)
    backend = decision.backend.backend if decision.backend is not None else None
    result["request"] = {
        "method": view.method,
        "path": path,
        "route": route_name(decision.route),
        "rule": decision.rule_index,
        "backend": backend.name if backend is not None else (str(decision.backend.ref) if decision.backend else None),
        "directResponse": str(decision.direct_response.ref) if decision.direct_response else None,
    }
    result["verdict"] = _verdict(decision.verdict)
    result["policies"] = _policies(snapshot, listener, decision.route, backend, decision.rule_index)
    return result


def _render(result: dict[str, Any]) -> str:
    lines = [f"gateway   {result['gateway']}", f"target    {result['target']}"]
    if "connect" in result:
        c = result["connect"]
        lines.append(f"CONNECT   {'allowed' if c['verdict']['allowed'] else 'denied'} (listener {c['listener']})")
    if "connection" in result:
        c = result["connection"]
        lines.append("listener  " + str(c.get("listener")) + (f"  action {c['action']}" if "action" in c else ""))
        if c.get("route"):
            lines.append(f"route     {c['route']}")
    if "request" in result:
        r = result["request"]
        lines.append(f"request   {r['method']} {r['path']}: route {r['route']} rule {r['rule']}")
        if r["backend"]:
            lines.append(f"backend   {r['backend']}")
        if r["directResponse"]:
            lines.append(f"answer    {r['directResponse']}")
    for kind, refs in (result.get("policies") or {}).items():
        lines.append(f"policy    {kind}: {', '.join(refs)}")
    v = result.get("verdict", {})
    word = "ALLOW" if v.get("allowed") else f"DENY {v.get('status', '')}".strip()
    lines.append(f"verdict   {word}: {v.get('reason')}" + (f" by {v['policy']}" if v.get("policy") else "") + (f" ({v['message']})" if v.get("message") else ""))
    return "\n".join(lines)


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
    result = explain_target(compiled.snapshot, args.target, args.method, headers)
    if args.identity:
        result["identity"] = args.identity
    out.write(json.dumps(result, indent=2) + "\n" if getattr(args, "json", False) else _render(result) + "\n")
    return 0 if result.get("verdict", {}).get("allowed") else 3
