"""gateway.networking.k8s.io: HTTPRoute, GRPCRoute, TLSRoute, TCPRoute, UDPRoute and BackendTLSPolicy.

Every version Gateway API serves for a kind is accepted (DESIGN.md 4.1 "API versions"); the versions share one
shape except where upstream's differ (TLSRoute v1alpha3 and v1 require `hostnames`).

Field names, enums and defaults are Gateway API's own. Where egressproxy differs, it says so:
- route `parentRefs` default to `kind: EgressGateway` (group `clrk.apoxy.dev`); `kind: Gateway` (group
  `gateway.networking.k8s.io`) names the EgressGateway of that name (DESIGN.md 4.1);
- TLSRoute, TCPRoute and UDPRoute rules may omit `backendRefs` (forward to the requested destination), and a
  route without `rules` has one empty rule, as an HTTPRoute has Gateway API's catch-all rule;
- BackendTLSPolicy carries the extensions `clientCertificateRef`, `validation.spkiPins` and
  `validation.crlRefs` (DESIGN.md 4.1).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from egressproxy.config.kinds import KindSchema, register
from egressproxy.config.kinds.common import (
    BACKEND_REF,
    EXTENSION_REF,
    HEADER_MODIFIER,
    HEADER_NAME,
    HEADER_VALUE,
    NAME,
    PARENT_REF,
    POLICY_TARGET_REF,
    SECRET_REF,
    unique_names,
)
from egressproxy.hostnames import InvalidHostname, canonical_host
from egressproxy.config.schema import F, Bool, Duration, Free, Int, List, Map, Obj, Str, Type, Walker

__all__ = [
    "ROUTE_PARENT_REF",
    "HOSTNAME",
    "PRECISE_HOSTNAME",
    "hostname_error",
    "regex_error",
    "path_error",
    "DEFAULT_PATH_MATCH",
]

# Every version Gateway API serves for each kind (DESIGN.md 4.1 "API versions"), the storage version first.
_GROUP = "gateway.networking.k8s.io"
SERVED_VERSIONS: dict[str, tuple[str, ...]] = {
    "HTTPRoute": ("v1", "v1beta1"),
    "GRPCRoute": ("v1", "v1alpha2"),
    "TLSRoute": ("v1", "v1alpha3", "v1alpha2"),
    "TCPRoute": ("v1", "v1alpha2"),
    "UDPRoute": ("v1", "v1alpha2"),
    "BackendTLSPolicy": ("v1", "v1alpha3"),
}


def _api_versions(kind: str) -> tuple[str, ...]:
    return tuple(f"{_GROUP}/{version}" for version in SERVED_VERSIONS[kind])

EGRESS_GATEWAY_KIND = "EgressGateway"

Rule = Callable[[dict[str, Any]], list[tuple[str, str]]]

# --- hostnames and regular expressions ------------------------------------------------------------------------

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_IPV4ISH = re.compile(r"[0-9.]+|\[?[0-9a-fA-F:.]*:[0-9a-fA-F:.]*\]?")


def _idna_hint(value: str) -> str:
    """The `xn--` spelling clients send for `value`: IDNA 2008 as the data plane canonicalises, never Python's
    IDNA 2003 codec, which maps `straße` to `strasse`, another (possibly someone else's) name."""
    wildcard = value.startswith("*.")
    try:
        ascii_form = canonical_host(value[2:] if wildcard else value)
    except InvalidHostname:
        return ""
    return f" (write the IDNA form {('*.' if wildcard else '') + ascii_form!r})"


def hostname_error(value: str, allow_wildcard: bool = True) -> str | None:
    """Why `value` is not a Gateway API Hostname (RFC 1123, optionally with a leading `*.`), or None."""
    if not value.isascii():
        return f"invalid hostname {value!r}: must be ASCII{_idna_hint(value)}"
    if _IPV4ISH.fullmatch(value):
        return f"invalid hostname {value!r}: an IP address is not a hostname"
    if value != value.lower():
        return f"invalid hostname {value!r}: must be lower case ({value.lower()!r})"
    name = value
    if name.startswith("*."):
        if not allow_wildcard:
            return f"invalid hostname {value!r}: a wildcard is not allowed here"
        name = name[2:]
    if len(value) > 253:
        return f"invalid hostname {value[:40]!r}...: longer than 253 characters"
    labels = name.split(".")
    if not all(len(label) <= 63 and _DNS_LABEL.fullmatch(label) for label in labels):
        wildcard = " or '*.' followed by one" if allow_wildcard else ""
        return f"invalid hostname {value!r}: must be an RFC 1123 name{wildcard} (such as 'api.example.com')"
    return None


def _precise_hostname_error(value: str) -> str | None:
    return hostname_error(value, allow_wildcard=False)


def regex_error(value: str) -> str | None:
    try:
        re.compile(value)
    except re.error as e:
        return f"invalid regular expression {value!r}: {e}"
    except RecursionError:  # re's parser recurses per group (found by fuzzing: "(" * 3000 ...)
        return f"invalid regular expression {value[:40]!r}...: nested too deeply"
    return None


HOSTNAME = Str(min_length=1, check_fn=hostname_error)
PRECISE_HOSTNAME = Str(min_length=1, check_fn=_precise_hostname_error)
HOSTNAMES = List(HOSTNAME, max_items=16)

# --- references -----------------------------------------------------------------------------------------------

# A route's parent: the EgressGateway unless said otherwise; `sectionName` names its listener. `kind: Gateway`
# (group gateway.networking.k8s.io, its default) names the EgressGateway of that name, so routes written for a
# Kubernetes Gateway attach unchanged. `group` has no default here: it follows the kind (the compiler's
# route_attachment.parent_group_kind).
ROUTE_PARENT_REF = Obj(
    {
        **PARENT_REF.fields,
        "group": Str(),
        "kind": F(Str(min_length=1), default=EGRESS_GATEWAY_KIND),
    }
)
ROUTE_PARENT_REFS = List(ROUTE_PARENT_REF, max_items=32)

# --- shared rule helpers --------------------------------------------------------------------------------------


def _type_agrees(type_field: str, member_for_type: dict[str, str]) -> Rule:
    """A rule: the member named by `type` is set, and no member of another type is."""

    def rule(value: dict[str, Any]) -> list[tuple[str, str]]:
        chosen = value.get(type_field)
        if chosen is None:
            return []
        problems = []
        wanted = member_for_type.get(chosen)
        if wanted is not None and wanted not in value:
            problems.append((wanted, f"{wanted} is required when {type_field} is {chosen}"))
        for other_type, member in member_for_type.items():
            if member in value and member != wanted:
                message = f"{member} must not be set when {type_field} is {chosen} (it belongs to {other_type})"
                problems.append((member, message))
        return problems

    return rule


def _regex_when(type_field: str, value_field: str, regex_type: str) -> Rule:
    """A rule: when `type` is the regular-expression type, `value` must compile."""

    def rule(value: dict[str, Any]) -> list[tuple[str, str]]:
        if value.get(type_field) == regex_type and isinstance(value.get(value_field), str):
            message = regex_error(value[value_field])
            return [(value_field, message)] if message else []
        return []

    return rule


# --- HTTPRoute ------------------------------------------------------------------------------------------------

# Gateway API's SectionName, the type of a rule's `name` (policies target it as `sectionName`).
_SECTION_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _section_name_error(value: str) -> str | None:
    if len(value) > 253 or not _SECTION_NAME.fullmatch(value):
        return f"invalid name {value!r}: lower-case letters, digits, '-' and '.' (such as 'chat-v1')"
    return None


RULE_NAME = Str(min_length=1, check_fn=_section_name_error)

PATH_MATCH_TYPES = ("Exact", "PathPrefix", "RegularExpression")
DEFAULT_PATH_MATCH = {"type": "PathPrefix", "value": "/"}
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")


# Gateway API's HTTPPathMatch rules for Exact and PathPrefix values (its CEL, in its order): a path the
# request could not carry literally, or one a backend would normalise differently (`/a/../admin`), is rejected.
PATH_MAX = 1024
_PATH_CHARS = re.compile(r"(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+")
_PATH_FORBIDDEN = ("//", "/./", "/../", "%2f", "%2F", "#")


def path_error(value: str) -> str | None:
    """Why `value` is not a valid Exact or PathPrefix path (also a rewrite's or redirect's path), or None."""
    if not value.startswith("/"):
        return f"must start with '/', got {value!r}"
    for forbidden in _PATH_FORBIDDEN:
        if forbidden in value:
            return f"must not contain {forbidden!r}, got {value!r}"
    for ending in ("/..", "/."):
        if value.endswith(ending):
            return f"must not end with {ending!r}, got {value!r}"
    if len(value) > PATH_MAX:
        return f"must be at most {PATH_MAX} characters, got {len(value)}"
    if not _PATH_CHARS.fullmatch(value):
        return f"must hold only path characters (letters, digits, -._~!$&'()*+,;=:@/ and %XX escapes), got {value!r}"
    return None


def _path_value_rule(match: dict[str, Any]) -> list[tuple[str, str]]:
    path_type, value = match.get("type"), match.get("value")
    if not isinstance(value, str):
        return []
    if path_type in ("Exact", "PathPrefix"):
        message = path_error(value)
        article = "an" if path_type == "Exact" else "a"
        return [("value", f"{article} {path_type} path {message}")] if message else []
    return _regex_when("type", "value", "RegularExpression")(match)


PATH_MATCH = Obj(
    {
        "type": F(Str(enum=PATH_MATCH_TYPES), default="PathPrefix"),
        "value": F(Str(), default="/"),
    },
    rules=(_path_value_rule,),
)


def _at_most(limit: int) -> Callable[[str], str | None]:
    return lambda v: None if len(v) <= limit else f"must be at most {limit} characters, got {len(v)}"


def _value_match(name: Type, value: Type) -> Obj:
    """An HTTP header or query parameter match (GRPCRoute's header match has the same shape)."""
    return Obj(
        {
            "type": F(Str(enum=("Exact", "RegularExpression")), default="Exact"),
            "name": F(name, required=True),
            "value": F(value, required=True),
        },
        rules=(_regex_when("type", "value", "RegularExpression"),),
    )


HEADER_MATCH = _value_match(HEADER_NAME, HEADER_VALUE)
# Upstream types a query parameter's name as HTTPHeaderName too; its value is at most 1024 characters.
QUERY_PARAM_MATCH = _value_match(HEADER_NAME, Str(min_length=1, check_fn=_at_most(1024)))

HTTP_ROUTE_MATCH = Obj(
    {
        "path": F(PATH_MATCH, default=DEFAULT_PATH_MATCH),
        "headers": List(HEADER_MATCH, max_items=16),
        "queryParams": List(QUERY_PARAM_MATCH, max_items=16),
        "method": Str(enum=HTTP_METHODS),
    },
    # Kubernetes keys both lists by name (listType=map); header names compare case-insensitively, query
    # parameter names exactly.
    rules=(
        unique_names("headers", "header name"),
        unique_names("queryParams", "query parameter name", fold_case=False),
    ),
)


def _path_modifier_rule(value: dict[str, Any]) -> list[tuple[str, str]]:
    problems = _type_agrees("type", {"ReplaceFullPath": "replaceFullPath", "ReplacePrefixMatch": "replacePrefixMatch"})(
        value
    )
    for member in ("replaceFullPath", "replacePrefixMatch"):
        path = value.get(member)
        message = path_error(path) if isinstance(path, str) and path else None
        if message:
            problems.append((member, f"a path {message}"))
    return problems


PATH_MODIFIER = Obj(
    {
        "type": F(Str(enum=("ReplaceFullPath", "ReplacePrefixMatch")), required=True),
        "replaceFullPath": Str(),
        "replacePrefixMatch": Str(),
    },
    rules=(_path_modifier_rule,),
)

REDIRECT_STATUS_CODES = (301, 302, 303, 307, 308)


def _redirect_status_rule(value: dict[str, Any]) -> list[tuple[str, str]]:
    code = value.get("statusCode")
    if code is not None and code not in REDIRECT_STATUS_CODES:
        codes = ", ".join(str(c) for c in REDIRECT_STATUS_CODES)
        return [("statusCode", f"unsupported value {code}: must be one of {codes}")]
    return []


REQUEST_REDIRECT = Obj(
    {
        "scheme": Str(enum=("http", "https")),
        "hostname": PRECISE_HOSTNAME,
        "path": PATH_MODIFIER,
        "port": Int(minimum=1, maximum=65535),
        "statusCode": F(Int(), default=302),
    },
    rules=(_redirect_status_rule,),
)

URL_REWRITE = Obj({"hostname": PRECISE_HOSTNAME, "path": PATH_MODIFIER})


def _mirror_rule(value: dict[str, Any]) -> list[tuple[str, str]]:
    if "percent" in value and "fraction" in value:
        return [("fraction", "set only one of percent and fraction")]
    return []


def _fraction_rule(value: dict[str, Any]) -> list[tuple[str, str]]:
    numerator, denominator = value.get("numerator"), value.get("denominator")
    if isinstance(numerator, int) and isinstance(denominator, int) and numerator > denominator:
        return [("numerator", f"must not be greater than the denominator ({denominator})")]
    return []


REQUEST_MIRROR = Obj(
    {
        "backendRef": F(Obj({k: v for k, v in BACKEND_REF.fields.items() if k != "weight"}), required=True),
        "percent": Int(minimum=0, maximum=100),
        "fraction": Obj(
            {"numerator": F(Int(minimum=0), required=True), "denominator": F(Int(minimum=1), default=100)},
            rules=(_fraction_rule,),
        ),
    },
    rules=(_mirror_rule,),
)

# Gateway API's experimental HTTPExternalAuthFilter (GEP-1494, config/crd/experimental at 4564255): an ext_authz
# service over gRPC or HTTP; the block matching `protocol` is required and the other one forbidden.
_EXTERNAL_AUTH_HEADERS = List(Str(min_length=1), max_items=64)
EXTERNAL_AUTH = Obj(
    {
        "protocol": F(Str(enum=("HTTP", "GRPC")), required=True),
        "backendRef": F(Obj({k: v for k, v in BACKEND_REF.fields.items() if k != "weight"}), required=True),
        "grpc": Obj({"allowedHeaders": _EXTERNAL_AUTH_HEADERS}),
        "http": Obj(
            {
                "path": Str(pattern=r"(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+"),
                "allowedHeaders": _EXTERNAL_AUTH_HEADERS,
                "allowedResponseHeaders": _EXTERNAL_AUTH_HEADERS,
            }
        ),
        "forwardBody": Obj({"maxSize": Int(minimum=0)}),
    },
    rules=(_type_agrees("protocol", {"HTTP": "http", "GRPC": "grpc"}),),
)

# Gateway API's CORSOrigin: `*`, or `http(s)://host[:port]` where host may start with `*.` or be `*`.
_CORS_ORIGIN = re.compile(r"\*|https?://((\*\.)?([a-zA-Z0-9\-]+\.)*[a-zA-Z0-9-]+|\*)(:[0-9]{1,5})?")


def _cors_origin_error(value: str) -> str | None:
    if len(value) > 253 or not _CORS_ORIGIN.fullmatch(value):
        return f"invalid origin {value!r}: must be '*' or scheme://host[:port] (such as 'https://app.example.com')"
    return None


def _star_alone(list_field: str, what: str) -> Rule:
    """A rule: `*` in the list means everything, so it stands alone (Gateway API's CORS CEL)."""

    def rule(value: dict[str, Any]) -> list[tuple[str, str]]:
        items = value.get(list_field) or []
        if "*" in items and len(items) > 1:
            return [(list_field, f"'*' cannot be listed alongside other {what}")]
        return []

    return rule


CORS = Obj(
    {
        "allowOrigins": List(Str(min_length=1, check_fn=_cors_origin_error), max_items=64),
        "allowCredentials": Bool(),
        "allowMethods": List(Str(enum=(*HTTP_METHODS, "*")), max_items=9),
        "allowHeaders": List(HEADER_NAME, max_items=64),
        "exposeHeaders": List(HEADER_NAME, max_items=64),
        "maxAge": F(Int(minimum=1), default=5),
    },
    # Each list is a Kubernetes `listType=set`: no value twice (compared exactly, as the API server does).
    rules=(
        unique_names("allowOrigins", "origin", key=None, fold_case=False),
        unique_names("allowMethods", "method", key=None, fold_case=False),
        unique_names("allowHeaders", "header name", key=None, fold_case=False),
        unique_names("exposeHeaders", "header name", key=None, fold_case=False),
        _star_alone("allowOrigins", "origins"),
        _star_alone("allowMethods", "methods"),
        _star_alone("allowHeaders", "headers"),
    ),
)

HTTP_FILTER_MEMBERS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestMirror": "requestMirror",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "ExtensionRef": "extensionRef",
    "CORS": "cors",
    "ExternalAuth": "externalAuth",
}

