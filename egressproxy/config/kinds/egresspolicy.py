"""policy.egressproxy.io/v1alpha1: the proposal's policies that have no public schema (DESIGN.md section 4).

RegionAllowListPolicy
    targetRefs      the EgressGateway, a Backend or a route
    allowedRegions  required; region names or globs such as "eu-*"
    unknownRegion   Deny (default) | Allow, for a destination whose region cannot be determined
    geoIP           {databasePath}: a GeoIP country/region database for the resolved IP
    enforcementMode Enforce (default) | Report: count and log what would be denied, let it pass

DNSPolicy
    targetRefs      a Backend or the EgressGateway
    resolvers       ["IP:port", "[IPv6]:port"]; default: the system's
    minTTL, maxTTL  durations clamping answer TTLs; minTTL 0s is valid; minTTL <= maxTTL
    reverseLookup   {enforce, allowedSuffixes}: the resolved IP's PTR must name the requested host, or a name
                    under one of `allowedSuffixes` (an egressproxy addition, e.g. ["1e100.net"] for Google)
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from egressproxy.config.kinds import KindSchema, register
from egressproxy.config.kinds.common import POLICY_TARGET_REFS
from egressproxy.config.kinds.gatewayapi import hostname_error
from egressproxy.config.schema import F, Bool, Duration, List, Obj, Str

POLICY_V1ALPHA1 = ("policy.egressproxy.io/v1alpha1",)

_REGION = re.compile(r"[a-z0-9*]([-a-z0-9*]*[a-z0-9*])?")
_RESOLVER = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<v4>[^:\[\]]+)):(?P<port>\d{1,5})")


def region_error(value: str) -> str | None:
    if not _REGION.fullmatch(value):
        return f"invalid region {value!r}: lower-case letters, digits, '-' and '*' (such as 'eu-west-1' or 'eu-*')"
    return None


def resolver_error(value: str) -> str | None:
    """Why `value` is not `IPv4:port` or `[IPv6]:port`, or None."""
    usage = "must be IP:port, such as '10.0.0.10:53' or '[fd00::10]:53'"
    m = _RESOLVER.fullmatch(value)
    if m is None:
        return f"invalid resolver {value!r}: {usage}"
    host = m.group("v6") or m.group("v4")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"invalid resolver {value!r}: {usage}"
    if m.group("v6") is not None and address.version != 6:
        return f"invalid resolver {value!r}: {usage}"
    if not 1 <= int(m.group("port")) <= 65535:
        return f"invalid resolver {value!r}: port must be 1-65535"
    return None


def _suffix_error(value: str) -> str | None:
    return hostname_error(value.removeprefix("."), allow_wildcard=False)


REGION_ALLOW_LIST_POLICY = Obj(
    {
        "targetRefs": POLICY_TARGET_REFS,
        "allowedRegions": F(List(Str(min_length=1, check_fn=region_error), min_items=1), required=True),
        "unknownRegion": F(Str(enum=("Deny", "Allow")), default="Deny"),
        "geoIP": Obj({"databasePath": F(Str(min_length=1), required=True)}),
        "enforcementMode": Str(enum=("Enforce", "Report")),  # DESIGN.md 4.2 report mode
    }
)


def _ttl_order(spec: dict[str, Any]) -> list[tuple[str, str]]:
    low, high = spec.get("minTTL"), spec.get("maxTTL")
    if low is not None and high is not None and low > high:
        return [("minTTL", "minTTL must not be longer than maxTTL")]
    return []


DNS_POLICY = Obj(
    {
        "targetRefs": POLICY_TARGET_REFS,
        "resolvers": List(Str(min_length=1, check_fn=resolver_error)),
        "minTTL": Duration(),
        "maxTTL": Duration(),
        "reverseLookup": Obj(
            {
                "enforce": F(Bool(), default=False),
                "allowedSuffixes": List(Str(min_length=1, check_fn=_suffix_error)),
            }
        ),
    },
    rules=(_ttl_order,),
)

register(KindSchema("RegionAllowListPolicy", POLICY_V1ALPHA1, REGION_ALLOW_LIST_POLICY))
register(KindSchema("DNSPolicy", POLICY_V1ALPHA1, DNS_POLICY))
