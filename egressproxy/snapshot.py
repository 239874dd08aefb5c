"""The compiled, immutable, fully resolved configuration the data plane reads.

The compiler (`egressproxy.compiler`) builds one `Snapshot` per configuration generation, off the hot path; the
runtime swaps one reference. Everything here is frozen: references are already resolved (a `Route` holds its
`Backend`s, a `Listener` its CA material and its route tables), hostnames are canonical, regular expressions are
compiled, policy attachment is indexed. The hot path only does dictionary lookups and short walks over
pre-sorted tuples; it never scans every route and never parses anything.

Secrets are held in `SecretData`, whose `repr`/`str` never shows a value, and `Snapshot.to_dump()` (what the
admin port serves as `/config_dump`) replaces every secret value and credential with `"<redacted>"`.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from egressproxy.client_limits import DEFAULT_LIMITS, ClientLimits
from egressproxy.compiled_policies import CompiledPolicies
from egressproxy.config.problems import ObjectRef
from egressproxy.outlier_detection import OutlierDetection
from egressproxy.traffic_retries import RetryPolicy

__all__ = [
    "REDACTED",
    "ALLOW_ALL",
    "DENY_ALL",
    "BackendMember",
    "Carries",
    "Condition",
    "SecretData",
    "CAMaterial",
    "StaticHost",
    "ParentProxy",
    "AIProvider",
    "Backend",
    "DirectResponse",
    "HeaderModifier",
    "PathRewrite",
    "URLRewrite",
    "RequestRedirect",
    "RuleFilters",
    "PathMatch",
    "ValueMatch",
    "HttpRouteMatch",
    "L4Match",
    "WeightedBackend",
    "DenyAction",
    "Rule",
    "Route",
    "RuleEntry",
    "RouteBucket",
    "RouteTable",
    "Listener",
    "Gateway",
    "AttachedPolicy",
    "PolicyIndex",
    "Snapshot",
    "freeze",
    "thaw",
    "deep_merge",
    "EMPTY_TABLE",
]

REDACTED = "<redacted>"
ALLOW_ALL = "allow-all"
DENY_ALL = "deny-all"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

T = TypeVar("T")


class Carries(enum.Enum):
    """What a connection was seen to carry when a listener has to be chosen for it."""

    HTTP = "HTTP"  # plain HTTP (absolute-form, or sniffed in transparent mode)
    TLS = "TLS"  # a TLS ClientHello (CONNECT tunnel or transparent :443)
    TCP = "TCP"  # other bytes, or a server-speaks-first protocol
    UDP = "UDP"


# ---------------------------------------------------------------------------------------------------------------
# Immutable plain values


def freeze(value: Any) -> Any:
    """Deep-freeze plain config values: dicts become read-only mappings, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of `freeze`: plain dicts and lists a caller may mutate or serialise."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Field-by-field merge where `override` wins: nested objects merge, lists and scalars are replaced whole."""
    out: dict[str, Any] = {k: thaw(v) for k, v in base.items()}
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = thaw(value)
    return out


@dataclass(frozen=True, slots=True)
class Condition:
    """A Kubernetes-style status condition (`Accepted`, `ResolvedRefs`, `Programmed`)."""

    type: str
    status: str  # "True" | "False"
    reason: str
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "True"

    def to_dump(self) -> dict[str, str]:
        return {"type": self.type, "status": self.status, "reason": self.reason, "message": self.message}


class SecretData(Mapping[str, bytes]):
    """The decoded keys of one Secret. Its repr, str and dump never show a value, only the key names."""

    __slots__ = ("_data",)

    _data: Mapping[str, bytes]

    def __init__(self, data: Mapping[str, bytes]) -> None:
        object.__setattr__(self, "_data", MappingProxyType(dict(data)))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("SecretData is immutable")

    def __getitem__(self, key: str) -> bytes:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretData) and dict(self._data) == dict(other._data)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._data)))

    def __repr__(self) -> str:
        return f"SecretData(keys={sorted(self._data)!r})"

    __str__ = __repr__

    def text(self, key: str, default: str | None = None) -> str | None:
        """One value as UTF-8 text, without a trailing newline (mounted files often end with one)."""
        raw = self._data.get(key)
        if raw is None:
            return default
        return raw.decode("utf-8", errors="replace").rstrip("\r\n")

    def as_text(self) -> dict[str, str]:
        return {k: v.decode("utf-8", errors="replace") for k, v in self._data.items()}

    def to_dump(self) -> dict[str, str]:
        return {k: REDACTED for k in sorted(self._data)}