HTTP_ROUTE_FILTER = Obj(
    {
        "type": F(Str(enum=tuple(HTTP_FILTER_MEMBERS)), required=True),
        "requestHeaderModifier": HEADER_MODIFIER,
        "responseHeaderModifier": HEADER_MODIFIER,
        "requestMirror": REQUEST_MIRROR,
        "requestRedirect": REQUEST_REDIRECT,
        "urlRewrite": URL_REWRITE,
        "extensionRef": EXTENSION_REF,
        "cors": CORS,
        "externalAuth": EXTERNAL_AUTH,
    },
    rules=(_type_agrees("type", HTTP_FILTER_MEMBERS),),
)


def _backend_ref_with_filters(filter_type: Type) -> Obj:
    return Obj({**BACKEND_REF.fields, "filters": List(filter_type, max_items=16)})


def _timeouts_rule(value: dict[str, Any]) -> list[tuple[str, str]]:
    request, backend = value.get("request"), value.get("backendRequest")
    if request and backend and backend > request:
        return [("backendRequest", "must not be longer than request")]
    return []


_GATEWAY_DURATION = re.compile(r"([0-9]{1,5}(h|m|s|ms)){1,4}")


@dataclass(frozen=True)
class GatewayDuration(Duration):
    """Gateway API's Duration (GEP-2257): a Go duration restricted to whole `h`, `m`, `s` and `ms` parts."""

    def check(self, node: Any, path: str, line: int, w: Walker) -> Any:
        if isinstance(node, str) and not _GATEWAY_DURATION.fullmatch(node):
            message = "up to four whole-number parts of h, m, s or ms, such as '1m30s'"
            w.error(path, line, f"invalid duration {node!r}: {message}")
            return None
        return super().check(node, path, line, w)


