"""The served gateway's listeners: their shells (protocol, TLS mode, CA) first, then, once routes are attached,
the finished listeners with their route tables and the index of which listeners take which connection."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from egressproxy.compiler.ca_material import MINTED, MINTED_AT_RUN, ca_material, minted_ca_material
from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.kinds import HTTP_ROUTE_KINDS
from egressproxy.compiler.listener_shell import ListenerShell, precedence
from egressproxy.compiler.route_tables import build_host_table, build_http_table, build_l4_table
from egressproxy.compiler.status import StatusBook
from egressproxy.config.problems import ObjectRef
from egressproxy.config.resource import Resource
from egressproxy.snapshot import Carries, Listener


def compile_listener_shells(comp: Compilation, gw: Resource) -> None:
    for i, spec in enumerate(gw.spec.get("listeners", [])):
        shell = _listener_shell(comp, gw, i, spec)
        comp.shells.append(shell)


def _listener_shell(comp: Compilation, gw: Resource, index: int, spec: Mapping[str, Any]) -> ListenerShell:
    protocol = spec["protocol"]
    tls = spec.get("tls")
    mode = tls.get("mode", "Passthrough") if tls else None
    intercepts = protocol == "HTTPS" or (protocol in ("HTTP", "TLS") and mode == "Terminate")
    name = spec["name"]
    book = comp.listener_status[name] = StatusBook()
    lref = ObjectRef("Listener", "", name)
    book.set(lref, "Accepted", True, "Accepted")
    ca = None
    if intercepts and tls and tls.get("caCertRef"):
        ca = ca_material(comp, gw, f"spec.listeners[{index}].tls.caCertRef", tls["caCertRef"])
        if ca is None:
            book.set(lref, "ResolvedRefs", False, "InvalidCertificateRef", "the caCertRef Secret is missing or invalid")
    elif intercepts:
        ca = minted_ca_material(comp, gw, f"spec.listeners[{index}].tls")
        if ca is None and comp.gateway_cas is not None:
            book.set(lref, "ResolvedRefs", False, "InvalidCertificateRef", "the gateway's minted CA is unusable")
        elif ca is None:
            book.set(lref, "ResolvedRefs", True, "ResolvedRefs", MINTED_AT_RUN)
        else:
            book.set(lref, "ResolvedRefs", True, "ResolvedRefs", MINTED)
    if not book.has(lref, "ResolvedRefs"):
        book.set(lref, "ResolvedRefs", True, "ResolvedRefs")
    return ListenerShell(
        name=name,
        protocol=protocol,
        port=spec.get("port"),
        tls_mode=mode,
        intercepts=intercepts,
        precedence=precedence(protocol, mode),
        index=index,
        allowed_routes=spec.get("allowedRoutes") or {},
        ca=ca,
    )


def build_listener(comp: Compilation, shell: ListenerShell) -> Listener:
    attached = [r for r in comp.routes.values() if shell.name in r.listeners]
    return Listener(
        name=shell.name,
        protocol=shell.protocol,
        port=shell.port,
        tls_mode=shell.tls_mode,
        intercepts=shell.intercepts,
        precedence=shell.precedence,
        index=shell.index,
        ca=shell.ca,
        http_routes=build_http_table([r for r in attached if r.kind in HTTP_ROUTE_KINDS]),
        tls_routes=build_host_table([r for r in attached if r.kind == "TLSRoute"]),
        l4_routes=build_l4_table([r for r in attached if r.kind in ("TCPRoute", "UDPRoute", "EgressL4Route")]),
    )


def listeners_by_port(listeners: Sequence[Listener]) -> Mapping[tuple[Carries, int | None], tuple[Listener, ...]]:
    """(carries, port) -> listeners with exactly that port; (carries, None) -> port-less ones; by precedence."""
    table: dict[tuple[Carries, int | None], list[Listener]] = {}
    ordered = sorted(listeners, key=lambda l: (-l.precedence, l.index))
    for carries in Carries:
        for listener in ordered:
            if _accepts(listener, carries):
                table.setdefault((carries, listener.port), []).append(listener)
    return MappingProxyType({k: tuple(v) for k, v in table.items()})


def _accepts(listener: Listener, carries: Carries) -> bool:
    """Can this listener take a connection that carries `carries`? (DESIGN.md section 4, listener matching)"""
    if carries is Carries.TLS:
        return listener.intercepts or listener.protocol in ("TLS", "TCP")
    if carries is Carries.HTTP:
        return (listener.protocol == "HTTP" and not listener.intercepts) or listener.protocol == "TCP"
    if carries is Carries.TCP:
        return listener.protocol == "TCP"
    return listener.protocol == "UDP"