@dataclass(frozen=True, slots=True)
class CAMaterial:
    """The interception CA of a Terminate listener (Secret keys tls.crt/tls.key, or ca.crt/ca.key), or, without
    caCertRef, the gateway's CA minted under --data-dir (`minted`: its certificate's path)."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    secret: ObjectRef | None = None
    minted: str | None = None

    def to_dump(self) -> dict[str, Any]:
        dump = {"secret": str(self.secret) if self.secret else None, "certPem": "present", "keyPem": REDACTED}
        if self.minted is not None:
            dump["minted"] = self.minted
        return dump


# ---------------------------------------------------------------------------------------------------------------
# Backends


@dataclass(frozen=True, slots=True)
class StaticHost:
    host: str  # canonical host name or IP
    port: int


@dataclass(frozen=True, slots=True)
class ParentProxy:
    """Parent mode: the Backend is an upstream proxy at `address`, optionally with Basic credentials."""

    address: StaticHost | None
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    auth_secret: ObjectRef | None = None

    def to_dump(self) -> dict[str, Any]:
        return {
            "address": f"{self.address.host}:{self.address.port}" if self.address else None,
            "authSecretRef": str(self.auth_secret) if self.auth_secret else None,
            "username": REDACTED if self.username is not None else None,
            "password": REDACTED if self.password is not None else None,
        }


@dataclass(frozen=True, slots=True)
class AIProvider:
    """One LLM provider of an AI Backend, with kgateway's overrides lifted out of its block."""

    name: str  # the priority-group entry's name, else the provider kind
    kind: str  # openai | anthropic | gemini | bedrock | azureOpenai | vertexAi | ...
    model: str | None = None
    host: str | None = None  # hostOverride.host (canonical) or the provider's endpoint host
    port: int | None = None
    scheme: str | None = None  # hostOverride.scheme: https (default) | http
    path: str | None = None  # pathOverride.fullPath
    auth_kind: str | None = None  # SecretRef | Inline | Passthrough | (bedrock) Secret
    auth_secret: ObjectRef | None = None
    auth_inline: str | None = field(default=None, repr=False)
    api_version: str | None = None
    region: str | None = None
    config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), repr=False, compare=False)

    def to_dump(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "model": self.model,
            "host": self.host,
            "port": self.port,
            "scheme": self.scheme,
            "path": self.path,
            "authKind": self.auth_kind,
            "authSecretRef": str(self.auth_secret) if self.auth_secret else None,
            "authInline": REDACTED if self.auth_inline is not None else None,
            "apiVersion": self.api_version,
            "region": self.region,
        }


REGION_LABEL = "topology.kubernetes.io/region"


@dataclass(frozen=True, slots=True)
class BackendMember:
    """One entry of an AIBackend's `groups[].backends[]`: another Backend, and its weight within the group."""

    backend: "Backend"
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Backend:
    ref: ObjectRef
    type: str  # Static | AI | AWS | DynamicForwardProxy | MCP
    static_hosts: tuple[StaticHost, ...] = ()
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), compare=False)
    parent: ParentProxy | None = None
    ai_groups: tuple[tuple[AIProvider, ...], ...] = ()  # priority groups, highest priority first
    outlier: OutlierDetection | None = None  # extension `spec.outlierDetection` (egressproxy/outlier_detection.py)
    # AIBackend `groups`: other Backends by priority (highest first), weighted within a group
    members: tuple[tuple[BackendMember, ...], ...] = ()
    spec: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), repr=False, compare=False)

    @property
    def region(self) -> str | None:
        return self.labels.get(REGION_LABEL)

    @property
    def name(self) -> str:
        """`namespace/name`, as metrics, captures and denial bodies name a backend."""
        return f"{self.ref.namespace}/{self.ref.name}"

    def to_dump(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "staticHosts": [f"{h.host}:{h.port}" for h in self.static_hosts],
            "labels": dict(self.labels),
            "parent": self.parent.to_dump() if self.parent else None,
            "aiPriorityGroups": [[p.to_dump() for p in group] for group in self.ai_groups],
            "outlierDetection": self.outlier.to_dump() if self.outlier else None,
            "groups": [[{"backend": m.backend.name, "weight": m.weight} for m in group] for group in self.members],
        }


