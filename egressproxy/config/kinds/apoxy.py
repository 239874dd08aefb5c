"""clrk.apoxy.dev/v1alpha1: EgressGateway and Apoxy's companion kinds.

Field names and enums follow Apoxy's public API (apoxy-dev/clrk `api/clrk/v1alpha1/types_egress*.go`).
`ssrfGuard` and `parentRef` on EgressGateway are egressproxy extensions (DESIGN.md 4.1), `infrastructure` too (4.2).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from egressproxy.config.kinds import KindSchema, register
from egressproxy.config.kinds.common import NAME, SECRET_REF
from egressproxy.config.schema import Bool, Duration, F, Int, List, Map, Obj, Str

APOXY = ("clrk.apoxy.dev/v1alpha1",)

DEFAULT_CAPTURE_CONTENT_TYPES = ["application/json", "application/x-ndjson", "text/event-stream"]
DEFAULT_REQUEST_TIMEOUT_SECONDS = 300.0
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10.0


def cidr_error(value: str) -> str | None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return f"invalid CIDR {value!r}"
    return None


def ip_error(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"invalid IP address {value!r}"
    return None


CIDR = Str(check_fn=cidr_error)
IP = Str(check_fn=ip_error)

ALLOWED_ROUTES = Obj(
    {
        "namespaces": Obj(
            {
                "from": Str(enum=("All", "Same", "Selector")),
                "selector": Obj(
                    {
                        "matchLabels": Map(Str()),
                        "matchExpressions": List(
                            Obj(
                                {
                                    "key": F(Str(min_length=1), required=True),
                                    "operator": F(Str(enum=("In", "NotIn", "Exists", "DoesNotExist")), required=True),
                                    "values": List(Str()),
                                }
                            )
                        ),
                    }
                ),
            }
        ),
        "kinds": List(Obj({"group": Str(), "kind": F(Str(min_length=1), required=True)})),
    }
)


def _listener_rules(listener: dict[str, Any]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    protocol = listener.get("protocol")
    tls = listener.get("tls")
    if protocol in ("TCP", "UDP") and tls is not None:
        problems.append(("tls", f"tls is invalid for a {protocol} listener"))
    if protocol == "TLS" and tls is None and "protocol" in listener:
        problems.append(("tls", "tls is required for a TLS listener"))
    if protocol == "HTTPS" and (tls is None or tls.get("mode") != "Terminate"):
        problems.append(("tls.mode", "an HTTPS listener intercepts: it needs tls.mode Terminate"))
    # Terminate without caCertRef is valid: the gateway's CA is minted under --data-dir at run (DESIGN.md 4.2)
    return problems


LISTENER = Obj(
    {
        "name": F(Str(min_length=1, pattern=r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"), required=True),
        "protocol": F(Str(enum=("TCP", "TLS", "HTTP", "HTTPS", "UDP")), required=True),
        "port": Int(minimum=1, maximum=65535),
        "tls": Obj(
            {
                "mode": F(Str(enum=("Passthrough", "Terminate")), default="Passthrough"),
                "caCertRef": SECRET_REF,
            }
        ),
        "allowedRoutes": ALLOWED_ROUTES,
    },
    rules=(_listener_rules,),
)


def _unique_listener_names(spec: dict[str, Any]) -> list[tuple[str, str]]:
    seen: dict[str, int] = {}
    problems = []
    for i, listener in enumerate(spec.get("listeners", [])):
        name = listener.get("name")
        if name in seen:
            problems.append((f"listeners[{i}].name", f"duplicate listener name {name!r} (also listeners[{seen[name]}])"))
        elif name is not None:
            seen[name] = i
    return problems


EGRESS_GATEWAY = Obj(
    {
        "defaultPolicy": F(Str(enum=("allow-all", "deny-all")), default="deny-all"),
        "listeners": F(List(LISTENER, min_items=1), required=True),
        "dns": F(
            Obj({"lookupFamily": F(Str(enum=("V4Preferred", "V4Only", "V6Only", "Auto", "All")), default="V4Preferred")}),
            default={"lookupFamily": "V4Preferred"},
        ),
        "otlp": F(
            Obj(
                {
                    "endpoint": Str(),
                    "headers": Map(Str()),
                    "captureBody": F(
                        Obj(
                            {
                                "maxBytes": F(Int(minimum=0, maximum=2**31 - 1), default=65536),
                                "includeContentTypes": F(List(Str(min_length=1)), default=DEFAULT_CAPTURE_CONTENT_TYPES),
                            }
                        ),
                        default={"maxBytes": 65536, "includeContentTypes": DEFAULT_CAPTURE_CONTENT_TYPES},
                    ),
                }
            ),
            default={"captureBody": {"maxBytes": 65536, "includeContentTypes": DEFAULT_CAPTURE_CONTENT_TYPES}},
        ),
        # Apoxy clrk's newer examples (_examples/*/manifests/egressgateway.yaml): capture through Envoy's ext_proc,
        # switched on here, with the same captureBody block as `otlp`.
        "extProc": Obj(
            {
                "enabled": Bool(),
                "captureBody": Obj(
                    {"maxBytes": Int(minimum=0, maximum=2**31 - 1), "includeContentTypes": List(Str(min_length=1))}
                ),
            }
        ),
        "requestTimeout": F(Duration(), default=DEFAULT_REQUEST_TIMEOUT_SECONDS),
        "upstreamTLS": Obj(
            {
                "additionalTrustBundleSecretRef": SECRET_REF,
                "hostAliases": List(
                    Obj({"ip": F(IP, required=True), "hostnames": F(List(Str(min_length=1), min_items=1), required=True)})
                ),
            }
        ),
        # Extensions (DESIGN.md 4.1).
        "ssrfGuard": Obj({"allowCIDRs": List(CIDR), "denyCIDRs": List(CIDR)}),
        # Extension: how long one upstream TCP connect may take (mitmproxy has no connect timeout of its own).
        "connectTimeout": F(Duration(), default=DEFAULT_CONNECT_TIMEOUT_SECONDS),
        "parentRef": Obj({"name": F(NAME, required=True), "namespace": Str(), "group": Str(), "kind": Str()}),
        # Extension (DESIGN.md 4.2, docs/reliability.md "Client limits"): what one client may hold; 0 turns a
        # limit off. The defaults are Envoy's and common servers' (64 KiB heads, 100 header lines, 60 s).
        "clientLimits": Obj(
            {
                "maxRequestHeadBytes": F(Int(minimum=0, maximum=2**24), default=65536),
                "maxRequestHeaders": F(Int(minimum=0, maximum=10000), default=100),
                "requestHeadTimeout": F(Duration(), default=60.0),
                "idleTimeout": F(Duration(), default=60.0),
                "maxConnectionsPerClient": F(Int(minimum=0, maximum=2**20), default=0),
            }
        ),
        # Extension (DESIGN.md 4.2, Gateway API's own field on a Gateway): the GatewayParameters `render-k8s`
        # reads the Deployment and Service settings from.
        "infrastructure": Obj(
            {
                "parametersRef": Obj(
                    {
                        "group": Str(enum=("gateway.kgateway.dev",)),
                        "kind": Str(enum=("GatewayParameters",)),
                        "name": F(NAME, required=True),
                    }
                )
            }
        ),
    },
    rules=(_unique_listener_names,),
)

register(KindSchema("EgressGateway", APOXY, EGRESS_GATEWAY))


# --- Companion kinds: EgressL4Route and the egress policies (apoxy-dev/clrk `types_egressl4route.go`,
# `types_egresspolicies.go`). Imported late so EgressGateway above stays self-contained.

from collections.abc import Callable  # noqa: E402

from egressproxy.config.kinds.common import BACKEND_REF, POLICY_TARGET_REF, POLICY_TARGET_REFS  # noqa: E402
from egressproxy.config.kinds.gatewayapi import HOSTNAME, ROUTE_PARENT_REF  # noqa: E402

PORT = Int(minimum=1, maximum=65535)


def _port_match_rule(match: dict[str, Any]) -> list[tuple[str, str]]:
    has_range = "startPort" in match or "endPort" in match
    if "port" in match and has_range:
        return [("port", "set either port or startPort and endPort, not both")]
    if not has_range:
        return [] if "port" in match else [("port", "set port, or startPort and endPort")]
    if "startPort" not in match or "endPort" not in match:
        missing = "endPort" if "startPort" in match else "startPort"
        return [(missing, "startPort and endPort must be set together")]
    if match["startPort"] > match["endPort"]:
        return [("endPort", f"must not be less than startPort ({match['startPort']})")]
    return []


L4_PORT_MATCH = Obj({"port": PORT, "startPort": PORT, "endPort": PORT}, rules=(_port_match_rule,))

# metav1.LabelSelector, the same shape as allowedRoutes' namespace selector.
LABEL_SELECTOR = Obj(
    {
        "matchLabels": Map(Str()),
        "matchExpressions": List(
            Obj(
                {
                    "key": F(Str(min_length=1), required=True),
                    "operator": F(Str(enum=("In", "NotIn", "Exists", "DoesNotExist")), required=True),
                    "values": List(Str()),
                }
            )
        ),
    }
)

L4_ROUTE_MATCH = Obj(
    {
        "destinationCIDRs": List(CIDR),
        "destinationHostnames": List(HOSTNAME),
        "ports": List(L4_PORT_MATCH),
        "protocol": Str(enum=("TCP", "UDP")),
        "sourceAgents": LABEL_SELECTOR,
    }
)

# Route filters point at a RateLimitPolicy or LoggingPolicy (clrk `extensionRefPolicyKinds`).
L4_EXTENSION_REF = Obj(
    {
        "group": F(Str(), default="clrk.apoxy.dev"),
        "kind": F(Str(enum=("RateLimitPolicy", "LoggingPolicy")), required=True),
        "name": F(NAME, required=True),
    }
)


def _l4_filter_rule(value: dict[str, Any]) -> list[tuple[str, str]]:
    if value.get("type") == "ExtensionRef" and "extensionRef" not in value:
        return [("extensionRef", "extensionRef is required when type is ExtensionRef")]
    return []


L4_ROUTE_FILTER = Obj(
    {"type": F(Str(enum=("ExtensionRef",)), required=True), "extensionRef": L4_EXTENSION_REF},
    rules=(_l4_filter_rule,),
)

EGRESS_L4_ROUTE = Obj(
    {
        "parentRefs": F(List(ROUTE_PARENT_REF, min_items=1), required=True),
        "rules": F(
            List(
                Obj(
                    {
                        "matches": List(L4_ROUTE_MATCH),
                        "filters": List(L4_ROUTE_FILTER),
                        # Empty: pass through to the original destination.
                        "backendRefs": List(BACKEND_REF),
                    }
                ),
                min_items=1,
            ),
            required=True,
        ),
    }
)

CREDENTIAL_TARGET_MEMBERS = {"Header": "headerName", "QueryParam": "queryParamName", "ProviderAuth": "providerAuth"}


def _credential_target_rule(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """clrk's pairing of `target` with headerName / queryParamName / providerAuth."""
    target = spec.get("target")
    if target is None:
        return []
    problems = []
    wanted = CREDENTIAL_TARGET_MEMBERS[target]
    if wanted not in spec:
        problems.append((wanted, f"{wanted} is required when target is {target}"))
    for other, member in CREDENTIAL_TARGET_MEMBERS.items():
        if member in spec and member != wanted:
            problems.append((member, f"{member} is only valid when target is {other}"))
    return problems


