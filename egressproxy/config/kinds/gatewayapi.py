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
from typing import Any

from egressproxy.config.kinds import KindSchema, register
from egressproxy.config.kinds.common import (
    BACKEND_REF,
    EXTENSION_REF,
    HEADER_MODIFIER,
    NAME,
    PARENT_REF,
    POLICY_TARGET_REFS,
    SECRET_REF,
)
from egressproxy.config.schema import F, Bool, Duration, Free, Int, List, Map, Obj, Str, Type

__all__ = [
    "ROUTE_PARENT_REF",
    "HOSTNAME",
    "PRECISE_HOSTNAME",
    "hostname_error",
    "regex_error",
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
    try:
        return f" (write the IDNA form {value.lower().encode('idna').decode('ascii')!r})"
    except UnicodeError:
        return ""


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
    return None


HOSTNAME = Str(min_length=1, check_fn=hostname_error)
PRECISE_HOSTNAME = Str(min_length=1, check_fn=_precise_hostname_error)
HOSTNAMES = List(HOSTNAME)

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
ROUTE_PARENT_REFS = List(ROUTE_PARENT_REF)

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

PATH_MATCH_TYPES = ("Exact", "PathPrefix", "RegularExpression")
DEFAULT_PATH_MATCH = {"type": "PathPrefix", "value": "/"}
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")


def _path_value_rule(match: dict[str, Any]) -> list[tuple[str, str]]:
    path_type, value = match.get("type"), match.get("value")
    if not isinstance(value, str):
        return []
    if path_type in ("Exact", "PathPrefix") and not value.startswith("/"):
        return [("value", f"a {path_type} path must start with '/', got {value!r}")]
    return _regex_when("type", "value", "RegularExpression")(match)


PATH_MATCH = Obj(
    {
        "type": F(Str(enum=PATH_MATCH_TYPES), default="PathPrefix"),
        "value": F(Str(), default="/"),
    },
    rules=(_path_value_rule,),
)

# HTTP header and query parameter matches share one shape.
VALUE_MATCH = Obj(
    {
        "type": F(Str(enum=("Exact", "RegularExpression")), default="Exact"),
        "name": F(Str(min_length=1), required=True),
        "value": F(Str(), required=True),
    },
    rules=(_regex_when("type", "value", "RegularExpression"),),
)

HTTP_ROUTE_MATCH = Obj(
    {
        "path": F(PATH_MATCH, default=DEFAULT_PATH_MATCH),
        "headers": List(VALUE_MATCH),
        "queryParams": List(VALUE_MATCH),
        "method": Str(enum=HTTP_METHODS),
    }
)


def _path_modifier_rule(value: dict[str, Any]) -> list[tuple[str, str]]:
    return _type_agrees(
        "type", {"ReplaceFullPath": "replaceFullPath", "ReplacePrefixMatch": "replacePrefixMatch"}
    )(value)


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

CORS = Obj(
    {
        "allowOrigins": List(Str(min_length=1)),
        "allowCredentials": Bool(),
        "allowMethods": List(Str(min_length=1)),
        "allowHeaders": List(Str(min_length=1)),
        "exposeHeaders": List(Str(min_length=1)),
        "maxAge": F(Int(minimum=0), default=5),
    }
)

HTTP_FILTER_MEMBERS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestMirror": "requestMirror",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "ExtensionRef": "extensionRef",
    "CORS": "cors",
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
    },
    rules=(_type_agrees("type", HTTP_FILTER_MEMBERS),),
)


def _backend_ref_with_filters(filter_type: Type) -> Obj:
    return Obj({**BACKEND_REF.fields, "filters": List(filter_type)})


def _timeouts_rule(value: dict[str, Any]) -> list[tuple[str, str]]:
    request, backend = value.get("request"), value.get("backendRequest")
    if request and backend and backend > request:
        return [("backendRequest", "must not be longer than request")]
    return []


TIMEOUTS = Obj({"request": Duration(), "backendRequest": Duration()}, rules=(_timeouts_rule,))

RETRY = Obj(
    {
        "codes": List(Int(minimum=400, maximum=599)),
        "attempts": Int(minimum=0),
        "backoff": Duration(),
    }
)


def _http_filters_rule(rule: dict[str, Any]) -> list[tuple[str, str]]:
    """Gateway API: a rule cannot both redirect and rewrite, and a redirect has no backends."""
    types = [f.get("type") for f in rule.get("filters", [])]
    problems = []
    if "RequestRedirect" in types and "URLRewrite" in types:
        problems.append(("filters", "RequestRedirect and URLRewrite filters cannot be used together"))
    if "RequestRedirect" in types and rule.get("backendRefs"):
        problems.append(("backendRefs", "a rule with a RequestRedirect filter must not have backendRefs"))
    for once in ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite", "CORS"):
        if types.count(once) > 1:
            problems.append(("filters", f"at most one {once} filter per rule"))
    return problems