# ---------------------------------------------------------------------------------------------------------------
# Routes


@dataclass(frozen=True, slots=True)
class DirectResponse:
    ref: ObjectRef
    status: int
    body: str = ""


@dataclass(frozen=True, slots=True)
class HeaderModifier:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PathRewrite:
    type: str  # ReplaceFullPath | ReplacePrefixMatch
    value: str


@dataclass(frozen=True, slots=True)
class URLRewrite:
    hostname: str | None = None
    path: PathRewrite | None = None


@dataclass(frozen=True, slots=True)
class RequestRedirect:
    scheme: str | None = None
    hostname: str | None = None
    port: int | None = None
    path: PathRewrite | None = None
    status_code: int = 302


@dataclass(frozen=True, slots=True)
class RuleFilters:
    """A rule's filters, one slot per Gateway API filter type (each type may appear once per rule)."""

    request_headers: HeaderModifier | None = None
    response_headers: HeaderModifier | None = None
    url_rewrite: URLRewrite | None = None
    redirect: RequestRedirect | None = None
    direct_response: DirectResponse | None = None
    policies: tuple[ObjectRef, ...] = ()  # ExtensionRef filters naming a policy (also in the PolicyIndex)


NO_FILTERS = RuleFilters()


@dataclass(frozen=True, slots=True)
class PathMatch:
    """Gateway API path match. `value` of a PathPrefix is kept without its trailing slash ('' for '/')."""

    type: str  # Exact | PathPrefix | RegularExpression
    value: str
    regex: re.Pattern[str] | None = None

    def matches(self, path: str) -> bool:
        if self.type == "Exact":
            return path == self.value
        if self.type == "PathPrefix":
            # Segment-aware: /foo matches /foo, /foo/ and /foo/bar, never /foobar.
            v = self.value
            return not v or path == v or (path.startswith(v) and path[len(v)] == "/")
        assert self.regex is not None
        return self.regex.fullmatch(path) is not None


@dataclass(frozen=True, slots=True)
class ValueMatch:
    """A header (name lower-cased) or query parameter (name exact) match."""

    name: str
    type: str  # Exact | RegularExpression
    value: str
    regex: re.Pattern[str] | None = None

    def matches(self, actual: str | None) -> bool:
        if actual is None:
            return False
        if self.regex is not None:
            return self.regex.fullmatch(actual) is not None
        return actual == self.value


MATCH_ALL_PATH = PathMatch("PathPrefix", "")


@dataclass(frozen=True, slots=True)
class HttpRouteMatch:
    path: PathMatch = MATCH_ALL_PATH
    method: str | None = None
    headers: tuple[ValueMatch, ...] = ()
    query_params: tuple[ValueMatch, ...] = ()

    def precedence(self) -> tuple[int, int, int, int, int]:
        """Gateway API order: Exact path > longest prefix > regex; then method; more headers; more query params."""
        kind = {"Exact": 2, "PathPrefix": 1}.get(self.path.type, 0)
        length = len(self.path.value) if self.path.type != "RegularExpression" else 0
        return (kind, length, 1 if self.method else 0, len(self.headers), len(self.query_params))

    def matches(self, method: str, path: str, headers: Mapping[str, str], query: Mapping[str, list[str]]) -> bool:
        if self.method is not None and method != self.method:
            return False
        if not self.path.matches(path):
            return False
        for h in self.headers:
            if not h.matches(headers.get(h.name)):
                return False
        for q in self.query_params:
            values = query.get(q.name)
            if not q.matches(values[0] if values else None):
                return False
        return True


