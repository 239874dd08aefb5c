"""Secrets by reference: `v1 Secret` objects and mounted ones, looked up for `{name, namespace?, kind?}` refs.

A mounted Secret answers a reference from any namespace and wins over a `v1 Secret` object of the same name,
since the mounted copy is the one Kubernetes rotates. Every value is remembered so the snapshot can redact it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from egressproxy.compiler.compilation import Compilation
from egressproxy.config.problems import ObjectRef
from egressproxy.config.resource import Resource
from egressproxy.snapshot import MOUNTED_NAMESPACE, SecretData


def collect_secrets(comp: Compilation) -> None:
    for res in comp.of_kind("Secret"):
        _add_secret(comp, res.ref, SecretData(res.spec.get("data", {})))
    for name, data in sorted(comp.mounted.secrets.items()):
        _add_secret(comp, ObjectRef("Secret", MOUNTED_NAMESPACE, name), data)


def _add_secret(comp: Compilation, ref: ObjectRef, data: SecretData) -> None:
    comp.secrets[ref] = data
    for value in data.values():
        text = value.decode("utf-8", errors="ignore").strip()
        if text:
            comp.secret_values.add(text)


def resolve_secret(comp: Compilation, res: Resource, path: str, ref: Mapping[str, Any] | None) -> SecretData | None:
    """The Secret a `{name, namespace?, kind?}` reference at `path` names; a problem when it is missing."""
    if not ref or "name" not in ref:
        return None
    kind = ref.get("kind") or "Secret"
    if kind != "Secret":
        comp.problem(res, f"{path}.kind", f'unsupported reference kind "{kind}": put the value in a Secret')
        comp.status.set(res.ref, "ResolvedRefs", False, "InvalidKind", f"{path}.kind: {kind} is not a Secret")
        return None
    ns = ref.get("namespace") or res.namespace
    secret = _find_secret(comp, ns, ref["name"])
    if secret is None:
        message = f'Secret "{ns}/{ref["name"]}" not found'
        comp.problem(res, f"{path}.name", message)
        comp.status.set(res.ref, "ResolvedRefs", False, "SecretNotFound", f"{path}.name: {message}")
    return secret


def _find_secret(comp: Compilation, namespace: str, name: str) -> SecretData | None:
    mounted = comp.secrets.get(ObjectRef("Secret", MOUNTED_NAMESPACE, name))
    return mounted if mounted is not None else comp.secrets.get(ObjectRef("Secret", namespace, name))


def require_keys(
    comp: Compilation, res: Resource, path: str, ref: Mapping[str, Any], secret: SecretData, keys: Sequence[str]
) -> bool:
    missing = [k for k in keys if k not in secret]
    if missing:
        ns = ref.get("namespace") or res.namespace
        message = f'Secret "{ns}/{ref["name"]}" has no key {", ".join(repr(k) for k in missing)}'
        comp.problem(res, f"{path}.name", message)
        comp.status.set(res.ref, "ResolvedRefs", False, "InvalidSecret", f"{path}.name: {message}")
        return False
    return True