HTTP_ROUTE_RULE = Obj(
    {
        "name": Str(min_length=1),
        "matches": F(List(HTTP_ROUTE_MATCH), default=[{"path": DEFAULT_PATH_MATCH}]),
        "filters": List(HTTP_ROUTE_FILTER),
        "backendRefs": List(_backend_ref_with_filters(HTTP_ROUTE_FILTER)),
        "timeouts": TIMEOUTS,
        "retry": RETRY,
        "sessionPersistence": Free(),
    },
    rules=(_http_filters_rule,),
)


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


HTTP_ROUTE = Obj(
    {
        "parentRefs": ROUTE_PARENT_REFS,
        "hostnames": HOSTNAMES,
        "rules": F(List(HTTP_ROUTE_RULE), default=[{"matches": [{"path": DEFAULT_PATH_MATCH}]}]),
    },
    rules=(_unique_rule_names,),
)

# --- GRPCRoute ------------------------------------------------------------------------------------------------


def _grpc_method_rule(value: dict[str, Any]) -> list[tuple[str, str]]:
    if "service" not in value and "method" not in value:
        return [("", "set service, method or both")]
    problems = []
    for member in ("service", "method"):
        problems += _regex_when("type", member, "RegularExpression")(value)
    return problems


GRPC_METHOD_MATCH = Obj(
    {
        "type": F(Str(enum=("Exact", "RegularExpression")), default="Exact"),
        "service": Str(min_length=1),
        "method": Str(min_length=1),
    },
    rules=(_grpc_method_rule,),
)

GRPC_ROUTE_MATCH = Obj({"method": GRPC_METHOD_MATCH, "headers": List(VALUE_MATCH)})

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
        "name": Str(min_length=1),
        "matches": List(GRPC_ROUTE_MATCH),
        "filters": List(GRPC_ROUTE_FILTER),
        "backendRefs": List(_backend_ref_with_filters(GRPC_ROUTE_FILTER)),
        "sessionPersistence": Free(),
    }
)

GRPC_ROUTE = Obj(
    {
        "parentRefs": ROUTE_PARENT_REFS,
        "hostnames": HOSTNAMES,
        "rules": F(List(GRPC_ROUTE_RULE), default=[{}]),
    },
    rules=(_unique_rule_names,),
)

# --- TLSRoute, TCPRoute, UDPRoute -----------------------------------------------------------------------------

L4_ROUTE_RULE = Obj({"name": Str(min_length=1), "backendRefs": List(BACKEND_REF)})


def _l4_route(with_hostnames: bool, hostnames_required: bool = False) -> Obj:
    fields: dict[str, Any] = {"parentRefs": ROUTE_PARENT_REFS, "rules": F(List(L4_ROUTE_RULE), default=[{}])}
    if with_hostnames:
        # TLSRoute v1alpha3 and v1 require 1 to 16 hostnames; v1alpha2 has them optional.
        fields["hostnames"] = F(List(HOSTNAME, min_items=1), required=True) if hostnames_required else HOSTNAMES
    return Obj(fields, rules=(_unique_rule_names,))


_TLS_ROUTE_WITH_HOSTNAMES = _l4_route(with_hostnames=True, hostnames_required=True)


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
        "caCertificateRefs": List(CA_CERTIFICATE_REF),
        "wellKnownCACertificates": Str(enum=("System",)),
        "hostname": F(PRECISE_HOSTNAME, required=True),
        "subjectAltNames": List(SUBJECT_ALT_NAME),
        # Extensions (DESIGN.md 4.1).
        "spkiPins": List(Str(min_length=1, check_fn=_spki_pin_error)),
        "crlRefs": List(SECRET_REF),
    },
    rules=(_trust_rule,),
)

BACKEND_TLS_POLICY = Obj(
    {
        "targetRefs": F(POLICY_TARGET_REFS, required=True),
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
register(KindSchema("TCPRoute", _api_versions("TCPRoute"), _l4_route(with_hostnames=False)))
register(KindSchema("UDPRoute", _api_versions("UDPRoute"), _l4_route(with_hostnames=False)))
register(KindSchema("BackendTLSPolicy", _api_versions("BackendTLSPolicy"), BACKEND_TLS_POLICY))