TIMEOUTS = Obj({"request": GatewayDuration(), "backendRequest": GatewayDuration()}, rules=(_timeouts_rule,))

RETRY = Obj(
    {
        "codes": List(Int(minimum=400, maximum=599)),
        "attempts": Int(minimum=0),
        "backoff": GatewayDuration(),
    }
)


# Filters a list may hold once (Gateway API's "filter cannot be repeated"); RequestMirror and ExtensionRef may
# repeat.
HTTP_ONCE_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite", "CORS")
GRPC_ONCE_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier")


def _filter_list_problems(prefix: str, filters: list[Any], once: tuple[str, ...]) -> list[tuple[str, str]]:
    """One list of filters: no core filter twice, never both RequestRedirect and URLRewrite."""
    first: dict[str, int] = {}
    problems = []
    for i, f in enumerate(filters):
        kind = f.get("type") if isinstance(f, dict) else None
        if not isinstance(kind, str):
            continue
        if kind in once and kind in first:
            problems.append((f"{prefix}[{i}].type", f"{kind} filter cannot be repeated (also {prefix}[{first[kind]}])"))
        other = {"RequestRedirect": "URLRewrite", "URLRewrite": "RequestRedirect"}.get(kind)
        if other in first:
            message = f"RequestRedirect and URLRewrite filters cannot be used together (also {prefix}[{first[other]}])"
            problems.append((f"{prefix}[{i}].type", message))
        first.setdefault(kind, i)
    return problems


