"""The compiled-policies pass: parse every policy's material once, then index it for the data plane's lookups.

`parse_policy_material` runs in the pipeline before statuses are finished, so what does not parse is a problem
(and the snapshot is not served). `link_compiled_policies` runs when the snapshot is assembled, over its
`PolicyIndex`, and answers each lookup the way the consumers used to compute it per request: DNSPolicy Backend >
Gateway (`PolicyIndex.effective`), the BackendTLSPolicy attached to a Backend (the first by namespace/name), the
basicAuth on a listener (a listener-scoped policy first, then the gateway's), parent credentials by address.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from egressproxy.compiled_policies import DEFAULT_REPLAY_BUFFER, BackendTls, BasicAuth, CompiledPolicies, ParentCredentials
from egressproxy.compiler.ai_policy_forms import compile_ai_policies
from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.credential_material import compile_credentials
from egressproxy.compiler.ext_auth_forms import compile_ext_auth
from egressproxy.compiler.htpasswd_tables import compile_basic_auth
from egressproxy.compiler.observability_forms import compile_access_logs, compile_tracing, redacted_names
from egressproxy.compiler.policy_programs import PolicyPrograms, compile_policy_programs
from egressproxy.compiler.rate_limit_forms import compile_rate_limits
from egressproxy.compiler.tls_material import compile_backend_tls_policies, compile_trust_bundle, gateway_tls
from egressproxy.config.problems import ObjectRef
from egressproxy.config.resource import Resource
from egressproxy.credentials import CredentialTable
from egressproxy.ext_auth import ExtAuthTable
from egressproxy.prompt_guard import AiPolicy, AiPolicyTable
from egressproxy.rate_limit_precedence import AttachmentPoint, RateLimitTable
from egressproxy.rate_limits import RateLimitFields
from egressproxy.observability_settings import AccessLogs, AccessLogSink, TracingSettings
from egressproxy.resolver import DnsSettings
from egressproxy.snapshot import Backend, Gateway, PolicyIndex
from egressproxy.ssrf import SsrfGuard
from egressproxy.traffic_retries import TrafficSettings, compile_traffic_settings

__all__ = ["PolicyMaterial", "parse_policy_material", "link_compiled_policies"]


@dataclass(frozen=True, slots=True)
class PolicyMaterial:
    """What parsing the Secrets gave, per policy: the input of `link_compiled_policies`."""

    backend_tls: Mapping[ObjectRef, BackendTls] = field(default_factory=dict)  # BackendTLSPolicy ref ->
    basic_auth: Mapping[ObjectRef, BasicAuth] = field(default_factory=dict)  # HTTPListenerPolicy ref ->
    gateway_tls: BackendTls = field(default_factory=lambda: gateway_tls(()))  # of the served gateway
    rate_limits: Mapping[ObjectRef, RateLimitFields] = field(default_factory=dict)  # RateLimitPolicy ref ->
    credentials: CredentialTable = field(default_factory=CredentialTable)  # providers' and policies' credentials
    access_logs: Mapping[ObjectRef, tuple[AccessLogSink, ...]] = field(default_factory=dict)  # HTTPListenerPolicy ->
    tracing: Mapping[ObjectRef, TracingSettings] = field(default_factory=dict)  # HTTPListenerPolicy ref ->
    ai: Mapping[ObjectRef, AiPolicy] = field(default_factory=dict)  # TrafficPolicy ref -> its compiled `ai`
    traffic: Mapping[ObjectRef, TrafficSettings] = field(default_factory=dict)  # TrafficPolicy ref -> retry/timeout
    programs: PolicyPrograms = field(default_factory=PolicyPrograms)  # regions, CEL programs, body limits
    ext_auth: ExtAuthTable = field(default_factory=ExtAuthTable)  # TrafficPolicy extAuth with its service


def parse_policy_material(comp: Compilation) -> PolicyMaterial:
    """Parse every BackendTLSPolicy, basicAuth, trust bundle, RateLimitPolicy and credential of the config;
    problems for what does not parse."""
    trust = gateway_tls(())
    for gw in comp.of_kind("EgressGateway"):
        certificates = compile_trust_bundle(comp, gw)
        if gw is comp.served:
            trust = gateway_tls(certificates, _trust_bundle_secret(gw))
    credentials = compile_credentials(comp)
    return PolicyMaterial(
        compile_backend_tls_policies(comp),
        compile_basic_auth(comp),
        trust,
        compile_rate_limits(comp),
        credentials,
        compile_access_logs(comp, credentials),
        compile_tracing(comp),
        compile_ai_policies(comp),
        _traffic(comp),
        compile_policy_programs(comp),
        compile_ext_auth(comp),
    )


def _traffic(comp: Compilation) -> dict[ObjectRef, TrafficSettings]:
    out: dict[ObjectRef, TrafficSettings] = {}
    for res in comp.of_kind("TrafficPolicy"):
        settings = compile_traffic_settings(f"TrafficPolicy/{res.namespace}/{res.name}", res.spec)
        if settings is not None:
            out[res.ref] = settings
    return out


def link_compiled_policies(
    material: PolicyMaterial, gateway: Gateway, backends: Mapping[ObjectRef, Backend], policies: PolicyIndex
) -> CompiledPolicies:
    listeners = {
        listener.name: _basic_auth(material, policies, listener.name) for listener in gateway.listeners
    }
    return CompiledPolicies(
        ssrf_guard=SsrfGuard(gateway.ssrf_allow, gateway.ssrf_deny),
        gateway_dns=_dns(policies, None),
        backend_dns=MappingProxyType({ref: _dns(policies, ref) for ref in sorted(backends)}),
        gateway_tls=material.gateway_tls,
        backend_tls=MappingProxyType(_backend_tls(material, policies)),
        backend_names=MappingProxyType(_backend_names(backends)),
        gateway_basic_auth=_basic_auth(material, policies, None),
        listener_basic_auth=MappingProxyType(listeners),
        parents=MappingProxyType(_parents(gateway, backends)),
        rate_limits=_rate_limits(material, gateway, policies),
        credentials=material.credentials,
        gateway_access_logs=_access_logs(material, policies, None),
        listener_access_logs=MappingProxyType(
            {listener.name: _access_logs(material, policies, listener.name) for listener in gateway.listeners}
        ),
        gateway_tracing=_tracing(material, policies, None),
        listener_tracing=MappingProxyType(
            {listener.name: _tracing(material, policies, listener.name) for listener in gateway.listeners}
        ),
        redacted_headers=redacted_names(material.credentials)[0],
        ai=AiPolicyTable(MappingProxyType(dict(material.ai))),
        replay_buffer=MappingProxyType({listener.name: _replay_buffer(policies, listener.name) for listener in gateway.listeners}),
        gateway_replay_buffer=_replay_buffer(policies, None),
        traffic=MappingProxyType(dict(material.traffic)),
        regions=MappingProxyType(dict(material.programs.regions)),
        request_policies=material.programs.requests,
        ext_auth=material.ext_auth,
    )


def _replay_buffer(policies: PolicyIndex, listener: str | None) -> int:
    limit = policies.effective("HTTPListenerPolicy", listener=listener).get("buffer", {}).get("maxRequestBytes")
    return int(limit) if isinstance(limit, int) else DEFAULT_REPLAY_BUFFER


def _rate_limits(material: PolicyMaterial, gateway: Gateway, policies: PolicyIndex) -> RateLimitTable:
    table = RateLimitTable(MappingProxyType(dict(material.rate_limits)))
    table.warm(policies, _http_attachment_points(gateway))
    return table


def _http_attachment_points(gateway: Gateway) -> Iterator[AttachmentPoint]:
    """Every (route, backend, listener, rule) an HTTP request decision can look a rate limit up by: each route
    rule on each listener it serves, with each Backend of the rule as the first candidate (or none), and
    defaultPolicy allow-all's route-less requests. (decisions.rate_limit_for computes the same key.)"""
    for listener in gateway.listeners:
        if not listener.carries_http:
            continue
        yield (None, None, listener.name, None)
        for route in listener.http_routes.routes:
            for rule in route.rules:
                backends = {wb.backend.ref for wb in rule.backends if wb.backend is not None}
                for backend in (None, *sorted(backends)):
                    yield (route.ref, backend, listener.name, rule.index)


