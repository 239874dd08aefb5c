"""The served EgressGateway as the data plane sees it: listeners, timeouts, OTLP export, upstream TLS trust,
host aliases, the SSRF guard and a parent proxy. A gateway that is not served still has its references checked."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from egressproxy.client_limits import DEFAULT_LIMITS, ClientLimits
from egressproxy.compiler.ca_material import ca_material
from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.listeners import build_listener, listeners_by_port
from egressproxy.compiler.secret_refs import resolve_secret
from egressproxy.config.problems import ObjectRef
from egressproxy.config.resource import Resource
from egressproxy.hostnames import InvalidHostname, canonical_host
from egressproxy.snapshot import Backend, Gateway, ParentProxy, SecretData


def compile_gateway(comp: Compilation, gw: Resource) -> Gateway:
    spec = gw.spec
    listeners = tuple(build_listener(comp, shell) for shell in comp.shells)
    otlp = spec.get("otlp") or {}
    capture = _capture_body(spec)
    headers = otlp.get("headers") or {}
    comp.secret_values.update(v for v in headers.values() if v)
    upstream = spec.get("upstreamTLS") or {}
    trust_ref = upstream.get("additionalTrustBundleSecretRef")
    ssrf = spec.get("ssrfGuard") or {}
    comp.status.set(gw.ref, "Accepted", True, "Accepted")
    gateway = Gateway(
        ref=gw.ref,
        default_policy=spec.get("defaultPolicy", "deny-all"),
        listeners=listeners,
        request_timeout=float(spec.get("requestTimeout", 300.0)),
        connect_timeout=float(spec.get("connectTimeout", 10.0)),
        lookup_family=(spec.get("dns") or {}).get("lookupFamily", "V4Preferred"),
        capture_max_bytes=int(capture.get("maxBytes", 65536)),
        capture_content_types=tuple(capture.get("includeContentTypes", ())),
        otlp_endpoint=otlp.get("endpoint") or None,
        otlp_headers=SecretData({k: v.encode("utf-8") for k, v in headers.items()}),
        host_aliases=_host_aliases(comp, gw, upstream.get("hostAliases", [])),
        trust_bundle_pem=_trust_bundle(comp, gw, trust_ref),
        trust_bundle_secret=(
            ObjectRef("Secret", trust_ref.get("namespace") or gw.namespace, trust_ref["name"]) if trust_ref else None
        ),
        ssrf_allow=tuple(ipaddress.ip_network(c, strict=False) for c in ssrf.get("allowCIDRs", [])),
        ssrf_deny=tuple(ipaddress.ip_network(c, strict=False) for c in ssrf.get("denyCIDRs", [])),
        parent=_gateway_parent(comp, gw),
        client_limits=_client_limits(spec.get("clientLimits")),
        listeners_by_port=listeners_by_port(listeners),
    )
    if not comp.status.has(gw.ref, "ResolvedRefs"):
        comp.status.set(gw.ref, "ResolvedRefs", True, "ResolvedRefs")
    return gateway


def _client_limits(spec: Mapping[str, Any] | None) -> ClientLimits:
    """`spec.clientLimits` (the schema filled in each default) as the typed form the data plane reads."""
    if not spec:
        return DEFAULT_LIMITS
    return ClientLimits(
        max_request_head_bytes=int(spec.get("maxRequestHeadBytes", DEFAULT_LIMITS.max_request_head_bytes)),
        max_request_headers=int(spec.get("maxRequestHeaders", DEFAULT_LIMITS.max_request_headers)),
        request_head_timeout=float(spec.get("requestHeadTimeout", DEFAULT_LIMITS.request_head_timeout)),
        idle_timeout=float(spec.get("idleTimeout", DEFAULT_LIMITS.idle_timeout)),
        max_connections_per_client=int(spec.get("maxConnectionsPerClient", DEFAULT_LIMITS.max_connections_per_client)),
    )


def _capture_body(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The body capture settings: `otlp.captureBody` (defaults filled by the schema), overridden field by field
    by clrk's later `extProc.captureBody`; `extProc.enabled: false` turns body copies off (records stay)."""
    capture = dict((spec.get("otlp") or {}).get("captureBody") or {})
    ext = spec.get("extProc") or {}
    capture.update(ext.get("captureBody") or {})
    if ext.get("enabled") is False:
        capture["maxBytes"] = 0
    return capture


def check_gateway_refs(comp: Compilation, gw: Resource) -> None:
    """A gateway that is not served still has its references checked: the config must be valid whole."""
    for i, spec in enumerate(gw.spec.get("listeners", [])):
        tls = spec.get("tls") or {}
        if tls.get("mode") == "Terminate" and tls.get("caCertRef"):
            ca_material(comp, gw, f"spec.listeners[{i}].tls.caCertRef", tls["caCertRef"])
    _trust_bundle(comp, gw, (gw.spec.get("upstreamTLS") or {}).get("additionalTrustBundleSecretRef"))
    _gateway_parent(comp, gw)


def _host_aliases(comp: Compilation, gw: Resource, aliases: Sequence[Mapping[str, Any]]) -> Mapping[str, tuple[str, ...]]:
    table: dict[str, list[str]] = {}
    for i, alias in enumerate(aliases):
        ip = str(ipaddress.ip_address(alias["ip"]))
        for j, host in enumerate(alias.get("hostnames", [])):
            try:
                name = canonical_host(host)
            except InvalidHostname as e:
                comp.problem(gw, f"spec.upstreamTLS.hostAliases[{i}].hostnames[{j}]", str(e))
                continue
            ips = table.setdefault(name, [])
            if ip not in ips:
                ips.append(ip)
    return MappingProxyType({k: tuple(v) for k, v in table.items()})


def _trust_bundle(comp: Compilation, gw: Resource, ref: Mapping[str, Any] | None) -> bytes | None:
    secret = resolve_secret(comp, gw, "spec.upstreamTLS.additionalTrustBundleSecretRef", ref)
    if secret is None:
        return None
    pems = [secret[k].strip() for k in sorted(secret) if secret[k].strip()]
    return b"\n".join(pems) + b"\n" if pems else None


def _gateway_parent(comp: Compilation, gw: Resource) -> Backend | None:
    ref = gw.spec.get("parentRef")
    if not ref:
        return None
    kind = ref.get("kind") or "Backend"
    ns = ref.get("namespace") or gw.namespace
    backend = comp.backends.get(ObjectRef(kind, ns, ref["name"]))
    if backend is None:
        message = f'{kind} "{ns}/{ref["name"]}" not found'
        comp.problem(gw, "spec.parentRef.name", message)
        comp.status.set(gw.ref, "ResolvedRefs", False, "BackendNotFound", f"spec.parentRef.name: {message}")
        return None
    if not backend.static_hosts:
        comp.problem(gw, "spec.parentRef.name", f'Backend "{ns}/{ref["name"]}" has no static.hosts[0] to dial as the parent proxy')
        return None
    if backend.parent is None:
        backend = replace(backend, parent=ParentProxy(backend.static_hosts[0]))
    return backend