def _filter_lists_rule(once: tuple[str, ...]) -> Rule:
    """A rule over a route rule: its filters and each backendRef's filters obey `_filter_list_problems`."""

    def rule(value: dict[str, Any]) -> list[tuple[str, str]]:
        problems = _filter_list_problems("filters", value.get("filters") or [], once)
        for j, ref in enumerate(value.get("backendRefs") or []):
            problems += _filter_list_problems(f"backendRefs[{j}].filters", ref.get("filters") or [], once)
        return problems

    return rule


def _prefix_replacements(filters: list[Any], prefix: str) -> list[str]:
    """Relative paths of the `replacePrefixMatch` values set by these filters' redirects and rewrites."""
    found = []
    for i, f in enumerate(filters):
        for member in ("requestRedirect", "urlRewrite"):
            path = (f.get(member) or {}).get("path") or {}
            if path.get("type") == "ReplacePrefixMatch" and "replacePrefixMatch" in path:
                found.append(f"{prefix}[{i}].{member}.path.replacePrefixMatch")
    return found


def _http_rule_rule(rule: dict[str, Any]) -> list[tuple[str, str]]:
    """Gateway API: a redirect has no backends; replacePrefixMatch needs exactly one match, a PathPrefix one."""
    filters = rule.get("filters") or []
    problems = []
    if any(f.get("type") == "RequestRedirect" for f in filters) and rule.get("backendRefs"):
        problems.append(("backendRefs", "a rule with a RequestRedirect filter must not have backendRefs"))
    replacements = _prefix_replacements(filters, "filters")
    for j, ref in enumerate(rule.get("backendRefs") or []):
        replacements += _prefix_replacements(ref.get("filters") or [], f"backendRefs[{j}].filters")
    matches = rule.get("matches") or []
    single_prefix = len(matches) == 1 and (matches[0].get("path") or {}).get("type") == "PathPrefix"
    if not single_prefix:
        for where in replacements:
            problems.append((where, "replacePrefixMatch needs exactly one match, and its path a PathPrefix"))
    return problems


