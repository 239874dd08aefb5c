"""Backend and AIBackend objects: static hosts, a parent proxy with its credentials, AI provider groups."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from egressproxy.compiler.ai_providers import compile_ai
from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.hostname_forms import canonical_or_raw
from egressproxy.compiler.kinds import BACKEND_KINDS
from egressproxy.compiler.secret_refs import require_keys, resolve_secret
from egressproxy.config.problems import ObjectRef
from egressproxy.config.resource import Resource
from egressproxy.outlier_detection import compile_outlier
from egressproxy.snapshot import Backend, BackendMember, ParentProxy, StaticHost, freeze


def compile_backends(comp: Compilation) -> None:
    for kind in BACKEND_KINDS:
        for res in comp.of_kind(kind):
            comp.backends[res.ref] = _compile_backend(comp, res)
            comp.status.set(res.ref, "Accepted", True, "Accepted")
            comp.status.set(res.ref, "ResolvedRefs", True, "ResolvedRefs")
    for res in comp.of_kind("AIBackend"):  # once every Backend a group may name is compiled
        members = _members(comp, res)
        if members:
            comp.backends[res.ref] = replace(comp.backends[res.ref], members=members)


def _members(comp: Compilation, res: Resource) -> tuple[tuple[BackendMember, ...], ...]:
    """AIBackend `groups` in priority order (lower `priority` first; as written when equal or unset), each
    entry the named Backend and its weight (default 1). A name that resolves to nothing is a problem already
    (`_check_ai_backend_groups`) and adds no member."""
    groups = res.spec.get("groups") or []
    ranked = sorted(enumerate(groups), key=lambda item: (item[1].get("priority", 0), item[0]))
    out: list[tuple[BackendMember, ...]] = []
    for _, group in ranked:
        members = []
        for entry in group.get("backends", []):
            ref = entry.get("backendRef", {})
            backend = comp.backends.get(ObjectRef("Backend", ref.get("namespace") or res.namespace, ref.get("name", "")))
            if backend is not None:
                members.append(BackendMember(backend, int(entry.get("weight", 1))))
        if members:
            out.append(tuple(members))
    return tuple(out)


def _compile_backend(comp: Compilation, res: Resource) -> Backend:
    spec = res.spec
    hosts = tuple(
        StaticHost(canonical_or_raw(h["host"]), int(h["port"])) for h in spec.get("static", {}).get("hosts", [])
    )
    parent = _compile_parent(comp, res, hosts) if "parent" in spec else None
    ai = spec.get("ai") if res.kind == "Backend" else spec
    groups = compile_ai(comp, res, ai or {}, "spec.ai" if res.kind == "Backend" else "spec")
    if res.kind == "AIBackend":
        _check_ai_backend_groups(comp, res)
    return Backend(
        ref=res.ref,
        type=spec.get("type", "AI" if res.kind == "AIBackend" else "Static"),
        static_hosts=hosts,
        labels=MappingProxyType(dict(res.labels)),
        parent=parent,
        ai_groups=groups,
        outlier=compile_outlier(spec.get("outlierDetection")),
        spec=freeze(spec),
    )


def _compile_parent(comp: Compilation, res: Resource, hosts: tuple[StaticHost, ...]) -> ParentProxy:
    ref = res.spec["parent"].get("authSecretRef")
    path = "spec.parent.authSecretRef"
    secret = resolve_secret(comp, res, path, ref)
    username = password = None
    if secret is not None and ref is not None and require_keys(comp, res, path, ref, secret, ("username", "password")):
        username, password = secret.text("username"), secret.text("password")
    auth_ref = ObjectRef("Secret", ref.get("namespace") or res.namespace, ref["name"]) if ref else None
    return ParentProxy(hosts[0] if hosts else None, username, password, auth_ref)


def _check_ai_backend_groups(comp: Compilation, res: Resource) -> None:
    for i, group in enumerate(res.spec.get("groups", [])):
        for j, entry in enumerate(group.get("backends", [])):
            ref = entry.get("backendRef", {})
            ns = ref.get("namespace") or res.namespace
            if ObjectRef("Backend", ns, ref.get("name", "")) not in comp.backends and not comp.find("Backend", ns, ref.get("name", "")):
                path = f"spec.groups[{i}].backends[{j}].backendRef.name"
                comp.problem(res, path, f'Backend "{ns}/{ref.get("name")}" not found')
                comp.status.set(res.ref, "ResolvedRefs", False, "BackendNotFound", path)