@dataclass(frozen=True, slots=True)
class L4Match:
    """EgressL4Route match (TCPRoute/UDPRoute rules compile to an empty one). Conditions are ANDed."""

    cidrs: tuple[IPNetwork, ...] = ()
    hostnames: tuple[str, ...] = ()  # canonical; `*.suffix` wildcards kept (indexed by the table)
    ports: tuple[tuple[int, int], ...] = ()  # inclusive ranges; a single port is (p, p)
    protocol: str | None = None  # TCP | UDP; None inherits the listener's

    def matches_address(self, ip: str | None, port: int | None, protocol: str) -> bool:
        if self.protocol is not None and self.protocol != protocol:
            return False
        if self.ports and (port is None or not any(lo <= port <= hi for lo, hi in self.ports)):
            return False
        if self.cidrs:
            if ip is None:
                return False
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                return False
            if not any(addr in net for net in self.cidrs):
                return False
        return True


@dataclass(frozen=True, slots=True)
class WeightedBackend:
    """One backendRef. `backend` is None for a Service reference (dialled as `service_host:port`)."""

    ref: ObjectRef
    backend: Backend | None
    weight: int = 1
    port: int | None = None
    service_host: str | None = None


@dataclass(frozen=True, slots=True)
class DenyAction:
    """An EgressDenyPolicy turning a route from allow into deny."""

    policy: ObjectRef
    status_code: int = 403
    message: str | None = None
    report: bool = False  # enforcementMode Report: the route's traffic passes, the denial is counted and logged


@dataclass(frozen=True, slots=True)
class Rule:
    index: int
    name: str | None = None
    matches: tuple[HttpRouteMatch, ...] = ()  # HTTPRoute/GRPCRoute
    l4_matches: tuple[L4Match, ...] = ()  # EgressL4Route
    filters: RuleFilters = NO_FILTERS
    backends: tuple[WeightedBackend, ...] = ()  # empty (and nothing unresolved): the requested destination
    request_timeout: float | None = None  # rules[].timeouts.request, seconds
    backend_request_timeout: float | None = None  # rules[].timeouts.backendRequest: a failover attempt's head timeout
    retry: RetryPolicy | None = None  # rules[].retry (Gateway API), egressproxy/traffic_retries.py
    # backendRefs of kinds this gateway does not model (`group/Kind ns/name`): never dialled, and a rule left
    # with no other backend answers no-healthy-backend rather than forwarding to the requested destination
    unresolved_backends: tuple[str, ...] = ()

    @property
    def direct_response(self) -> DirectResponse | None:
        return self.filters.direct_response


@dataclass(frozen=True, slots=True)
class Route:
    kind: str  # HTTPRoute | GRPCRoute | TLSRoute | TCPRoute | UDPRoute | EgressL4Route
    ref: ObjectRef
    hostnames: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    deny: DenyAction | None = None
    listeners: tuple[str, ...] = ()  # names of the listeners it is attached to

    @property
    def name(self) -> str:
        """`namespace/name`, as metrics, captures and denial bodies name a route."""
        return f"{self.ref.namespace}/{self.ref.name}"

    def to_dump(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "hostnames": list(self.hostnames),
            "listeners": list(self.listeners),
            "deny": (
                {"policy": str(self.deny.policy), "statusCode": self.deny.status_code, "message": self.deny.message}
                if self.deny
                else None
            ),
            "rules": [_rule_dump(r) for r in self.rules],
        }


def _rule_dump(rule: Rule) -> dict[str, Any]:
    f = rule.filters
    return {
        "index": rule.index,
        "name": rule.name,
        "matches": [
            {
                "path": {"type": m.path.type, "value": m.path.value or "/"},
                "method": m.method,
                "headers": [{"name": h.name, "type": h.type, "value": h.value} for h in m.headers],
                "queryParams": [{"name": q.name, "type": q.type, "value": q.value} for q in m.query_params],
            }
            for m in rule.matches
        ],
        "l4Matches": [
            {
                "destinationCIDRs": [str(c) for c in m.cidrs],
                "destinationHostnames": list(m.hostnames),
                "ports": [list(p) for p in m.ports],
                "protocol": m.protocol,
            }
            for m in rule.l4_matches
        ],
        "backends": [
            {
                "ref": str(b.ref),
                "weight": b.weight,
                "port": b.port,
                "serviceHost": b.service_host,
            }
            for b in rule.backends
        ],
        "unresolvedBackends": list(rule.unresolved_backends),
        "directResponse": str(f.direct_response.ref) if f.direct_response else None,
        "policies": [str(p) for p in f.policies],
        "requestTimeout": rule.request_timeout,
    }


