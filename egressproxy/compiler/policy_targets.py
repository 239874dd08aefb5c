"""Where a policy attaches: each targetRef / targetRefs[i] / parentRefs[i] resolved to an attachment point
(scope, key), and the policy recorded there. A dangling target is a problem and leaves the policy unaccepted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.kinds import ALL_SCOPES, BACKEND_KINDS, GATEWAY_KINDS, POLICY_KINDS, ROUTE_KINDS
from egressproxy.config.kinds import KINDS
from egressproxy.config.problems import ObjectRef
from egressproxy.config.resource import Resource
from egressproxy.snapshot import AttachedPolicy, freeze

_ATTACHMENT_FIELDS = ("targetRefs", "targetRef", "parentRefs")
# Policies that may name a target of a kind this gateway does not model at all (kgateway's XListenerSet, Apoxy
# clrk's AIProviderRoute) and then simply apply nowhere. A deny-type policy of ours (EgressDenyPolicy,
# RegionAllowListPolicy, RateLimitPolicy) is not among them: inert, it would let through what it was written to stop.
_INERT_WHEN_UNMODELLED = (
    "TrafficPolicy", "HTTPListenerPolicy", "BackendTLSPolicy", "CredentialInjectionPolicy", "LoggingPolicy",
)


def policy_target_refs(res: Resource) -> list[tuple[str, Mapping[str, Any]]]:
    """Every (path, reference) that attaches a policy: targetRef, targetRefs[i], parentRefs[i]."""
    spec = res.spec
    refs: list[tuple[str, Mapping[str, Any]]] = []
    if spec.get("targetRef"):
        refs.append(("spec.targetRef", spec["targetRef"]))
    refs += [(f"spec.targetRefs[{i}]", r) for i, r in enumerate(spec.get("targetRefs") or [])]
    refs += [(f"spec.parentRefs[{i}]", r) for i, r in enumerate(spec.get("parentRefs") or [])]
    return refs


def resolve_target(comp: Compilation, res: Resource, path: str, tref: Mapping[str, Any]) -> tuple[str, Any] | None:
    """The attachment point (scope, key) a target reference names, or None (with a problem if dangling).

    Returns ("elsewhere", None) for a target that exists outside the served gateway.
    """
    kind = tref.get("kind") or "EgressGateway"
    ns = tref.get("namespace") or res.namespace
    name = tref["name"]
    allowed = POLICY_KINDS.get(res.kind, ALL_SCOPES)
    scope = "gateway" if kind in GATEWAY_KINDS else "backend" if kind in (*BACKEND_KINDS, "Service") else "route" if kind in ROUTE_KINDS else None
    if scope is None and res.kind in _INERT_WHEN_UNMODELLED and kind not in KINDS:
        # A kind this gateway does not model at all (kgateway's XListenerSet, say): upstream's API server takes
        # it, so the policy is valid, attached nowhere and says so (a route of that parent is unattached too).
        message = f"{path}.kind: {tref.get('group') or ''}/{kind} is not a kind this gateway serves"
        comp.status.set(res.ref, "Accepted", False, "InvalidKind", message)
        return ("elsewhere", None)
    if scope is None or scope not in allowed:
        kinds = _kinds_for_scopes(allowed)
        comp.problem(res, f"{path}.kind", f'a {res.kind} cannot target a {kind} (it attaches to {kinds})')
        comp.status.set(res.ref, "Accepted", False, "InvalidKind", f"{path}.kind: {kind}")
        comp.policy_dangling.add(res.ref)
        return None
    if scope == "gateway":
        return _resolve_gateway_target(comp, res, path, ns, name, tref.get("sectionName"))
    if kind == "Service":
        return ("backend", ObjectRef("Service", ns, name))
    target = comp.find(kind, ns, name)
    if target is None:
        _dangling_target(comp, res, f"{path}.name", f'{kind} "{ns}/{name}" not found')
        return None
    if scope == "route":
        return _route_target(comp, res, path, target, tref.get("sectionName"))
    return ("backend", target.ref)


def _resolve_gateway_target(
    comp: Compilation, res: Resource, path: str, ns: str, name: str, section: str | None
) -> tuple[str, Any] | None:
    target = comp.find("EgressGateway", ns, name)
    if target is None:
        _dangling_target(comp, res, f"{path}.name", f'EgressGateway "{ns}/{name}" not found')
        return None
    listeners = [spec.get("name") for spec in target.spec.get("listeners", [])]
    if section is not None and section not in listeners:
        _dangling_target(comp, res, f"{path}.sectionName", f'EgressGateway "{ns}/{name}" has no listener "{section}"')
        return None
    if comp.served is None or target.ref != comp.served.ref:
        return ("elsewhere", None)
    return ("listener", section) if section is not None else ("gateway", None)


def _route_target(comp: Compilation, res: Resource, path: str, route: Resource, section: str | None) -> tuple[str, Any] | None:
    if section is None:
        return ("route", route.ref)
    for i, rule in enumerate(route.spec.get("rules", [])):
        if rule.get("name") == section:
            return ("rule", (route.ref, i))
    _dangling_target(comp, res, f"{path}.sectionName", f'{route.kind} "{route.namespace}/{route.name}" has no rule named "{section}"')
    return None


def _dangling_target(comp: Compilation, res: Resource, path: str, message: str) -> None:
    comp.problem(res, path, message)
    comp.status.set(res.ref, "Accepted", False, "TargetNotFound", f"{path}: {message}")
    comp.policy_dangling.add(res.ref)


def attach(comp: Compilation, res: Resource, point: tuple[str, Any]) -> None:
    """Record the policy at its attachment point (once), its entries kept in namespace/name order."""
    comp.policy_targets.setdefault(res.ref, []).append(point)
    scope, key = point
    if scope == "elsewhere":
        return
    spec = freeze({k: v for k, v in res.spec.items() if k not in _ATTACHMENT_FIELDS})
    entries = comp.attached.setdefault((res.kind, scope, key), [])
    if all(p.ref != res.ref for p in entries):
        entries.append(AttachedPolicy(res.ref, spec, scope))
        entries.sort(key=lambda p: (p.ref.namespace, p.ref.name))


def _kinds_for_scopes(scopes: frozenset[str]) -> str:
    names = []
    if "gateway" in scopes:
        names.append("an EgressGateway")
    if "backend" in scopes:
        names.append("a Backend")
    if "route" in scopes:
        names.append("a route")
    return " or ".join(names)
