"""egressproxy/regions.py: where a destination is (provider > label > hostname > GeoIP) and the allow-list."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from egressproxy.config.problems import ObjectRef
from egressproxy.regions import (
    RegionPolicy,
    RegionSource,
    check_address,
    check_candidate,
    filter_candidates,
    geoip_region,
    merge_region_policies,
    region_from_host,
    region_of,
)
from egressproxy.snapshot import REGION_LABEL, AIProvider, Backend, StaticHost
from egressproxy.upstreams import Upstream

REF = ObjectRef("RegionAllowListPolicy", "default", "eu")


class FakeGeoIp:
    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table

    def get(self, ip_address: str) -> Any:
        return self.table.get(ip_address)


def policy(*allowed: str, unknown: bool = False, report: bool = False, geoip: FakeGeoIp | None = None) -> RegionPolicy:
    return RegionPolicy(REF, allowed, unknown, report, "/db" if geoip else None, geoip)


@pytest.mark.parametrize(
    ("host", "region"),
    [
        ("bedrock-runtime.eu-west-1.amazonaws.com", "eu-west-1"),
        ("bedrock-runtime-fips.us-gov-west-1.amazonaws.com", "us-gov-west-1"),
        ("bedrock.ap-southeast-2.amazonaws.com", "ap-southeast-2"),
        ("europe-west4-aiplatform.googleapis.com", "europe-west4"),
        ("eu.api.openai.com", "eu"),
        ("westeurope.api.cognitive.microsoft.com", "westeurope"),
        ("api.openai.com", None),
        ("api.anthropic.com", None),
        ("my-resource.openai.azure.com", None),  # Azure OpenAI does not say its region in the name
        ("amazonaws.com.evil.example", None),
        ("bedrock-runtime.eu-west-1.amazonaws.com.evil.example", None),
    ],
)
def test_the_regional_hostname_table(host: str, region: str | None) -> None:
    assert region_from_host(host) == region


def test_the_providers_region_field_comes_before_the_label_and_the_host() -> None:
    backend = Backend(ObjectRef("Backend", "default", "ai"), "AI", labels=MappingProxyType({REGION_LABEL: "us-east-1"}))
    bedrock = AIProvider("b", "bedrock", region="eu-central-1")
    host = "bedrock-runtime.ap-south-1.amazonaws.com"
    assert region_of(Upstream(host, 443, backend=backend, provider=bedrock)) == ("eu-central-1", RegionSource.PROVIDER)
    openai = AIProvider("o", "openai", region="eu-central-1")  # only Bedrock and Vertex AI name a region
    assert region_of(Upstream(host, 443, backend=backend, provider=openai)) == ("us-east-1", RegionSource.LABEL)
    assert region_of(Upstream(host, 443)) == ("ap-south-1", RegionSource.HOSTNAME)
    assert region_of(Upstream("api.openai.com", 443)) is None


@pytest.mark.parametrize(
    ("record", "region"),
    [
        ({"continent": {"code": "EU"}, "country": {"iso_code": "DE"}}, "eu-de"),
        ({"region": "EU-West-1"}, "eu-west-1"),
        ({"country": {"iso_code": "DE"}}, None),
        (None, None),
        ("junk", None),
    ],
)
def test_a_geoip_records_region(record: Any, region: str | None) -> None:
    assert geoip_region(record) == region


def test_globs_unknown_regions_and_report_mode() -> None:
    eu = policy("eu-*", "europe-west4")
    assert check_candidate(eu, Upstream("bedrock-runtime.eu-west-1.amazonaws.com", 443)).verdict == "allow"
    assert check_candidate(eu, Upstream("europe-west4-aiplatform.googleapis.com", 443)).verdict == "allow"
    denied = check_candidate(eu, Upstream("bedrock-runtime.us-east-1.amazonaws.com", 443))
    assert (denied.allowed, denied.verdict) == (False, "deny")
    assert denied.detail == (
        "bedrock-runtime.us-east-1.amazonaws.com:443: region us-east-1 (from hostname) is not in allowedRegions [eu-*, europe-west4]"
    )
    unknown = check_candidate(eu, Upstream("api.openai.com", 443))
    assert (unknown.allowed, unknown.detail) == (False, "api.openai.com:443: region unknown (unknownRegion: denied)")
    assert check_candidate(policy("eu-*", unknown=True), Upstream("api.openai.com", 443)).allowed
    reported = check_candidate(policy("eu-*", report=True), Upstream("api.openai.com", 443))
    assert (reported.allowed, reported.would_deny, reported.verdict) == (True, True, "report")


def test_geoip_is_pending_before_dns_and_decided_on_the_address() -> None:
    db = FakeGeoIp({"192.0.2.1": {"continent": {"code": "EU"}, "country": {"iso_code": "FR"}}})
    eu = policy("eu-*", geoip=db)
    pending = check_candidate(eu, Upstream("api.example.test", 443))
    assert (pending.pending, pending.allowed) == (True, True)
    assert check_address(eu, "api.example.test:443", "192.0.2.1").verdict == "allow"
    elsewhere = check_address(eu, "api.example.test:443", "198.51.100.1")
    assert elsewhere.verdict == "deny" and "region unknown" in elsewhere.detail
    na = check_address(policy("na-*", geoip=db), "api.example.test:443", "192.0.2.1")
    assert na.detail == "api.example.test:443 (192.0.2.1): region eu-fr (from geoip) is not in allowedRegions [na-*]"
    parent = Upstream("api.example.test", 443, parent=StaticHost("parent", 3128))
    assert not check_candidate(eu, parent).pending  # a parent resolves the name: GeoIP cannot be ours


def test_filtering_keeps_allowed_and_pending_candidates_and_denies_when_none_is_left() -> None:
    eu, us = Upstream("bedrock-runtime.eu-west-1.amazonaws.com", 443), Upstream("bedrock-runtime.us-east-1.amazonaws.com", 443)
    kept = filter_candidates((us, eu), lambda u: policy("eu-*"))
    assert [u.host for u in kept.kept] == [eu.host] and kept.denial is None
    assert kept.kept[0].region_check is not None and kept.kept[0].region_check.region == "eu-west-1"
    assert [c.verdict for c in kept.checks] == ["deny", "allow"]
    none_left = filter_candidates((us,), lambda u: policy("eu-*"))
    assert none_left.kept == () and none_left.denial is not None and none_left.denial.region == "us-east-1"
    unpoliced = filter_candidates((us,), lambda u: None)
    assert unpoliced.kept == (us,) and unpoliced.checks == ()


def test_policies_merge_field_by_field_most_specific_first() -> None:
    db = FakeGeoIp({})
    route = RegionPolicy(ObjectRef("RegionAllowListPolicy", "default", "route"), ("ap-*",), sets=frozenset({"allowedRegions"}))
    gateway = RegionPolicy(REF, ("eu-*",), True, True, "/db", db, frozenset({"allowedRegions", "unknownRegion", "geoIP", "enforcementMode"}))
    merged = merge_region_policies((route, gateway))
    assert (merged.ref, merged.allowed, merged.unknown_allowed, merged.report, merged.geoip) == (route.ref, ("ap-*",), True, True, db)