@dataclass(frozen=True, slots=True)
class RuleEntry:
    """One candidate of a route table bucket: a route's rule and one of its matches (None: matches all)."""

    route: Route
    rule: Rule
    match: HttpRouteMatch | L4Match | None = None


@dataclass(frozen=True, slots=True)
class RouteBucket:
    """The routes one hostname key selects, and their rule candidates pre-sorted by Gateway API precedence."""

    routes: tuple[Route, ...]
    entries: tuple[RuleEntry, ...]
    # Some entry matches on the method, a header or a query parameter: requests to a host this bucket serves may
    # be decided differently with the same path (set by the compiler; see `RouteTable.decided_by_path`).
    reads_request: bool = False
    # Some entry matches on the path (anything but the match-all PathPrefix `/`): see `RouteTable.decided_by_host`.
    reads_path: bool = False


EMPTY_BUCKET = RouteBucket((), ())


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Routes indexed by hostname: exact names, wildcard suffixes, and routes without hostnames.

    `buckets(host)` walks at most one exact key, one wildcard key per parent suffix of the host (most specific
    first: `*.b.example.com` before `*.example.com`; never the apex itself) and the hostname-less bucket, so a
    lookup costs O(labels in the host), not O(routes).
    """

    exact: Mapping[str, RouteBucket] = field(default_factory=lambda: MappingProxyType({}))
    wildcard: Mapping[str, RouteBucket] = field(default_factory=lambda: MappingProxyType({}))  # key: "example.com"
    any: RouteBucket = EMPTY_BUCKET

    def buckets(self, host: str | None) -> Iterator[RouteBucket]:
        """Non-empty buckets for a canonical host, most specific first (exact > longest wildcard > none)."""
        if host:
            bucket = self.exact.get(host)
            if bucket is not None:
                yield bucket
            if self.wildcard:
                dot = host.find(".")
                while dot != -1:
                    bucket = self.wildcard.get(host[dot + 1 :])
                    if bucket is not None:
                        yield bucket
                    dot = host.find(".", dot + 1)
        if self.any.routes:
            yield self.any

    def lookup(self, host: str | None) -> tuple[Route, ...]:
        """Routes whose hostnames match `host`, most specific first, each once."""
        seen: set[ObjectRef] = set()
        out: list[Route] = []
        for bucket in self.buckets(host):
            for route in bucket.routes:
                if route.ref not in seen:
                    seen.add(route.ref)
                    out.append(route)
        return tuple(out)

    def first(self, host: str | None) -> Route | None:
        for bucket in self.buckets(host):
            return bucket.routes[0]
        return None

    def decided_by_path(self, host: str | None) -> bool:
        """True when the rule a request to `host` matches depends on its path alone: no bucket the host selects
        has a method, header or query-parameter match (so requests with one path all match the same rule)."""
        for bucket in self.buckets(host):
            if bucket.reads_request:
                return False
        return True

    def decided_by_host(self, host: str | None) -> bool:
        """True when every request to `host` matches the same rule: no bucket the host selects has a match on
        the path, method, headers or query parameters (hostname-only routes, `rules: [{}]`)."""
        for bucket in self.buckets(host):
            if bucket.reads_request or bucket.reads_path:
                return False
        return True

    @property
    def routes(self) -> tuple[Route, ...]:
        """Every route of the table, each once (for dumps and explain, never for the hot path)."""
        seen: dict[ObjectRef, Route] = {}
        for bucket in (*self.exact.values(), *self.wildcard.values(), self.any):
            for route in bucket.routes:
                seen.setdefault(route.ref, route)
        return tuple(sorted(seen.values(), key=lambda r: (r.ref.namespace, r.ref.name)))

    def to_dump(self) -> dict[str, Any]:
        return {
            "exact": {k: [r.name for r in b.routes] for k, b in sorted(self.exact.items())},
            "wildcard": {f"*.{k}": [r.name for r in b.routes] for k, b in sorted(self.wildcard.items())},
            "any": [r.name for r in self.any.routes],
        }


EMPTY_TABLE = RouteTable()


# ---------------------------------------------------------------------------------------------------------------
# Listeners and the gateway


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    protocol: str  # TCP | TLS | HTTP | HTTPS | UDP
    port: int | None
    tls_mode: str | None  # Passthrough | Terminate | None
    intercepts: bool  # HTTPS, HTTP+Terminate, TLS+Terminate: MITM, then HTTPRoutes
    precedence: int  # TLS Terminate 5 > HTTPS (and HTTP+Terminate) 4 > HTTP 3 > TLS Passthrough 2 > TCP 1; UDP 0
    index: int  # position in spec.listeners
    ca: CAMaterial | None = None
    http_routes: RouteTable = EMPTY_TABLE  # HTTPRoute + GRPCRoute
    tls_routes: RouteTable = EMPTY_TABLE  # TLSRoute
    l4_routes: RouteTable = EMPTY_TABLE  # TCPRoute, UDPRoute, EgressL4Route

    @property
    def carries_http(self) -> bool:
        """True when HTTPRoutes decide this listener's traffic (plain HTTP or intercepted TLS)."""
        return self.intercepts or self.protocol == "HTTP"

    @property
    def passthrough(self) -> bool:
        return self.protocol == "TLS" and self.tls_mode != "Terminate"

    def to_dump(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "protocol": self.protocol,
            "port": self.port,
            "tlsMode": self.tls_mode,
            "intercepts": self.intercepts,
            "precedence": self.precedence,
            "ca": self.ca.to_dump() if self.ca else None,
            "httpRoutes": self.http_routes.to_dump(),
            "tlsRoutes": self.tls_routes.to_dump(),
            "l4Routes": self.l4_routes.to_dump(),
        }


