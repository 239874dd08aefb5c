"""Where a destination is, and whether a RegionAllowListPolicy lets traffic go there (DESIGN.md 4.2 "Regions").

A destination's region comes from the first source that knows it, in this order:

1. `provider`: the AI provider's explicit region (Bedrock `region`, Vertex AI `region`/`location`);
2. `label`: its Backend's label `topology.kubernetes.io/region`;
3. `hostname`: the regional host name the gateway will dial (a provider's `hostOverride` included), read
   with `REGIONAL_HOSTS` below;
4. `geoip`: the policy's GeoIP database, for the address the name resolved to. Only the dialer knows that
   address, so this source is checked in the destination check (egressproxy/engine/destinations.py), the one
   place every connection the gateway opens passes through, after the SSRF guard chose the address.

Sources 1-3 are known before any DNS query: `check_candidate` decides them when the request is decided, so a
failover candidate outside the allowed regions is filtered out and never tried. A candidate whose region only
GeoIP can tell is kept, marked `pending`, and decided when it is dialled.

Nothing here touches the network; the GeoIP reader is opened once, when the snapshot is compiled.
"""

from __future__ import annotations

import enum
import fnmatch
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from egressproxy.config.problems import ObjectRef

if TYPE_CHECKING:
    from egressproxy.upstreams import Upstream

__all__ = [
    "REGION_NOT_ALLOWED",
    "REGIONAL_HOSTS",
    "GeoIpReader",
    "RegionCheck",
    "RegionFilter",
    "RegionPolicy",
    "RegionSource",
    "check_address",
    "check_candidate",
    "filter_candidates",
    "merge_region_policies",
    "region_from_host",
    "region_of",
]


REGION_NOT_ALLOWED = "region-not-allowed"


class RegionSource(enum.Enum):
    PROVIDER = "provider"
    LABEL = "label"
    HOSTNAME = "hostname"
    GEOIP = "geoip"


# The regional host names the gateway knows, one documented table (docs/policies.md shows it). Each entry: what
# it covers, a pattern over the canonical host name, and the group naming the region. Azure OpenAI
# (`<resource>.openai.azure.com`) and Anthropic (`api.anthropic.com`) do not say a region in their host names:
# give such Backends the label, or a GeoIP database.
REGIONAL_HOSTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # bedrock-runtime.eu-west-1.amazonaws.com, bedrock-runtime-fips.us-east-1..., any AWS regional service
    ("AWS (Bedrock and every regional service)", re.compile(r"[a-z0-9-]+\.(?P<region>[a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-\d+)\.amazonaws\.com")),
    # europe-west4-aiplatform.googleapis.com
    ("Google Vertex AI", re.compile(r"(?P<region>[a-z]+-[a-z]+\d+)-aiplatform\.googleapis\.com")),
    # eu.api.openai.com (OpenAI's data-residency endpoints)
    ("OpenAI regional endpoints", re.compile(r"(?P<region>[a-z]{2})\.api\.openai\.com")),
    # westeurope.api.cognitive.microsoft.com (Azure AI services' regional endpoints)
    ("Azure AI regional endpoints", re.compile(r"(?P<region>[a-z0-9]+)\.api\.cognitive\.microsoft\.com")),
)

_EXPLICIT_REGION_PROVIDERS = ("bedrock", "vertexAi", "vertexai")


def region_from_host(host: str) -> str | None:
    """The region a regional host name says (`REGIONAL_HOSTS`), or None."""
    for _, pattern in REGIONAL_HOSTS:
        m = pattern.fullmatch(host)
        if m is not None:
            return m.group("region")
    return None


def region_of(upstream: Upstream) -> tuple[str, RegionSource] | None:
    """The region of a candidate from the sources known before DNS (provider, label, hostname), or None."""
    provider = upstream.provider
    if provider is not None and provider.kind in _EXPLICIT_REGION_PROVIDERS and provider.region:
        return provider.region.lower(), RegionSource.PROVIDER
    backend = upstream.backend
    if backend is not None and backend.region:
        return backend.region.lower(), RegionSource.LABEL
    region = region_from_host(upstream.host)
    if region is not None:
        return region, RegionSource.HOSTNAME
    return None


class GeoIpReader(Protocol):
    """What the GeoIP source needs from a database reader (`maxminddb.Reader` satisfies it)."""

    def get(self, ip_address: str) -> Any: ...


def geoip_region(record: Any) -> str | None:
    """A GeoIP record's region: its own `region` string when the database has one (a database built for this
    gateway), else `<continent>-<country>` from a GeoLite2/GeoIP2 Country record, lower-case (`eu-de`)."""
    if not isinstance(record, dict):
        return None
    own = record.get("region")
    if isinstance(own, str) and own:
        return own.lower()
    continent = (record.get("continent") or {}).get("code")
    country = (record.get("country") or {}).get("iso_code")
    if isinstance(continent, str) and isinstance(country, str):
        return f"{continent}-{country}".lower()
    return None