def _access_logs(material: PolicyMaterial, policies: PolicyIndex, listener: str | None) -> AccessLogs | None:
    """The most specific HTTPListenerPolicy with access logs on `listener` (its sinks, not a merge)."""
    for attached in policies.policies("HTTPListenerPolicy", listener=listener):
        sinks = material.access_logs.get(attached.ref)
        if sinks:
            return AccessLogs(str(attached.ref), sinks)
    return None


def _tracing(material: PolicyMaterial, policies: PolicyIndex, listener: str | None) -> TracingSettings | None:
    for attached in policies.policies("HTTPListenerPolicy", listener=listener):
        settings = material.tracing.get(attached.ref)
        if settings is not None:
            return settings
    return None


def _dns(policies: PolicyIndex, backend: ObjectRef | None) -> DnsSettings:
    spec = policies.effective("DNSPolicy", backend=backend)
    attached = policies.policies("DNSPolicy", backend=backend)
    policy = f"DNSPolicy/{attached[0].ref.namespace}/{attached[0].ref.name}" if attached else ""
    return DnsSettings.from_spec(spec, policy)


def _backend_tls(material: PolicyMaterial, policies: PolicyIndex) -> dict[ObjectRef, BackendTls]:
    out: dict[ObjectRef, BackendTls] = {}
    for (kind, scope, key), attached in sorted(policies.attached.items(), key=lambda kv: repr(kv[0])):
        if kind != "BackendTLSPolicy" or scope != "backend" or not attached:
            continue
        compiled = material.backend_tls.get(attached[0].ref)
        if compiled is not None:
            out[key] = compiled
    return out


