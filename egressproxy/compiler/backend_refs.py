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

__all__ = ["resolve_backend_ref"]


def resolve_backend_ref(comp: Compilation, res: Resource, path: str, ref: Mapping[str, Any]) -> WeightedBackend | None:
    """A backendRef to a Backend, an AIBackend, or a Service by DNS name (kind-less: a Backend if one exists)."""
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
    if kind not in BACKEND_KINDS or group not in (None, "", KGATEWAY_GROUP):
        comp.problem(res, f"{path}.kind", f'unsupported backendRef kind "{group + "/" if group else ""}{kind}" (a {KGATEWAY_GROUP} Backend, or a Service)')
        comp.status.set(res.ref, "ResolvedRefs", False, "InvalidKind", f"{path}.kind: {kind}")
        return None
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