HTTP_ROUTE_RULE = Obj(
    {
        "name": RULE_NAME,
        "matches": F(List(HTTP_ROUTE_MATCH, max_items=64), default=[{"path": DEFAULT_PATH_MATCH}]),
        "filters": List(HTTP_ROUTE_FILTER, max_items=16),
        "backendRefs": List(_backend_ref_with_filters(HTTP_ROUTE_FILTER), max_items=16),
        "timeouts": TIMEOUTS,
        "retry": RETRY,
        "sessionPersistence": Free(),
    },
    rules=(_filter_lists_rule(HTTP_ONCE_FILTERS), _http_rule_rule),
)


MAX_ROUTE_MATCHES = 128


def _total_matches_rule(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """Gateway API: 16 rules of 64 matches each are allowed, but at most 128 matches in all."""
    total = sum(len(rule.get("matches") or []) for rule in spec.get("rules") or [])
    if total > MAX_ROUTE_MATCHES:
        return [("rules", f"{total} matches in all: a route holds at most {MAX_ROUTE_MATCHES}")]
    return []


def _unique_rule_names(spec: dict[str, Any]) -> list[tuple[str, str]]:
    seen: dict[str, int] = {}
    problems = []
    for i, rule in enumerate(spec.get("rules", [])):
        name = rule.get("name")
        if name in seen:
            problems.append((f"rules[{i}].name", f"duplicate rule name {name!r} (also rules[{seen[name]}])"))
        elif name is not None:
            seen[name] = i
    return problems


# Experimental (config/crd/experimental): attach to the Gateways marked default (`All`) or not (`None`).
USE_DEFAULT_GATEWAYS = Str(enum=("All", "None"))

HTTP_ROUTE = Obj(
    {
        "parentRefs": ROUTE_PARENT_REFS,
        "useDefaultGateways": USE_DEFAULT_GATEWAYS,
        "hostnames": HOSTNAMES,
        "rules": F(List(HTTP_ROUTE_RULE, max_items=16), default=[{"matches": [{"path": DEFAULT_PATH_MATCH}]}]),
    },
    rules=(_unique_rule_names, _total_matches_rule),
)

# --- GRPCRoute ------------------------------------------------------------------------------------------------


# Gateway API's GRPCMethodMatch patterns for Exact matches: a protobuf package-qualified service name, a method
# identifier (so `../` or `/pkg.Svc/Method` written into one of them is rejected).
_GRPC_EXACT = {
    "service": re.compile(r"\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*", re.IGNORECASE),
    "method": re.compile(r"[A-Za-z_][A-Za-z_0-9]*"),
}


def _grpc_method_rule(value: dict[str, Any]) -> list[tuple[str, str]]:
    if "service" not in value and "method" not in value:
        return [("", "set service, method or both")]
    problems = []
    for member in ("service", "method"):
        problems += _regex_when("type", member, "RegularExpression")(value)
        name = value.get(member)
        if value.get("type") == "Exact" and isinstance(name, str) and not _GRPC_EXACT[member].fullmatch(name):
            what = "a protobuf service name such as 'pkg.v1.Service'" if member == "service" else "an identifier"
            problems.append((member, f"invalid {member} {name!r}: an Exact {member} must be {what}"))
    return problems


GRPC_METHOD_MATCH = Obj(
    {
        "type": F(Str(enum=("Exact", "RegularExpression")), default="Exact"),
        "service": Str(min_length=1),
        "method": Str(min_length=1),
    },
    rules=(_grpc_method_rule,),
)

GRPC_ROUTE_MATCH = Obj(
    {"method": GRPC_METHOD_MATCH, "headers": List(HEADER_MATCH, max_items=16)},
    rules=(unique_names("headers", "header name"),),
)

GRPC_FILTER_MEMBERS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestMirror": "requestMirror",
    "ExtensionRef": "extensionRef",
}