def _backend_names(backends: Mapping[ObjectRef, Backend]) -> dict[str, ObjectRef]:
    """`ns/name` names a `Backend` before any other kind of that name; `Kind/ns/name` names exactly."""
    out: dict[str, ObjectRef] = {}
    for ref in sorted(backends, key=lambda r: (r.kind != "Backend", r)):
        out.setdefault(f"{ref.namespace}/{ref.name}", ref)
        out[str(ref)] = ref
    return out


def _basic_auth(material: PolicyMaterial, policies: PolicyIndex, listener: str | None) -> BasicAuth | None:
    for attached in policies.policies("HTTPListenerPolicy", listener=listener):
        if not attached.spec.get("basicAuth"):
            continue
        auth = material.basic_auth.get(attached.ref)
        if auth is not None:
            return auth
    return None


def _parents(gateway: Gateway, backends: Mapping[ObjectRef, Backend]) -> dict[tuple[str, int], ParentCredentials]:
    out: dict[tuple[str, int], ParentCredentials] = {}
    candidates = list(backends.values()) + ([gateway.parent] if gateway.parent is not None else [])
    for backend in candidates:
        parent = backend.parent
        if parent is None or parent.address is None:
            continue
        header = None
        if parent.username is not None:
            header = "Basic " + base64.b64encode(f"{parent.username}:{parent.password or ''}".encode()).decode()
        out[(parent.address.host, parent.address.port)] = ParentCredentials(backend.ref, header)
    return out


def _trust_bundle_secret(gw: Resource) -> ObjectRef | None:
    ref = (gw.spec.get("upstreamTLS") or {}).get("additionalTrustBundleSecretRef")
    if not ref:
        return None
    return ObjectRef("Secret", ref.get("namespace") or gw.namespace, ref["name"])
