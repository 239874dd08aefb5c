"""policy.egressproxy.io/v1alpha1: RegionAllowListPolicy and DNSPolicy (DESIGN.md section 4)."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from egressproxy.config.kinds.egresspolicy import resolver_error
from egressproxy.config.loader import load_text


def spec_of(text: str) -> dict[str, Any]:
    result = load_text(textwrap.dedent(text), "t.yaml")
    assert [str(p) for p in result.problems] == []
    assert len(result.resources) == 1
    return result.resources[0].spec


def problems_of(text: str) -> list[str]:
    return [str(p) for p in load_text(textwrap.dedent(text), "t.yaml").problems]


def head(kind: str) -> str:
    return f"apiVersion: policy.egressproxy.io/v1alpha1\nkind: {kind}\nmetadata: {{name: x, namespace: ns}}\nspec:\n"


def test_region_allow_list_policy_with_every_field() -> None:
    spec = spec_of(
        head("RegionAllowListPolicy")
        + """\
  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: egress}]
  allowedRegions: [eu-west-1, "eu-*", europe-west4]
  unknownRegion: Allow
  geoIP: {databasePath: /data/GeoLite2-Country.mmdb}
"""
    )
    assert spec == {
        "targetRefs": [{"group": "clrk.apoxy.dev", "kind": "EgressGateway", "name": "egress"}],
        "allowedRegions": ["eu-west-1", "eu-*", "europe-west4"],
        "unknownRegion": "Allow",
        "geoIP": {"databasePath": "/data/GeoLite2-Country.mmdb"},
    }


def test_region_allow_list_policy_denies_unknown_regions_by_default() -> None:
    assert spec_of(head("RegionAllowListPolicy") + "  allowedRegions: [eu-west-1]\n")["unknownRegion"] == "Deny"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("  unknownRegion: Deny\n", "t.yaml:5: RegionAllowListPolicy/ns/x: spec.allowedRegions: required field is missing"),
        ("  allowedRegions: []\n", "t.yaml:5: RegionAllowListPolicy/ns/x: spec.allowedRegions: must have at least 1 item(s)"),
        (
            "  allowedRegions: [EU West]\n",
            "t.yaml:5: RegionAllowListPolicy/ns/x: spec.allowedRegions[0]: invalid region 'EU West': "
            "lower-case letters, digits, '-' and '*' (such as 'eu-west-1' or 'eu-*')",
        ),
        (
            "  allowedRegions: [eu-west-1]\n  unknownRegion: Block\n",
            "t.yaml:6: RegionAllowListPolicy/ns/x: spec.unknownRegion: unsupported value 'Block': must be one of Deny, Allow",
        ),
        (
            "  allowedRegions: [eu-west-1]\n  geoIP: {path: /x.mmdb}\n",
            "t.yaml:6: RegionAllowListPolicy/ns/x: spec.geoIP.path: unknown field\n"
            "t.yaml:6: RegionAllowListPolicy/ns/x: spec.geoIP.databasePath: required field is missing",
        ),
    ],
)
def test_region_allow_list_policy_problems(body: str, expected: str) -> None:
    assert "\n".join(problems_of(head("RegionAllowListPolicy") + body)) == expected


def test_dns_policy_with_every_field() -> None:
    spec = spec_of(
        head("DNSPolicy")
        + """\
  targetRefs: [{group: gateway.kgateway.dev, kind: Backend, name: api}]
  resolvers: ["10.0.0.10:53", "[fd00::10]:5353"]
  minTTL: 0s
  maxTTL: 300s
  reverseLookup:
    enforce: true
    allowedSuffixes: [1e100.net, .amazonaws.com]
"""
    )
    assert spec == {
        "targetRefs": [{"group": "gateway.kgateway.dev", "kind": "Backend", "name": "api"}],
        "resolvers": ["10.0.0.10:53", "[fd00::10]:5353"],
        "minTTL": 0.0,
        "maxTTL": 300.0,
        "reverseLookup": {"enforce": True, "allowedSuffixes": ["1e100.net", ".amazonaws.com"]},
    }


def test_dns_policy_reverse_lookup_is_not_enforced_unless_asked() -> None:
    assert spec_of(head("DNSPolicy") + "  reverseLookup: {}\n")["reverseLookup"] == {"enforce": False}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("  minTTL: 10m\n  maxTTL: 1m\n", "t.yaml:5: DNSPolicy/ns/x: spec.minTTL: minTTL must not be longer than maxTTL"),
        ("  minTTL: -1s\n", "t.yaml:5: DNSPolicy/ns/x: spec.minTTL: duration must not be negative, got '-1s'"),
        (
            "  resolvers: [dns.example.com:53]\n",
            "t.yaml:5: DNSPolicy/ns/x: spec.resolvers[0]: invalid resolver 'dns.example.com:53': "
            "must be IP:port, such as '10.0.0.10:53' or '[fd00::10]:53'",
        ),
        ("  resolvers: ['10.0.0.10:99999']\n", "t.yaml:5: DNSPolicy/ns/x: spec.resolvers[0]: invalid resolver '10.0.0.10:99999': port must be 1-65535"),
        (
            "  reverseLookup: {enforce: yes please}\n",
            "t.yaml:5: DNSPolicy/ns/x: spec.reverseLookup.enforce: expected true or false, got string",
        ),
        (
            "  reverseLookup: {allowedSuffixes: ['*.example.com']}\n",
            "t.yaml:5: DNSPolicy/ns/x: spec.reverseLookup.allowedSuffixes[0]: invalid hostname '*.example.com': "
            "a wildcard is not allowed here",
        ),
    ],
)
def test_dns_policy_problems(body: str, expected: str) -> None:
    assert "\n".join(problems_of(head("DNSPolicy") + body)) == expected


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("10.0.0.10:53", True),
        ("[::1]:53", True),
        ("[2001:db8::1]:5353", True),
        ("10.0.0.10", False),
        ("::1:53", False),
        ("[10.0.0.1]:53", False),
        ("10.0.0.10:0", False),
        ("10.0.0.10:", False),
        ("localhost:53", False),
    ],
)
def test_resolver_addresses(value: str, ok: bool) -> None:
    assert (resolver_error(value) is None) is ok
