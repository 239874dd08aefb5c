"""A rule's filters: header modifiers, URL rewrites, redirects, mirrors, and ExtensionRefs to a DirectResponse
or to a policy (which then attaches to that rule)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from egressproxy.compiler.backend_refs import resolve_backend_ref
from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.kinds import POLICY_KINDS
from egressproxy.compiler.policy_targets import attach
from egressproxy.config.problems import ObjectRef
from egressproxy.config.resource import Resource
from egressproxy.hostnames import canonical_host
from egressproxy.snapshot import HeaderModifier, PathRewrite, RequestRedirect, RuleFilters, URLRewrite


def compile_filters(
    comp: Compilation, res: Resource, rule_index: int, path: str, specs: Sequence[Mapping[str, Any]]
) -> RuleFilters:
    values: dict[str, Any] = {}
    policies: list[ObjectRef] = []
    for j, spec in enumerate(specs):
        fpath = f"{path}.filters[{j}]"
        ftype = spec.get("type")
        if ftype == "RequestHeaderModifier":
            values["request_headers"] = _header_modifier(spec.get("requestHeaderModifier") or {})
        elif ftype == "ResponseHeaderModifier":
            values["response_headers"] = _header_modifier(spec.get("responseHeaderModifier") or {})
        elif ftype == "URLRewrite":
            values["url_rewrite"] = _url_rewrite(spec.get("urlRewrite") or {})
        elif ftype == "RequestRedirect":
            values["redirect"] = _redirect(spec.get("requestRedirect") or {})
        elif ftype == "RequestMirror":
            mirror = (spec.get("requestMirror") or {}).get("backendRef")
            if mirror:
                resolve_backend_ref(comp, res, f"{fpath}.requestMirror.backendRef", mirror)
        elif ftype == "ExtensionRef":
            _extension_ref(comp, res, rule_index, f"{fpath}.extensionRef", spec.get("extensionRef") or {}, values, policies)
    return RuleFilters(policies=tuple(policies), **values)


def _extension_ref(
    comp: Compilation,
    res: Resource,
    rule_index: int,
    path: str,
    ref: Mapping[str, Any],
    values: dict[str, Any],
    policies: list[ObjectRef],
) -> None:
    kind, name = ref.get("kind", ""), ref.get("name", "")
    if kind != "DirectResponse" and kind not in POLICY_KINDS:
        comp.problem(res, f"{path}.kind", f'unsupported extensionRef kind "{kind}" (DirectResponse or a policy kind)')
        comp.status.set(res.ref, "ResolvedRefs", False, "InvalidKind", f"{path}.kind: {kind}")
        return
    target = comp.find(kind, res.namespace, name)
    if target is None:
        message = f'{kind} "{res.namespace}/{name}" not found'
        comp.problem(res, f"{path}.name", message)
        comp.status.set(res.ref, "ResolvedRefs", False, "RefNotFound", f"{path}.name: {message}")
        return
    if kind == "DirectResponse":
        values["direct_response"] = comp.direct_responses[target.ref]
        return
    policies.append(target.ref)
    attach(comp, target, ("rule", (res.ref, rule_index)))


def _header_modifier(spec: Mapping[str, Any]) -> HeaderModifier:
    return HeaderModifier(
        set=tuple((h["name"], h["value"]) for h in spec.get("set", [])),
        add=tuple((h["name"], h["value"]) for h in spec.get("add", [])),
        remove=tuple(spec.get("remove", [])),
    )


def _path_rewrite(spec: Mapping[str, Any] | None) -> PathRewrite | None:
    if not spec:
        return None
    ptype = spec["type"]
    value = spec.get("replaceFullPath") if ptype == "ReplaceFullPath" else spec.get("replacePrefixMatch")
    return PathRewrite(ptype, value or "")


def _url_rewrite(spec: Mapping[str, Any]) -> URLRewrite:
    hostname = spec.get("hostname")
    return URLRewrite(canonical_host(hostname) if hostname else None, _path_rewrite(spec.get("path")))


def _redirect(spec: Mapping[str, Any]) -> RequestRedirect:
    hostname = spec.get("hostname")
    return RequestRedirect(
        scheme=spec.get("scheme"),
        hostname=canonical_host(hostname) if hostname else None,
        port=spec.get("port"),
        path=_path_rewrite(spec.get("path")),
        status_code=int(spec.get("statusCode", 302)),
    )
