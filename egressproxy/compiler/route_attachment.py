"""Which listeners of the served gateway a route attaches to, through its parentRefs (sectionName, port), the
listener's protocol and its allowedRoutes; or why it attaches to none (NoMatchingParent, NotAllowedByListeners)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.kinds import APOXY_GROUP, GATEWAY_API_GROUP, HTTP_ROUTE_KINDS
from egressproxy.compiler.listener_shell import ListenerShell
from egressproxy.compiler.namespace_selectors import selector_matches
from egressproxy.config.resource import Resource

__all__ = ["Attachment", "attach_route", "parent_group_kind"]

_ROUTE_LISTENERS = {
    "HTTPRoute": "HTTP, HTTPS or TLS Terminate",
    "GRPCRoute": "HTTP, HTTPS or TLS Terminate",
    "TLSRoute": "TLS Passthrough",
    "TCPRoute": "TCP",
    "UDPRoute": "UDP",
    "EgressL4Route": "TCP or UDP",
}


@dataclass
class Attachment:
    listeners: list[str] = field(default_factory=list)
    reason: str | None = None  # why not attached (NoMatchingParent, NotAllowedByListeners)
    message: str = ""


def attach_route(comp: Compilation, res: Resource) -> Attachment:
    result = Attachment()
    for i, pref in enumerate(res.spec.get("parentRefs", [])):
        _attach_parent(comp, res, f"spec.parentRefs[{i}]", pref, result)
    if not result.listeners and result.reason is None:
        served = f"{comp.served.namespace}/{comp.served.name}" if comp.served is not None else "(none selected)"
        result.reason = "NoMatchingParent"
        result.message = f"not attached to the served EgressGateway {served}"
    return result


# The parents a route may name: the EgressGateway, or a Gateway API Gateway meaning the EgressGateway of that name.
_PARENT_KINDS = {("EgressGateway", APOXY_GROUP), ("Gateway", GATEWAY_API_GROUP)}


def parent_group_kind(pref: Mapping[str, Any]) -> tuple[str, str]:
    """(group, kind) of a parentRef with Gateway API's defaulting: an omitted kind is the EgressGateway (ours),
    an omitted group is the kind's own (clrk.apoxy.dev for EgressGateway, gateway.networking.k8s.io for
    Gateway); the schema defaults kind, so a group of gateway.networking.k8s.io without a kind means Gateway."""
    group = pref.get("group")
    kind = pref.get("kind") or "EgressGateway"
    if kind == "EgressGateway" and group == GATEWAY_API_GROUP:
        kind = "Gateway"  # Gateway API's group has no EgressGateway: its default kind is Gateway
    if group is None or (group == "" and kind == "EgressGateway"):
        group = GATEWAY_API_GROUP if kind == "Gateway" else APOXY_GROUP
    return group, kind


def _attach_parent(comp: Compilation, res: Resource, path: str, pref: Mapping[str, Any], result: Attachment) -> None:
    group, kind = parent_group_kind(pref)
    if (kind, group) not in _PARENT_KINDS:
        attaches = f"a route attaches to an EgressGateway ({APOXY_GROUP}) or a Gateway ({GATEWAY_API_GROUP}, naming the EgressGateway)"
        if kind in ("EgressGateway", "Gateway"):  # our kinds in the wrong group: a typo, named at validate time
            comp.problem(res, f"{path}.group", f'unsupported parent {kind} in group "{group}": {attaches}')
            comp.status.set(res.ref, "ResolvedRefs", False, "InvalidKind", f"{path}.group: {group}/{kind}")
            return
        # Another kind of parent (a parent HTTPRoute in kgateway's delegation, a ListenerSet, a mesh Service):
        # Gateway API leaves it to the implementation that owns it, so the route is valid and simply not
        # attached through this parent.
        if result.reason is None:
            result.reason = "UnsupportedValue"
            result.message = f"{path}.kind: parent {group}/{kind} is not a kind this gateway serves; {attaches}"
        return
    ns = pref.get("namespace") or res.namespace
    gw = comp.find("EgressGateway", ns, pref["name"])
    if gw is None:
        message = f'EgressGateway "{ns}/{pref["name"]}" not found'
        comp.problem(res, f"{path}.name", message)
        result.reason, result.message = "NoMatchingParent", f"{path}.name: {message}"
        return
    section = pref.get("sectionName")
    if section is not None and section not in [l.get("name") for l in gw.spec.get("listeners", [])]:
        message = f'EgressGateway "{ns}/{gw.name}" has no listener "{section}"'
        comp.problem(res, f"{path}.sectionName", message)
        result.reason, result.message = "NoMatchingParent", f"{path}.sectionName: {message}"
        return
    if comp.served is None or gw.ref != comp.served.ref:
        return
    _attach_to_listeners(comp, res, path, pref, section, result)


def _attach_to_listeners(
    comp: Compilation, res: Resource, path: str, pref: Mapping[str, Any], section: str | None, result: Attachment
) -> None:
    port = pref.get("port")
    named = [s for s in comp.shells if section is None or s.name == section]
    candidates = [s for s in named if port is None or s.port == port]
    if not candidates:
        message = f"no listener{' ' + repr(section) if section else ''} on port {port}"
        comp.problem(res, f"{path}.port", message)
        result.reason, result.message = "NoMatchingParent", f"{path}.port: {message}"
        return
    compatible = [s for s in candidates if _compatible(res.kind, s)]
    if not compatible:
        where = f'listener "{section}" is {_describe(candidates[0])}' if section else "the gateway has no such listener"
        message = f"{where}; a {res.kind} attaches to {_ROUTE_LISTENERS[res.kind]} listeners"
        comp.problem(res, f"{path}.sectionName" if section else path, message)
        result.reason, result.message = "NotAllowedByListeners", message
        return
    for shell in compatible:
        refusal = _allowed_routes_refusal(comp, res, shell)
        if refusal is None:
            if shell.name not in result.listeners:
                result.listeners.append(shell.name)
        elif not result.listeners:
            result.reason, result.message = "NotAllowedByListeners", refusal


def _allowed_routes_refusal(comp: Compilation, res: Resource, shell: ListenerShell) -> str | None:
    """Why the listener's allowedRoutes refuses this route (kinds, namespaces), or None."""
    allowed = shell.allowed_routes
    kinds = allowed.get("kinds")
    if kinds and not any(k.get("kind") == res.kind and k.get("group", res.group) in (res.group, "") for k in kinds):
        return f'listener "{shell.name}" allowedRoutes.kinds does not include {res.kind}'
    namespaces = allowed.get("namespaces") or {}
    origin = namespaces.get("from", "Same")
    assert comp.served is not None
    if origin == "Same" and res.namespace != comp.served.namespace:
        return f'listener "{shell.name}" only allows routes from namespace "{comp.served.namespace}"'
    if origin == "Selector" and not selector_matches(namespaces.get("selector") or {}, res.namespace):
        return f'listener "{shell.name}" allowedRoutes.namespaces.selector does not select namespace "{res.namespace}"'
    return None


def _compatible(route_kind: str, shell: ListenerShell) -> bool:
    protocol, terminate = shell.protocol, shell.tls_mode == "Terminate"
    if route_kind in HTTP_ROUTE_KINDS:
        return protocol in ("HTTP", "HTTPS") or (protocol == "TLS" and terminate)
    if route_kind == "TLSRoute":
        return protocol == "TLS" and not terminate
    if route_kind == "TCPRoute":
        return protocol == "TCP"
    if route_kind == "UDPRoute":
        return protocol == "UDP"
    return protocol in ("TCP", "UDP")  # EgressL4Route


def _describe(shell: ListenerShell) -> str:
    return f"{shell.protocol} {shell.tls_mode}" if shell.tls_mode else shell.protocol
