"""A route's backendRef resolved to a weighted Backend: a Backend or AIBackend, or a Kubernetes Service dialled
by its cluster DNS name `<name>.<namespace>.svc.cluster.local:<port>` (trusted like a Static Backend).

A backendRef without group and kind is a Service, as Gateway API defaults it (DESIGN.md 4.2); the configs
written for this gateway before that name a Backend that way, so a kind-less ref names the Backend when the
config has one of that namespace/name, else the Service. Never "not found" for a kind-less ref."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.kinds import BACKEND_KINDS, KGATEWAY_GROUP
from egressproxy.config.problems import ObjectRef
from egressproxy.config.resource import Resource
from egressproxy.snapshot import WeightedBackend

__all__ = ["resolve_backend_ref", "unmodelled_backend_kind"]


def unmodelled_backend_kind(res: Resource, ref: Mapping[str, Any]) -> str | None:
    """`group/Kind ns/name` of a backendRef to a kind this gateway does not model (another route for kgateway's
    delegation, a multicluster ServiceImport, an InferencePool, a custom backend), else None.

    Gateway API accepts any kind and has the implementation report `ResolvedRefs=False` / `InvalidKind` and
    never send traffic there; so does this gateway (DESIGN.md 4.2: configs validate where upstream accepts
    them). A kind-less, Service or kgateway Backend reference is modelled (a missing one stays a problem)."""
    group, kind = ref.get("group"), ref.get("kind")
    if group not in (None, "", "core", KGATEWAY_GROUP):
        kind = kind or "Service"  # Gateway API's default kind, in a group that has none of ours
    elif kind is None or (kind == "Service" and group in (None, "", "core")):
        return None
    if kind in BACKEND_KINDS and group in (None, "", KGATEWAY_GROUP):
        return None
    return f"{group + '/' if group else ''}{kind} {ref.get('namespace') or res.namespace}/{ref.get('name')}"


def resolve_backend_ref(comp: Compilation, res: Resource, path: str, ref: Mapping[str, Any]) -> WeightedBackend | None:
    """A backendRef to a Backend, an AIBackend, or a Service by DNS name (kind-less: a Backend if one exists).
    None when it does not resolve (a problem, or for an unmodelled kind a `ResolvedRefs=False` status)."""
    unmodelled = unmodelled_backend_kind(res, ref)
    if unmodelled is not None:
        comp.status.set(res.ref, "ResolvedRefs", False, "InvalidKind", f"{path}.kind: {unmodelled} is not a kind this gateway sends traffic to")
        return None
    group = ref.get("group")
    ns = ref.get("namespace") or res.namespace
    name = ref["name"]
    kind = ref.get("kind") or _default_kind(comp, group, ns, name)
    weight = int(ref.get("weight", 1))
    port = ref.get("port")
    if kind == "Service" and group in (None, "", "core"):
        if port is None:
            comp.problem(res, f"{path}.port", f'a Service backendRef needs a port (Service "{ns}/{name}")')
            comp.status.set(res.ref, "ResolvedRefs", False, "UnsupportedValue", f"{path}.port")
            return None
        return WeightedBackend(ObjectRef("Service", ns, name), None, weight, port, f"{name}.{ns}.svc.cluster.local")
    backend = comp.backends.get(ObjectRef(kind, ns, name))
    if backend is None:
        message = f'{kind} "{ns}/{name}" not found'
        comp.problem(res, f"{path}.name", message)
        comp.status.set(res.ref, "ResolvedRefs", False, "BackendNotFound", f"{path}.name: {message}")
        return None
    return WeightedBackend(backend.ref, backend, weight, port)


def _default_kind(comp: Compilation, group: str | None, ns: str, name: str) -> str:
    """The kind of a kind-less backendRef: Gateway API's Service, unless it is a kgateway Backend by group or
    the config has a Backend of that name (the spelling of configs written before Services were resolved)."""
    if group == KGATEWAY_GROUP or (group in (None, "") and comp.find("Backend", ns, name) is not None):
        return "Backend"
    return "Service"
