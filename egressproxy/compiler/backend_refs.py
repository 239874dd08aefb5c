"""A route's backendRef resolved to a weighted Backend: a Backend or AIBackend (group/kind may be omitted), or
a Service dialled by its cluster DNS name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.kinds import BACKEND_KINDS, KGATEWAY_GROUP
from egressproxy.config.problems import ObjectRef
from egressproxy.config.resource import Resource
from egressproxy.snapshot import WeightedBackend


def resolve_backend_ref(comp: Compilation, res: Resource, path: str, ref: Mapping[str, Any]) -> WeightedBackend | None:
    """A backendRef to a Backend (group/kind may be omitted), an AIBackend, or a Service by DNS name."""
    kind = ref.get("kind") or "Backend"
    group = ref.get("group")
    ns = ref.get("namespace") or res.namespace
    name = ref["name"]
    weight = int(ref.get("weight", 1))
    port = ref.get("port")
    if kind == "Service" and group in (None, "", "core"):
        if port is None:
            comp.problem(res, f"{path}.port", "a Service backendRef needs a port")
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