@dataclass(frozen=True, slots=True)
class Gateway:
    ref: ObjectRef
    default_policy: str  # allow-all | deny-all
    listeners: tuple[Listener, ...]  # in spec order
    request_timeout: float = 300.0
    connect_timeout: float = 10.0  # extension: one upstream TCP connect
    lookup_family: str = "V4Preferred"
    capture_max_bytes: int = 65536
    capture_content_types: tuple[str, ...] = ()
    otlp_endpoint: str | None = None
    otlp_headers: SecretData = field(default_factory=lambda: SecretData({}))
    host_aliases: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    trust_bundle_pem: bytes | None = field(default=None, repr=False)
    trust_bundle_secret: ObjectRef | None = None
    ssrf_allow: tuple[IPNetwork, ...] = ()
    ssrf_deny: tuple[IPNetwork, ...] = ()
    parent: Backend | None = None
    client_limits: ClientLimits = DEFAULT_LIMITS  # extension spec.clientLimits (egressproxy/client_limits.py)
    # (Carries, port) and (Carries, None) -> candidate listeners sorted by precedence; built by the compiler.
    listeners_by_port: Mapping[tuple[Carries, int | None], tuple[Listener, ...]] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )

    @property
    def name(self) -> str:
        return f"{self.ref.namespace}/{self.ref.name}"

    def listener(self, name: str) -> Listener | None:
        for listener in self.listeners:
            if listener.name == name:
                return listener
        return None

    def candidates(self, carries: Carries, port: int | None) -> tuple[Listener, ...]:
        """Listeners that can take a connection: matching port first, then port-less; each by precedence."""
        portless = self.listeners_by_port.get((carries, None), ())
        if port is None:
            return portless
        ported = self.listeners_by_port.get((carries, port), ())
        return ported + portless if ported else portless

    def to_dump(self) -> dict[str, Any]:
        return {
            "ref": str(self.ref),
            "defaultPolicy": self.default_policy,
            "requestTimeout": self.request_timeout,
            "connectTimeout": self.connect_timeout,
            "lookupFamily": self.lookup_family,
            "capture": {"maxBytes": self.capture_max_bytes, "includeContentTypes": list(self.capture_content_types)},
            "otlp": {"endpoint": self.otlp_endpoint, "headers": self.otlp_headers.to_dump()},
            "hostAliases": {h: list(ips) for h, ips in sorted(self.host_aliases.items())},
            "trustBundle": {
                "secret": str(self.trust_bundle_secret) if self.trust_bundle_secret else None,
                "present": self.trust_bundle_pem is not None,
            },
            "ssrfGuard": {"allowCIDRs": [str(n) for n in self.ssrf_allow], "denyCIDRs": [str(n) for n in self.ssrf_deny]},
            "parent": str(self.parent.ref) if self.parent else None,
            "clientLimits": self.client_limits.to_dump(),
            "listeners": [listener.to_dump() for listener in self.listeners],
        }


