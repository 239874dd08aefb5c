"""GatewayExtension `type: ExtAuth` and TrafficPolicy `extAuth`, compiled once per snapshot (docs/ext-auth.md).

The service's address comes from `extAuth.grpcService.backendRef`: a Kubernetes Service (kind-less, Gateway
API's default) is `<name>.<namespace>.svc.cluster.local:<port>`, a Static Backend its first host (its port
unless the ref names one). An extension this build cannot call (an `httpService`, 2.2+) still compiles: a
request under it fails closed, as an unreachable service would (the extension is Programmed=False/Unsupported).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.kinds import KGATEWAY_GROUP
from egressproxy.config.problems import ObjectRef
from egressproxy.config.resource import Resource
from egressproxy.durations import parse_duration
from egressproxy.ext_auth import DEFAULT_STATUS_ON_ERROR, DEFAULT_TIMEOUT, ExtAuthPolicy, ExtAuthService, ExtAuthTable

__all__ = ["compile_ext_auth"]


def compile_ext_auth(comp: Compilation) -> ExtAuthTable:
    services = {res.ref: _service(comp, res) for res in comp.of_kind("GatewayExtension") if res.spec.get("type") == "ExtAuth"}
    policies: dict[ObjectRef, ExtAuthPolicy] = {}
    for res in comp.of_kind("TrafficPolicy"):
        block = res.spec.get("extAuth")
        if block:
            policy = _policy(comp, res, block, services)
            if policy is not None:
                policies[res.ref] = policy
    return ExtAuthTable(MappingProxyType(policies))


def _policy(
    comp: Compilation, res: Resource, block: Mapping[str, Any], services: Mapping[ObjectRef, ExtAuthService | None]
) -> ExtAuthPolicy | None:
    report = res.spec.get("enforcementMode") == "Report"
    if _disabled(block):
        return ExtAuthPolicy(res.ref, None, report)
    ref = block.get("extensionRef")
    if not ref:
        return None
    target = ObjectRef("GatewayExtension", ref.get("namespace") or res.namespace, ref["name"])
    found = comp.find("GatewayExtension", target.namespace, target.name)
    if found is None:
        return None  # a problem already (egressproxy/compiler/policy_refs.py)
    if target not in services:
        message = f'GatewayExtension "{target.namespace}/{target.name}" is type {found.spec.get("type")}, not ExtAuth'
        comp.problem(res, "spec.extAuth.extensionRef.name", message)
        comp.status.set(res.ref, "ResolvedRefs", False, "InvalidKind", f"spec.extAuth.extensionRef.name: {message}")
        return None
    service = services[target]
    if service is None:
        return None
    extensions = MappingProxyType({str(k): str(v) for k, v in (block.get("contextExtensions") or {}).items()})
    return ExtAuthPolicy(res.ref, service, report, extensions)


def _disabled(block: Mapping[str, Any]) -> bool:
    disable = block.get("disable")
    return disable is True or isinstance(disable, Mapping) or block.get("enablement") == "DisableAll"


def _service(comp: Compilation, res: Resource) -> ExtAuthService | None:
    ext = res.spec.get("extAuth") or {}
    grpc_service = ext.get("grpcService")
    timeout = _seconds(ext.get("timeout") or (grpc_service or {}).get("requestTimeout"))
    forward = ext.get("headersToForward")
    common: dict[str, Any] = {
        "timeout": timeout if timeout is not None and timeout > 0 else DEFAULT_TIMEOUT,
        "fail_open": bool(ext.get("failOpen", False)),
        "status_on_error": int(ext.get("statusOnError", DEFAULT_STATUS_ON_ERROR)),
        "headers_to_forward": frozenset(h.lower() for h in forward) if forward else None,
    }
    if not grpc_service:  # httpService: accepted, not called (fail closed at request time)
        return ExtAuthService(res.ref, "", 0, "", **common)
    address = _address(comp, res, grpc_service["backendRef"])
    if address is None:
        return None
    host, port = address
    authority = grpc_service.get("authority") or f"{host}:{port}"
    return ExtAuthService(res.ref, host, port, authority, **common)


def _seconds(value: Any) -> float | None:
    """A validated Duration: seconds already, or the Go duration string as written."""
    if value is None:
        return None
    return float(value) if isinstance(value, int | float) else parse_duration(str(value))


def _address(comp: Compilation, res: Resource, ref: Mapping[str, Any]) -> tuple[str, int] | None:
    path = "spec.extAuth.grpcService.backendRef"
    ns, name = ref.get("namespace") or res.namespace, ref["name"]
    group, kind = ref.get("group") or "", ref.get("kind") or "Service"
    port = ref.get("port")
    if kind == "Service" and group in ("", "core"):
        if port is None:
            comp.problem(res, f"{path}.port", f'a Service backendRef needs a port (Service "{ns}/{name}")')
            return None
        return f"{name}.{ns}.svc.cluster.local", int(port)
    backend = comp.backends.get(ObjectRef("Backend", ns, name)) if kind == "Backend" and group in ("", KGATEWAY_GROUP) else None
    if backend is None or not backend.static_hosts:
        what = f'{kind} "{ns}/{name}"'
        message = f"{what} is not a Service or a Static Backend of this config" if backend is None else f"{what} has no static host"
        comp.problem(res, f"{path}.name", message)
        comp.status.set(res.ref, "ResolvedRefs", False, "BackendNotFound", f"{path}.name: {message}")
        return None
    first = backend.static_hosts[0]
    return first.host, int(port) if port is not None else first.port