GRPC_ROUTE_FILTER = Obj(
    {
        "type": F(Str(enum=tuple(GRPC_FILTER_MEMBERS)), required=True),
        "requestHeaderModifier": HEADER_MODIFIER,
        "responseHeaderModifier": HEADER_MODIFIER,
        "requestMirror": REQUEST_MIRROR,
        "extensionRef": EXTENSION_REF,
    },
    rules=(_type_agrees("type", GRPC_FILTER_MEMBERS),),
)

GRPC_ROUTE_RULE = Obj(
    {
        "name": RULE_NAME,
        "matches": List(GRPC_ROUTE_MATCH, max_items=64),
        "filters": List(GRPC_ROUTE_FILTER, max_items=16),
        "backendRefs": List(_backend_ref_with_filters(GRPC_ROUTE_FILTER), max_items=16),
        "sessionPersistence": Free(),
    },
    rules=(_filter_lists_rule(GRPC_ONCE_FILTERS),),
)

GRPC_ROUTE = Obj(
    {
        "parentRefs": ROUTE_PARENT_REFS,
        "useDefaultGateways": USE_DEFAULT_GATEWAYS,
        "hostnames": HOSTNAMES,
        "rules": F(List(GRPC_ROUTE_RULE, max_items=16), default=[{}]),
    },
    rules=(_unique_rule_names, _total_matches_rule),
)

