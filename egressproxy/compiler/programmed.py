"""The last status pass: every object's Programmed condition, True only when the snapshot is served (a gateway
was selected and nothing is wrong), the object is something the served gateway uses, and the data plane
enforces every field it sets.

A field this build validates but does not enforce (`enforcement`) makes its object `Programmed=False` with
reason `Unsupported` and a message naming the fields; the same paths go into `Snapshot.unsupported`, for
`run`'s warnings and `explain`. A configuration with problems reports `Invalid` first (nothing of it is
served); `Unsupported` comes before `Pending`, because the fields it names stay unenforced wherever the object
ends up attached.
"""

from __future__ import annotations

from typing import Any

from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.enforcement import unsupported_fields, unsupported_message
from egressproxy.cross_format import translation_model
from egressproxy.provider_endpoints import provider_api
from egressproxy.compiler.kinds import BACKEND_KINDS, HTTP_ROUTE_KINDS, POLICY_KINDS, ROUTE_KINDS
from egressproxy.compiler.status import StatusBook
from egressproxy.config.problems import ObjectRef
from egressproxy.snapshot import Gateway

__all__ = ["EXTENSION_KINDS", "finish_statuses", "find_unsupported"]

# Kinds the data plane only reaches through references; they get Accepted and Programmed like the others.
EXTENSION_KINDS = ("GatewayExtension", "GatewayParameters")


def find_unsupported(comp: Compilation) -> None:
    """Every object's unsupported field paths, from the document as written (defaults never count).

    An EgressGateway that is not served is left out: none of it is in force, which its status says already.
    """
    for res in comp.resources:
        if res.kind == "EgressGateway" and res is not comp.served:
            continue
        raw_spec = res.raw.get("spec") if hasattr(res.raw, "get") else None
        paths = unsupported_fields(res.kind, raw_spec)
        if L4_BACKEND_REFS in paths and _only_parent_backends(comp, res.ref):
            paths = tuple(p for p in paths if p != L4_BACKEND_REFS)
        if res.kind in ("RateLimitPolicy", "RegionAllowListPolicy"):
            paths += _connection_routes(comp, res.ref)
        if res.kind in ("Backend", "AIBackend"):
            paths += _mixed_api_formats(comp, res.ref)
        if paths:
            comp.unsupported[res.ref] = paths


# The one decision that depends on values: an L4 route's backendRefs are dialled when they name parent proxies
# (DESIGN.md 4.1 parent mode: the connection goes through the parent), and only then.
L4_BACKEND_REFS = "spec.rules.backendRefs"


def _only_parent_backends(comp: Compilation, ref: ObjectRef) -> bool:
    route = comp.routes.get(ref)
    if route is None or route.kind in HTTP_ROUTE_KINDS:
        return False
    refs = [wb for rule in route.rules for wb in rule.backends]
    return bool(refs) and all(wb.backend is not None and wb.backend.parent is not None for wb in refs)


def _mixed_api_formats(comp: Compilation, ref: ObjectRef) -> tuple[str, ...]:
    """Failover walks the priority groups and translates between the OpenAI and Anthropic chat APIs
    (egressproxy/cross_format.py). Not enforced as written, and said so: a list mixing in another API (Gemini,
    Bedrock), whose candidates a client of another format never reaches; and, in a list mixing the two chat APIs,
    a provider without `model`, which a translated request cannot be addressed to."""
    backend = comp.backends.get(ref)
    if backend is None:
        return ()
    grouped = [m.backend for group in backend.members for m in group if m.weight > 0]  # AIBackend `groups`
    providers = [p for b in (backend, *grouped) for group in b.ai_groups for p in group]
    formats = {provider_api(p) for p in providers}
    if len(formats) < 2:
        return ()
    ai = backend.spec.get("ai", {}) if ref.kind == "Backend" else backend.spec
    prefix = "spec.ai" if ref.kind == "Backend" else "spec"
    field = "groups" if backend.members else "multipool" if "multipool" in ai else "priorityGroups" if "priorityGroups" in ai else "llm"
    if not formats <= _TRANSLATED_APIS:
        return (f"{prefix}.{field} (mixing the {' and '.join(sorted(formats))} APIs: only OpenAI <-> Anthropic is translated)",)
    unaddressed = sorted(p.name for p in providers if translation_model(p) is None)
    if unaddressed:
        return (f"{prefix}.{field} (mixing the OpenAI and Anthropic APIs, {', '.join(unaddressed)} sets no model to translate to)",)
    return ()


