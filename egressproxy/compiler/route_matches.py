"""A rule's matches: HTTPRoute path/method/header/query matches, GRPCRoute service/method matches (as the HTTP/2
request they select) and EgressL4Route destination CIDRs, hostnames and ports."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.hostname_forms import route_hostnames
from egressproxy.config.resource import Resource
from egressproxy.snapshot import HttpRouteMatch, L4Match, PathMatch, ValueMatch


def http_match(spec: Mapping[str, Any]) -> HttpRouteMatch:
    return HttpRouteMatch(
        path=_path_match(spec.get("path") or {}),
        method=spec.get("method"),
        headers=tuple(_value_match(h, lower=True) for h in spec.get("headers", [])),
        query_params=tuple(_value_match(q, lower=False) for q in spec.get("queryParams", [])),
    )


def l4_match(comp: Compilation, res: Resource, path: str, spec: Mapping[str, Any]) -> L4Match:
    ports = []
    for p in spec.get("ports", []):
        if "port" in p:
            ports.append((int(p["port"]), int(p["port"])))
        elif "startPort" in p and "endPort" in p:
            ports.append((int(p["startPort"]), int(p["endPort"])))
    return L4Match(
        cidrs=tuple(ipaddress.ip_network(c, strict=False) for c in spec.get("destinationCIDRs", [])),
        hostnames=route_hostnames(comp, res, f"{path}.destinationHostnames", spec.get("destinationHostnames", [])),
        ports=tuple(ports),
        protocol=spec.get("protocol"),
    )


def grpc_match(spec: Mapping[str, Any]) -> HttpRouteMatch:
    """A GRPCRoute match as the HTTP/2 request it selects: POST /<service>/<method>."""
    method = spec.get("method") or {}
    service, name = method.get("service"), method.get("method")
    if method.get("type", "Exact") == "RegularExpression":
        pattern = f"/{service or '[^/]+'}/{name or '[^/]+'}"
        path = PathMatch("RegularExpression", pattern, re.compile(pattern))
    elif service and name:
        path = PathMatch("Exact", f"/{service}/{name}")
    elif service:
        path = PathMatch("PathPrefix", f"/{service}")
    elif name:
        pattern = f"/[^/]+/{re.escape(name)}"
        path = PathMatch("RegularExpression", pattern, re.compile(pattern))
    else:
        path = PathMatch("PathPrefix", "")
    headers = tuple(_value_match(h, lower=True) for h in spec.get("headers", []))
    return HttpRouteMatch(path=path, headers=headers)


def _path_match(spec: Mapping[str, Any]) -> PathMatch:
    ptype = spec.get("type", "PathPrefix")
    value = spec.get("value", "/")
    if ptype == "PathPrefix":
        return PathMatch("PathPrefix", value.rstrip("/"))
    if ptype == "RegularExpression":
        return PathMatch(ptype, value, re.compile(value))
    return PathMatch("Exact", value)


def _value_match(spec: Mapping[str, Any], lower: bool) -> ValueMatch:
    name = spec["name"].lower() if lower else spec["name"]
    mtype = spec.get("type", "Exact")
    regex = re.compile(spec["value"]) if mtype == "RegularExpression" else None
    return ValueMatch(name, mtype, spec["value"], regex)