def _attachment_rule(*names: str) -> Callable[[dict[str, Any]], list[tuple[str, str]]]:
    """At least one of the attachment fields (old and new spellings of clrk's API) is set."""

    def rule(spec: dict[str, Any]) -> list[tuple[str, str]]:
        if any(spec.get(name) for name in names):
            return []
        return [(names[0], f"required field is missing (set {' or '.join(names)})")]

    return rule


CREDENTIAL_INJECTION_POLICY = Obj(
    {
        # clrk's first spelling: attach to an AIProviderRoute, MCPRoute or EgressGateway.
        "parentRefs": List(ROUTE_PARENT_REF),
        # clrk's later spelling (GEP-2648); egressproxy also accepts kinds Backend and HTTPRoute (extension).
        "targetRefs": List(POLICY_TARGET_REF),
        "secretRef": F(SECRET_REF, required=True),
        "secretKey": F(Str(min_length=1), default="token"),
        "target": F(Str(enum=tuple(CREDENTIAL_TARGET_MEMBERS)), required=True),
        "headerName": Str(min_length=1),
        "queryParamName": Str(min_length=1),
        "providerAuth": Obj(
            {
                "type": F(Str(enum=("AWSv4", "GCPServiceAccount")), required=True),
                "region": Str(min_length=1),
                "service": Str(min_length=1),
            }
        ),
        # Extension: prepended to the Secret value, e.g. "Bearer ".
        "valuePrefix": Str(),
    },
    rules=(_attachment_rule("parentRefs", "targetRefs"), _credential_target_rule),
)