@dataclass(frozen=True, slots=True)
class RegionPolicy:
    """One RegionAllowListPolicy, compiled: its globs, what an unknown region gets, its GeoIP reader."""

    ref: ObjectRef
    allowed: tuple[str, ...]
    unknown_allowed: bool = False
    report: bool = False  # enforcementMode Report: a denial is counted and logged, the traffic passes
    geoip_path: str | None = None
    geoip: GeoIpReader | None = field(default=None, compare=False, repr=False)
    sets: frozenset[str] = frozenset()  # the spec fields the policy sets (a merge takes only those)

    @property
    def name(self) -> str:
        return str(self.ref)

    def allows(self, region: str) -> bool:
        return any(fnmatch.fnmatchcase(region, pattern) for pattern in self.allowed)

    def to_dump(self) -> dict[str, Any]:
        return {
            "allowedRegions": list(self.allowed),
            "unknownRegion": "Allow" if self.unknown_allowed else "Deny",
            "geoIP": self.geoip_path,
            "enforcementMode": "Report" if self.report else "Enforce",
        }


def merge_region_policies(policies: tuple[RegionPolicy, ...]) -> RegionPolicy:
    """Policies most specific first, merged field by field (DESIGN.md 4: the most specific that sets a field
    wins it; `allowedRegions` is replaced whole). The merge names the most specific policy."""
    first = policies[0]

    def pick(name: str) -> RegionPolicy:
        return next((p for p in policies if name in p.sets), first)

    geo = pick("geoIP")
    return RegionPolicy(
        first.ref,
        pick("allowedRegions").allowed,
        pick("unknownRegion").unknown_allowed,
        pick("enforcementMode").report,
        geo.geoip_path,
        geo.geoip,
        frozenset().union(*(p.sets for p in policies)),
    )


@dataclass(frozen=True, slots=True)
class RegionCheck:
    """The outcome for one destination: the region found (and which source said so), and whether it passes.

    `pending`: only GeoIP can tell, at dial time. `would_deny` with `allowed` True: a Report-mode denial."""

    policy: RegionPolicy
    allowed: bool
    region: str | None = None
    source: RegionSource | None = None
    pending: bool = False
    would_deny: bool = False
    destination: str = ""

    @property
    def verdict(self) -> str:
        """`allow`, `deny`, `report` (Report mode: would deny, passes) or `pending` (GeoIP decides at dial)."""
        if self.pending:
            return "pending"
        if self.would_deny:
            return "report" if self.allowed else "deny"
        return "allow"

    def to_dump(self) -> dict[str, Any]:
        """explain's `regions[]` entry."""
        return {
            "policy": self.policy.name,
            "destination": self.destination,
            "region": self.region,
            "source": self.source.value if self.source is not None else None,
            "verdict": self.verdict,
            "detail": self.detail,
        }

    @property
    def detail(self) -> str:
        """Why, for the denial message, the log line and explain (names the region and its source)."""
        allowed = ", ".join(self.policy.allowed)
        if self.pending:
            return f"{self.destination}: region unknown before DNS; the GeoIP database decides at dial time"
        if self.region is None:
            unknown = "allowed" if self.policy.unknown_allowed else "denied"
            return f"{self.destination}: region unknown (unknownRegion: {unknown})"
        verb = "is in" if self.policy.allows(self.region) else "is not in"
        return f"{self.destination}: region {self.region} (from {self.source.value if self.source else '?'}) {verb} allowedRegions [{allowed}]"


def _outcome(policy: RegionPolicy, region: str | None, source: RegionSource | None, destination: str) -> RegionCheck:
    ok = policy.allows(region) if region is not None else policy.unknown_allowed
    if ok:
        return RegionCheck(policy, True, region, source, destination=destination)
    return RegionCheck(policy, policy.report, region, source, would_deny=True, destination=destination)


def check_candidate(policy: RegionPolicy, upstream: Upstream) -> RegionCheck:
    """Decide a candidate before DNS; `pending` when only the policy's GeoIP database can say."""
    where = f"{upstream.host}:{upstream.port}"
    found = region_of(upstream)
    if found is not None:
        return _outcome(policy, found[0], found[1], where)
    if policy.geoip is not None and upstream.parent is None:
        return RegionCheck(policy, True, pending=True, destination=where)
    return _outcome(policy, None, None, where)


def check_address(policy: RegionPolicy, destination: str, address: str) -> RegionCheck:
    """Decide a pending candidate by the address it resolved to (GeoIP), at dial time."""
    region: str | None = None
    if policy.geoip is not None:
        try:
            region = geoip_region(policy.geoip.get(str(ipaddress.ip_address(address))))
        except ValueError:
            region = None
    return _outcome(policy, region, RegionSource.GEOIP if region is not None else None, f"{destination} ({address})")



@dataclass(frozen=True, slots=True)
class RegionFilter:
    """Candidates after the region check: the ones that may be tried (each carrying its check for the dialer),
    every check made (for explain), and the denial when none is left."""

    kept: tuple[Upstream, ...]
    checks: tuple[RegionCheck, ...]
    denial: RegionCheck | None = None


def filter_candidates(
    candidates: tuple[Upstream, ...], policy_for: Callable[[Upstream], RegionPolicy | None]
) -> RegionFilter:
    """Drop the candidates whose region a policy refuses (before any is tried); keep Report-mode refusals and
    pending (GeoIP) ones, each with its check on `Upstream.region_check` for the dial-time decision."""
    kept: list[Upstream] = []
    checks: list[RegionCheck] = []
    for upstream in candidates:
        policy = policy_for(upstream)
        if policy is None:
            kept.append(upstream)
            continue
        check = check_candidate(policy, upstream)
        checks.append(check)
        if check.allowed:
            kept.append(replace(upstream, region_check=check))
    denial = next((c for c in checks if not c.allowed), None) if candidates and not kept else None
    return RegionFilter(tuple(kept), tuple(checks), denial)