# ---------------------------------------------------------------------------------------------------------------
# Policy attachment

# Attachment scopes, least specific first; a more specific scope wins field by field.
SCOPES = ("gateway", "listener", "backend", "route", "rule")


@dataclass(frozen=True, slots=True)
class AttachedPolicy:
    ref: ObjectRef
    spec: Mapping[str, Any] = field(compare=False)  # frozen, without its targetRefs/targetRef/parentRefs
    scope: str = "gateway"


ScopeKey = tuple[str, Any]  # (scope, key): ("gateway", None), ("listener", name), ("backend", ref), ...


@dataclass(frozen=True, slots=True)
class PolicyIndex:
    """Each policy kind's specs by attachment point, and their merge (most specific wins, field by field).

    Scopes, least to most specific: Gateway (the EgressGateway) < Listener (targetRef sectionName) < Backend <
    Route < Rule (a route rule's ExtensionRef filter). Several policies at one scope merge in name order, the
    first (by `namespace/name`) winning a conflicting field, as Gateway API resolves policy conflicts.
    """

    attached: Mapping[tuple[str, str, Any], tuple[AttachedPolicy, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )  # (kind, scope, key) -> policies
    _memo: dict[tuple[Any, ...], Mapping[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    def policies(
        self,
        kind: str,
        route: ObjectRef | None = None,
        backend: ObjectRef | None = None,
        listener: str | None = None,
        rule: int | None = None,
    ) -> tuple[AttachedPolicy, ...]:
        """The policies of `kind` that apply, most specific first (the first names the deciding object)."""
        keys: list[tuple[str, Any]] = []
        if route is not None and rule is not None:
            keys.append(("rule", (route, rule)))
        if route is not None:
            keys.append(("route", route))
        if backend is not None:
            keys.append(("backend", backend))
        if listener is not None:
            keys.append(("listener", listener))
        keys.append(("gateway", None))
        out: list[AttachedPolicy] = []
        for scope, key in keys:
            out.extend(self.attached.get((kind, scope, key), ()))
        return tuple(out)

    def effective(
        self,
        kind: str,
        route: ObjectRef | None = None,
        backend: ObjectRef | None = None,
        listener: str | None = None,
        rule: int | None = None,
    ) -> dict[str, Any]:
        """The merged spec of `kind` for this request: Rule > Route > Backend > Listener > Gateway.

        Nested objects merge field by field, lists are replaced whole. Returns a fresh dict ({} when nothing
        is attached); the merge itself is memoised, so repeated calls cost a lookup and a copy.
        """
        memo_key = (kind, route, backend, listener, rule)
        merged = self._memo.get(memo_key)
        if merged is None:
            spec: dict[str, Any] = {}
            for policy in reversed(self.policies(kind, route, backend, listener, rule)):
                spec = deep_merge(spec, policy.spec)
            merged = self._memo[memo_key] = freeze(spec)
        return thaw(merged)

    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted({k for k, _, _ in self.attached}))

    def to_dump(self) -> dict[str, Any]:
        out: dict[str, list[dict[str, Any]]] = {}
        for (kind, scope, key), policies in sorted(self.attached.items(), key=lambda kv: repr(kv[0])):
            for p in policies:
                out.setdefault(kind, []).append({"policy": str(p.ref), "scope": scope, "target": _scope_name(key)})
        return out


def _scope_name(key: Any) -> str | None:
    if key is None:
        return None
    if isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], ObjectRef):
        return f"{key[0]}#rule{key[1]}"
    return str(key)