# --- TLSRoute, TCPRoute, UDPRoute -----------------------------------------------------------------------------

L4_ROUTE_RULE = Obj({"name": Str(min_length=1), "backendRefs": List(BACKEND_REF, max_items=16)})
L4_HOSTNAMES_MAX = 1024  # TLSRoute's hostnames (every version), unlike HTTPRoute's 16


def _l4_route(with_hostnames: bool, hostnames_required: bool = False, max_rules: int = 16) -> Obj:
    """TLSRoute, TCPRoute and UDPRoute; `max_rules` is 1 in the versions that went standard (TLSRoute v1alpha3
    and v1, TCPRoute and UDPRoute v1), 16 in v1alpha2."""
    rules = List(L4_ROUTE_RULE, max_items=max_rules)
    fields: dict[str, Any] = {
        "parentRefs": ROUTE_PARENT_REFS,
        "useDefaultGateways": USE_DEFAULT_GATEWAYS,
        "rules": F(rules, default=[{}]),
    }
    if with_hostnames:
        # TLSRoute v1alpha3 and v1 require hostnames; v1alpha2 has them optional.
        listed = List(HOSTNAME, min_items=1 if hostnames_required else 0, max_items=L4_HOSTNAMES_MAX)
        fields["hostnames"] = F(listed, required=True) if hostnames_required else listed
    return Obj(fields, rules=(_unique_rule_names,))


