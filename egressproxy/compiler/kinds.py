"""The kinds the compiler resolves references to, their API groups, and where each policy kind may attach."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

APOXY_GROUP = "clrk.apoxy.dev"
KGATEWAY_GROUP = "gateway.kgateway.dev"
GATEWAY_API_GROUP = "gateway.networking.k8s.io"

HTTP_ROUTE_KINDS = ("HTTPRoute", "GRPCRoute")
ROUTE_KINDS = ("HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute", "UDPRoute", "EgressL4Route")
BACKEND_KINDS = ("Backend", "AIBackend")
GATEWAY_KINDS = ("EgressGateway", "Gateway")  # `Gateway` in a policy targetRef means the EgressGateway

# Which scopes each policy kind may attach to ("gateway" includes its listeners through sectionName).
ALL_SCOPES = frozenset({"gateway", "backend", "route"})
POLICY_KINDS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "EgressDenyPolicy": frozenset({"route"}),
        "RateLimitPolicy": ALL_SCOPES,
        "CredentialInjectionPolicy": ALL_SCOPES,
        "LoggingPolicy": ALL_SCOPES,
        "TrafficPolicy": ALL_SCOPES,
        "HTTPListenerPolicy": frozenset({"gateway"}),
        "BackendTLSPolicy": frozenset({"backend"}),
        "RegionAllowListPolicy": ALL_SCOPES,
        "DNSPolicy": frozenset({"gateway", "backend"}),
    }
)
