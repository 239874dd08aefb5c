"""EgressDenyPolicy: the deny answer of each route it targets (the first policy to reach a route wins)."""

from __future__ import annotations

from egressproxy.compiler.compilation import Compilation
from egressproxy.config.resource import Resource
from egressproxy.snapshot import DenyAction


def record_deny(comp: Compilation, res: Resource) -> None:
    deny = res.spec.get("denyResponse") or {}
    report = res.spec.get("enforcementMode") == "Report"
    action = DenyAction(res.ref, int(deny.get("statusCode", 403)), deny.get("message"), report)
    for scope, key in comp.policy_targets.get(res.ref, []):
        route_ref = key[0] if scope == "rule" else key if scope == "route" else None
        if route_ref is not None and route_ref not in comp.denies:
            comp.denies[route_ref] = action