_TRANSLATED_APIS = frozenset({"openai", "anthropic"})


def _connection_routes(comp: Compilation, ref: ObjectRef) -> tuple[str, ...]:
    """Rate limits count HTTP requests: a RateLimitPolicy attached to a TLS, TCP, UDP or L4 route (whose
    connections carry no request the gateway sees) is not enforced there, and says so. So is a
    RegionAllowListPolicy: a tunnel's dial gets the listener's or gateway's policy (egressproxy/regions.py)."""
    out: list[str] = []
    for scope, key in comp.policy_targets.get(ref, []):
        route = key[0] if scope == "rule" else key if scope == "route" else None
        if isinstance(route, ObjectRef) and route.kind not in HTTP_ROUTE_KINDS:
            out.append(f"attachment to {route}")
    return tuple(dict.fromkeys(out))


def finish_statuses(comp: Compilation, gateway: Gateway | None) -> None:
    find_unsupported(comp)
    ok = gateway is not None and not comp.problems
    not_served = "the configuration has problems; nothing from it is served" if gateway is not None else "no EgressGateway is served"
    for gw in comp.of_kind("EgressGateway"):
        comp.status.set(gw.ref, "Accepted", True, "Accepted")
        if gateway is not None and gw.ref == gateway.ref:
            _programmed(comp, gw.ref, ok, not_served)
        else:
            comp.status.set(gw.ref, "Programmed", False, "NotSelected", "another EgressGateway is served (--gateway)")
    for name, book in comp.listener_status.items():
        _programmed_in(book, ObjectRef("Listener", "", name), ok, not_served)
    for kind in ROUTE_KINDS:
        for res in comp.of_kind(kind):
            attached = res.ref in comp.routes
            _programmed(comp, res.ref, ok and attached, not_served if attached else "not attached to a served listener")
    for kind in EXTENSION_KINDS:
        for res in comp.of_kind(kind):
            comp.status.set(res.ref, "Accepted", True, "Accepted")
    for kind in BACKEND_KINDS + ("DirectResponse",) + EXTENSION_KINDS:
        for res in comp.of_kind(kind):
            _programmed(comp, res.ref, ok, not_served)
    for kind in POLICY_KINDS:
        for res in comp.of_kind(kind):
            served = any(scope not in ("elsewhere",) and _point_served(comp, scope, key) for scope, key in comp.policy_targets.get(res.ref, []))
            _programmed(comp, res.ref, ok and served, not_served if served else "attached to nothing the served gateway uses")


def _point_served(comp: Compilation, scope: str, key: Any) -> bool:
    if scope in ("gateway", "listener", "backend"):
        return True
    route_ref = key[0] if scope == "rule" else key
    return route_ref in comp.routes


def _programmed(comp: Compilation, ref: ObjectRef, ok: bool, why_not: str) -> None:
    """Programmed for one object: Invalid when nothing is served, else Unsupported, else Pending or True."""
    unsupported = comp.unsupported.get(ref)
    if unsupported and not comp.problems:
        comp.status.set(ref, "Programmed", False, "Unsupported", unsupported_message(unsupported))
    else:
        _programmed_in(comp.status, ref, ok, why_not)


def _programmed_in(book: StatusBook, ref: ObjectRef, ok: bool, why_not: str) -> None:
    if ok:
        book.set(ref, "Programmed", True, "Programmed", "in the served snapshot")
    else:
        book.set(ref, "Programmed", False, "Invalid" if "problems" in why_not else "Pending", why_not)