# ---------------------------------------------------------------------------------------------------------------
# The snapshot


@dataclass(frozen=True, slots=True)
class Snapshot:
    gateway: Gateway
    gateways: tuple[ObjectRef, ...]  # every EgressGateway in the config (one is served)
    backends: Mapping[ObjectRef, Backend]
    routes: Mapping[ObjectRef, Route]  # routes attached to the served gateway
    secrets: Mapping[ObjectRef, SecretData]  # Secret objects, and secrets-dir entries under namespace "*"
    policies: PolicyIndex
    statuses: Mapping[ObjectRef, tuple[Condition, ...]]
    listener_statuses: Mapping[str, tuple[Condition, ...]] = field(default_factory=lambda: MappingProxyType({}))
    direct_responses: Mapping[ObjectRef, DirectResponse] = field(default_factory=lambda: MappingProxyType({}))
    generation: int = 1
    files: tuple[str, ...] = ()
    # Honest status (DESIGN.md section 6): object -> the field paths it sets that this build validates but does
    # not enforce. Such an object is Programmed=False/Unsupported; `explain` says the fields are not applied.
    unsupported: Mapping[ObjectRef, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    # Every policy in its compiled form (SSRF guard, DNS settings, upstream TLS material, htpasswd tables, parent
    # credentials), built once with the snapshot: the data plane looks these up, it never parses a Secret.
    compiled: CompiledPolicies = field(default_factory=CompiledPolicies, compare=False)
    # Every secret value known at compile time, for the last-resort scrub of dumps; never shown.
    _secret_values: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def secret(self, namespace: str, name: str) -> SecretData | None:
        """A Secret by namespace and name; a mounted secrets-dir entry (namespace-agnostic) wins."""
        mounted = self.secrets.get(ObjectRef("Secret", MOUNTED_NAMESPACE, name))
        if mounted is not None:
            return mounted
        return self.secrets.get(ObjectRef("Secret", namespace, name))

    def to_dump(self) -> dict[str, Any]:
        """The JSON-able snapshot for `/config_dump`; every secret value and credential is `<redacted>`."""
        dump = {
            "generation": self.generation,
            "files": list(self.files),
            "gateways": [str(g) for g in self.gateways],
            "gateway": self.gateway.to_dump(),
            "routes": {str(ref): r.to_dump() for ref, r in sorted(self.routes.items())},
            "backends": {str(ref): b.to_dump() for ref, b in sorted(self.backends.items())},
            "directResponses": {
                str(ref): {"status": d.status, "body": d.body} for ref, d in sorted(self.direct_responses.items())
            },
            "policies": self.policies.to_dump(),
            "compiled": self.compiled.to_dump(),
            "secrets": {str(ref): s.to_dump() for ref, s in sorted(self.secrets.items())},
            "statuses": {str(ref): [c.to_dump() for c in conds] for ref, conds in sorted(self.statuses.items())},
            "listenerStatuses": {
                name: [c.to_dump() for c in conds] for name, conds in sorted(self.listener_statuses.items())
            },
        }
        return scrub(dump, self._secret_values)


MOUNTED_NAMESPACE = "*"
_MIN_SCRUB_LENGTH = 6  # shorter values would blank innocent strings; explicit redaction covers them


def scrub(value: Any, secret_values: frozenset[str]) -> Any:
    """Replace any string that contains a known secret value with `<redacted>` (defence in depth for dumps)."""
    if not secret_values:
        return value
    if isinstance(value, dict):
        return {k: scrub(v, secret_values) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, secret_values) for v in value]
    if isinstance(value, str) and any(s in value for s in secret_values if len(s) >= _MIN_SCRUB_LENGTH):
        return REDACTED
    return value