_TLS_ROUTE_WITH_HOSTNAMES = _l4_route(with_hostnames=True, hostnames_required=True, max_rules=1)
_L4_ROUTE_V1 = _l4_route(with_hostnames=False, max_rules=1)


# --- BackendTLSPolicy -----------------------------------------------------------------------------------------


def _spki_pin_error(value: str) -> str | None:
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return f"invalid SPKI pin {value!r}: must be the base64 SHA-256 of a SubjectPublicKeyInfo"
    if len(digest) != 32:
        return f"invalid SPKI pin {value!r}: a SHA-256 digest is 32 bytes, this is {len(digest)}"
    return None


def _trust_rule(validation: dict[str, Any]) -> list[tuple[str, str]]:
    has_refs = bool(validation.get("caCertificateRefs"))
    has_well_known = "wellKnownCACertificates" in validation
    if has_refs and has_well_known:
        return [("wellKnownCACertificates", "set only one of caCertificateRefs and wellKnownCACertificates")]
    if not has_refs and not has_well_known:
        return [("caCertificateRefs", "set caCertificateRefs or wellKnownCACertificates")]
    return []


SUBJECT_ALT_NAME = Obj(
    {
        "type": F(Str(enum=("Hostname", "URI")), required=True),
        "hostname": HOSTNAME,
        "uri": Str(min_length=1),
    },
    rules=(_type_agrees("type", {"Hostname": "hostname", "URI": "uri"}),),
)

CA_CERTIFICATE_REF = Obj({"name": F(NAME, required=True), "group": Str(), "kind": Str(min_length=1)})

BACKEND_TLS_VALIDATION = Obj(
    {
        "caCertificateRefs": List(CA_CERTIFICATE_REF, max_items=8),
        "wellKnownCACertificates": Str(enum=("System",)),
        "hostname": F(PRECISE_HOSTNAME, required=True),
        "subjectAltNames": List(SUBJECT_ALT_NAME, max_items=5),
        # Extensions (DESIGN.md 4.1).
        "spkiPins": List(Str(min_length=1, check_fn=_spki_pin_error)),
        "crlRefs": List(SECRET_REF),
    },
    rules=(_trust_rule,),
)

BACKEND_TLS_POLICY = Obj(
    {
        "targetRefs": F(List(POLICY_TARGET_REF, min_items=1, max_items=16), required=True),
        "validation": F(BACKEND_TLS_VALIDATION, required=True),
        "options": Map(Str()),
        # Extension (DESIGN.md 4.1): the client certificate for mTLS, a Secret with tls.crt and tls.key.
        "clientCertificateRef": SECRET_REF,
    }
)

register(KindSchema("HTTPRoute", _api_versions("HTTPRoute"), HTTP_ROUTE))
register(KindSchema("GRPCRoute", _api_versions("GRPCRoute"), GRPC_ROUTE))
register(
    KindSchema(
        "TLSRoute",
        _api_versions("TLSRoute"),
        _l4_route(with_hostnames=True),
        version_specs={f"{_GROUP}/v1": _TLS_ROUTE_WITH_HOSTNAMES, f"{_GROUP}/v1alpha3": _TLS_ROUTE_WITH_HOSTNAMES},
    )
)
register(
    KindSchema(
        "TCPRoute", _api_versions("TCPRoute"), _l4_route(with_hostnames=False), version_specs={f"{_GROUP}/v1": _L4_ROUTE_V1}
    )
)
register(
    KindSchema(
        "UDPRoute", _api_versions("UDPRoute"), _l4_route(with_hostnames=False), version_specs={f"{_GROUP}/v1": _L4_ROUTE_V1}
    )
)
register(KindSchema("BackendTLSPolicy", _api_versions("BackendTLSPolicy"), BACKEND_TLS_POLICY))
