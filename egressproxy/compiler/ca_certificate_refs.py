"""A BackendTLSPolicy's `validation.caCertificateRefs[i]`: a Secret (any key holds PEM certificates) or, as Gateway
API's core support says, a ConfigMap whose key `ca.crt` holds them (DESIGN.md 4.2). The references are local:
the policy's own namespace (a mounted Secret answers from any, as everywhere)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.secret_refs import resolve_secret
from egressproxy.config.kinds.core import CONFIG_MAP_CA_KEY
from egressproxy.config.resource import Resource

__all__ = ["is_config_map_ref", "check_ca_certificate_ref", "config_map_ca"]


def is_config_map_ref(ref: Mapping[str, Any]) -> bool:
    return ref.get("kind") == "ConfigMap" and ref.get("group") in (None, "", "core")


def check_ca_certificate_ref(comp: Compilation, res: Resource, path: str, ref: Mapping[str, Any]) -> None:
    """A problem when the Secret or ConfigMap is missing, the ConfigMap has no `ca.crt`, or the kind is neither."""
    if not is_config_map_ref(ref):
        kind = ref.get("kind") or "Secret"
        if kind != "Secret" or ref.get("group") not in (None, "", "core"):
            group = ref.get("group")
            named = f"{group}/{kind}" if group else kind
            message = f'unsupported caCertificateRefs kind "{named}": a ConfigMap (key {CONFIG_MAP_CA_KEY!r}) or a Secret'
            comp.problem(res, f"{path}.kind", message)
            comp.status.set(res.ref, "ResolvedRefs", False, "InvalidKind", f"{path}.kind: {message}")
            return
        resolve_secret(comp, res, path, ref)
        return
    name = f'{res.namespace}/{ref["name"]}'
    config_map = comp.find("ConfigMap", res.namespace, ref["name"])
    if config_map is None:
        message = f'ConfigMap "{name}" not found'
        comp.problem(res, f"{path}.name", message)
        comp.status.set(res.ref, "ResolvedRefs", False, "InvalidCACertificateRef", f"{path}.name: {message}")
    elif config_map_ca(comp, res, ref) is None:
        message = f'ConfigMap "{name}" has no key {CONFIG_MAP_CA_KEY!r}'
        comp.problem(res, f"{path}.name", message)
        comp.status.set(res.ref, "ResolvedRefs", False, "InvalidCACertificateRef", f"{path}.name: {message}")


def config_map_ca(comp: Compilation, res: Resource, ref: Mapping[str, Any]) -> bytes | None:
    """The PEM bytes under `ca.crt` of the ConfigMap `ref` names (from `data` or `binaryData`), or None."""
    config_map = comp.find("ConfigMap", res.namespace, ref["name"])
    if config_map is None:
        return None
    text = (config_map.spec.get("data") or {}).get(CONFIG_MAP_CA_KEY)
    if text is not None:
        return str(text).encode("utf-8")
    binary = (config_map.spec.get("binaryData") or {}).get(CONFIG_MAP_CA_KEY)
    return bytes(binary) if binary is not None else None