def _positive_window(spec: dict[str, Any]) -> list[tuple[str, str]]:
    if spec.get("window") == 0:
        return [("window", "must be longer than 0s")]
    return []


def _requests_or_tokens(spec: dict[str, Any]) -> list[tuple[str, str]]:
    if "requests" in spec or "tokens" in spec:
        return []
    return [("requests", "required field is missing (set requests, tokens or both)")]


def _redis_store_rule(store: dict[str, Any]) -> list[tuple[str, str]]:
    if store.get("type") == "Redis" and "redis" not in store:
        return [("redis", "redis is required when type is Redis")]
    if store.get("type", "Local") == "Local" and "redis" in store:
        return [("redis", "redis is only valid when type is Redis")]
    return []


def _redis_address_error(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"expected host:port, got {value!r}"
    return None


# Extensions (DESIGN.md 4.2): token limits, a shared store, and what to do when that store is unreachable. No
# schema defaults, so a document keeps exactly what it wrote: policies that apply to one request merge field by
# field (DESIGN.md 4, egressproxy/rate_limit_precedence.py), so an unset field must stay unset for a less specific
# policy to supply it; the merge applies PerAgent, Local, Allow and Enforce to what no policy sets.
RATE_LIMIT_STORE = Obj(
    {
        "type": Str(enum=("Local", "Redis")),
        "redis": Obj(
            {
                "address": F(Str(min_length=1, check_fn=_redis_address_error), required=True),
                "passwordSecretRef": SECRET_REF,
            }
        ),
    },
    rules=(_redis_store_rule,),
)

RATE_LIMIT_POLICY = Obj(
    {
        "requests": Int(minimum=1, maximum=2**31 - 1),
        "window": F(Duration(), required=True),
        "scope": Str(enum=("PerAgent", "PerExecution", "PerRoute")),  # PerAgent when no policy of a merge sets it
        # Extension: attach to an EgressGateway, Backend or route without a route filter.
        "targetRefs": POLICY_TARGET_REFS,
        # Extensions: LLM tokens per window (from the usage providers report), the counter store, its failure mode.
        "tokens": Int(minimum=1, maximum=2**53),  # exact in the Redis script (Lua numbers are doubles)
        "store": RATE_LIMIT_STORE,
        "failureMode": Str(enum=("Allow", "Deny")),
        "enforcementMode": Str(enum=("Enforce", "Report")),
    },
    rules=(_positive_window, _requests_or_tokens),
)

LOGGING_POLICY = Obj(
    {
        "captureRequest": F(Bool(), default=False),
        "captureResponse": F(Bool(), default=False),
        "redactHeaders": List(Str(min_length=1)),
        "sinkRef": Str(min_length=1),
        # Extension (as RateLimitPolicy's): attach to an EgressGateway (a listener by sectionName), Backend or
        # route without a route filter; clrk attaches it only through a route's ExtensionRef filter.
        "targetRefs": POLICY_TARGET_REFS,
    }
)

DEFAULT_DENY_STATUS = 403

EGRESS_DENY_POLICY = Obj(
    {
        # clrk's first spelling (one route) and its later one (several routes, GEP-2648).
        "targetRef": POLICY_TARGET_REF,
        "targetRefs": List(POLICY_TARGET_REF),
        "denyResponse": F(
            Obj(
                {
                    "statusCode": F(Int(minimum=400, maximum=599), default=DEFAULT_DENY_STATUS),
                    "message": Str(),
                }
            ),
            default={"statusCode": DEFAULT_DENY_STATUS},
        ),
        # Extension (DESIGN.md 4.2 report mode): Report lets the route's traffic pass, counted and logged.
        "enforcementMode": Str(enum=("Enforce", "Report")),
    },
    rules=(_attachment_rule("targetRef", "targetRefs"),),
)

register(KindSchema("EgressL4Route", APOXY, EGRESS_L4_ROUTE))
register(KindSchema("CredentialInjectionPolicy", APOXY, CREDENTIAL_INJECTION_POLICY))
register(KindSchema("RateLimitPolicy", APOXY, RATE_LIMIT_POLICY))
register(KindSchema("LoggingPolicy", APOXY, LOGGING_POLICY))
register(KindSchema("EgressDenyPolicy", APOXY, EGRESS_DENY_POLICY))
