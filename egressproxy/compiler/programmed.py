"""The last status pass: every object's Programmed condition, True only when the snapshot is served (a gateway
was selected and nothing is wrong) and the object is something the served gateway uses."""

from __future__ import annotations

from typing import Any

from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.kinds import BACKEND_KINDS, POLICY_KINDS, ROUTE_KINDS
from egressproxy.compiler.status import StatusBook
from egressproxy.config.problems import ObjectRef
from egressproxy.snapshot import Gateway


def finish_statuses(comp: Compilation, gateway: Gateway | None) -> None:
    ok = gateway is not None and not comp.problems
    not_served = "the configuration has problems; nothing from it is served" if gateway is not None else "no EgressGateway is served"
    for gw in comp.of_kind("EgressGateway"):
        comp.status.set(gw.ref, "Accepted", True, "Accepted")
        if gateway is not None and gw.ref == gateway.ref:
            _programmed_in(comp.status, gw.ref, ok, not_served)
        else:
            comp.status.set(gw.ref, "Programmed", False, "NotSelected", "another EgressGateway is served (--gateway)")
    for name, book in comp.listener_status.items():
        _programmed_in(book, ObjectRef("Listener", "", name), ok, not_served)
    for kind in ROUTE_KINDS:
        for res in comp.of_kind(kind):
            attached = res.ref in comp.routes
            _programmed_in(comp.status, res.ref, ok and attached, not_served if attached else "not attached to a served listener")
    for kind in BACKEND_KINDS + ("DirectResponse",):
        for res in comp.of_kind(kind):
            _programmed_in(comp.status, res.ref, ok, not_served)
    for kind in POLICY_KINDS:
        for res in comp.of_kind(kind):
            served = any(scope not in ("elsewhere",) and _point_served(comp, scope, key) for scope, key in comp.policy_targets.get(res.ref, []))
            _programmed_in(comp.status, res.ref, ok and served, not_served if served else "attached to nothing the served gateway uses")


def _point_served(comp: Compilation, scope: str, key: Any) -> bool:
    if scope in ("gateway", "listener", "backend"):
        return True
    route_ref = key[0] if scope == "rule" else key
    return route_ref in comp.routes


def _programmed_in(book: StatusBook, ref: ObjectRef, ok: bool, why_not: str) -> None:
    if ok:
        book.set(ref, "Programmed", True, "Programmed", "in the served snapshot")
    else:
        book.set(ref, "Programmed", False, "Invalid" if "problems" in why_not else "Pending", why_not)
