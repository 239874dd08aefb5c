"""The route pass: every route's hostnames and rules compiled, its listeners found, and its statuses set; a
route attached to no served listener is not in the snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from egressproxy.compiler.backend_refs import resolve_backend_ref, unmodelled_backend_kind
from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.hostname_forms import route_hostnames
from egressproxy.compiler.kinds import ROUTE_KINDS
from egressproxy.compiler.route_attachment import attach_route
from egressproxy.compiler.route_filters import compile_filters
from egressproxy.compiler.route_matches import grpc_match, http_match, l4_match
from egressproxy.config.resource import Resource
from egressproxy.traffic_retries import compile_route_retry
from egressproxy.snapshot import HttpRouteMatch, L4Match, Route, Rule


def compile_routes(comp: Compilation) -> None:
    for kind in ROUTE_KINDS:
        for res in comp.of_kind(kind):
            _compile_route(comp, res)


def _compile_route(comp: Compilation, res: Resource) -> None:
    hostnames = route_hostnames(comp, res, "spec.hostnames", res.spec.get("hostnames", []))
    rules = tuple(_compile_rule(comp, res, i, rule) for i, rule in enumerate(res.spec.get("rules", [])))
    attachment = attach_route(comp, res)
    if not comp.status.has(res.ref, "ResolvedRefs"):
        comp.status.set(res.ref, "ResolvedRefs", True, "ResolvedRefs")
    if attachment.listeners:
        comp.status.set(res.ref, "Accepted", True, "Accepted")
        comp.routes[res.ref] = Route(
            kind=res.kind,
            ref=res.ref,
            hostnames=hostnames,
            rules=rules,
            deny=comp.denies.get(res.ref),
            listeners=tuple(attachment.listeners),
        )
    else:
        comp.status.set(res.ref, "Accepted", False, attachment.reason or "NoMatchingParent", attachment.message)


def _compile_rule(comp: Compilation, res: Resource, index: int, spec: Mapping[str, Any]) -> Rule:
    path = f"spec.rules[{index}]"
    filters = compile_filters(comp, res, index, path, spec.get("filters", []))
    backends = tuple(
        wb
        for j, ref in enumerate(spec.get("backendRefs", []))
        if (wb := resolve_backend_ref(comp, res, f"{path}.backendRefs[{j}]", ref)) is not None
    )
    unresolved = tuple(u for ref in spec.get("backendRefs", []) if (u := unmodelled_backend_kind(res, ref)) is not None)
    matches: tuple[HttpRouteMatch, ...] = ()
    l4_matches: tuple[L4Match, ...] = ()
    if res.kind == "HTTPRoute":
        matches = tuple(http_match(m) for m in spec.get("matches", []))
        matches = matches or (HttpRouteMatch(),)
    elif res.kind == "GRPCRoute":
        matches = tuple(grpc_match(m) for m in spec.get("matches", [])) or (HttpRouteMatch(),)
    elif res.kind == "EgressL4Route":
        l4_matches = tuple(l4_match(comp, res, f"{path}.matches[{j}]", m) for j, m in enumerate(spec.get("matches", [])))
    timeouts = spec.get("timeouts") or {}
    return Rule(
        index=index,
        name=spec.get("name"),
        matches=matches,
        l4_matches=l4_matches,
        filters=filters,
        backends=backends,
        request_timeout=timeouts.get("request"),
        backend_request_timeout=timeouts.get("backendRequest"),
        retry=compile_route_retry(f"{res.kind}/{res.namespace}/{res.name} rules[{index}].retry", spec.get("retry")),
        unresolved_backends=unresolved,
    )
