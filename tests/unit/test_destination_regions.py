"""The region check in the one dialer's destination check (egressproxy/engine/destinations.py): GeoIP of the
checked address decides a candidate left `pending`, a dial no request decision checked (a tunnel) gets the
gateway's policy, a decided candidate is not checked twice, and Report mode counts instead of refusing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from egressproxy.engine.destinations import Destination, DestinationCheck
from egressproxy.flowrecord import ConnectionRecord
from egressproxy.metrics import GatewayMetrics
from egressproxy.regions import RegionCheck, check_candidate
from egressproxy.resolver import Resolver
from egressproxy.snapshot import Snapshot
from egressproxy.upstreams import Upstream
from tests.support.addon_state import compile_snapshot
from tests.support.geoip import write_country_db

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: gw}}
spec:
  listeners: [{{name: tls, protocol: TLS, tls: {{mode: Passthrough}}}}]
  upstreamTLS:
    hostAliases: [{{ip: 127.0.0.1, hostnames: [api.example.test]}}]
---
apiVersion: policy.egressproxy.io/v1alpha1
kind: RegionAllowListPolicy
metadata: {{name: regions}}
spec:
  targetRefs: [{{group: clrk.apoxy.dev, kind: EgressGateway, name: gw}}]
  allowedRegions: [{allowed}]
  geoIP: {{databasePath: {db}}}
  {mode}
"""


def setup(tmp_path: Path, allowed: str, mode: str = "") -> tuple[Snapshot, DestinationCheck, GatewayMetrics]:
    db = write_country_db(tmp_path / "geo.mmdb", {"127.0.0.0/8": ("EU", "DE")})
    snapshot = compile_snapshot(CONFIG.format(allowed=allowed, db=db, mode=mode))
    metrics = GatewayMetrics()
    return snapshot, DestinationCheck(Resolver(metrics), metrics), metrics


def dial(check: DestinationCheck, snapshot: Snapshot, record: ConnectionRecord) -> Destination:
    return asyncio.run(check.check(snapshot, record, "api.example.test", 443))


def test_an_unchecked_dial_gets_the_gateways_policy_by_geoip(tmp_path: Path) -> None:
    snapshot, check, metrics = setup(tmp_path, '"na-*"')
    refused = dial(check, snapshot, ConnectionRecord())
    assert refused.address is None and refused.denial is not None
    assert (refused.denial.reason, refused.denial.policy) == ("region-not-allowed", "RegionAllowListPolicy/default/regions")
    assert refused.denial.message == (
        "api.example.test:443 (127.0.0.1): region eu-de (from geoip) is not in allowedRegions [na-*]"
    )
    assert metrics.registry.get_sample_value("egress_denials_total", {"reason": "region-not-allowed"}) == 1
    snapshot, check, _ = setup(tmp_path, '"eu-*"')
    assert dial(check, snapshot, ConnectionRecord()).address == "127.0.0.1"


def test_a_pending_candidate_is_decided_on_its_address_and_a_decided_one_is_not_checked_again(tmp_path: Path) -> None:
    snapshot, check, _ = setup(tmp_path, '"na-*"')
    policy = snapshot.compiled.region_policy(snapshot.policies)
    assert policy is not None
    pending = ConnectionRecord()
    upstream = Upstream("api.example.test", 443)
    pending.upstreams[upstream.key] = Upstream("api.example.test", 443, region_check=check_candidate(policy, upstream))
    assert dial(check, snapshot, pending).denial is not None
    decided = ConnectionRecord()  # e.g. allowed by a route's own policy when the request was decided
    decided.upstreams[upstream.key] = Upstream("api.example.test", 443, region_check=RegionCheck(policy, True, "na-east"))
    assert dial(check, snapshot, decided).address == "127.0.0.1"


def test_report_mode_dials_and_counts(tmp_path: Path) -> None:
    snapshot, check, metrics = setup(tmp_path, '"na-*"', mode="enforcementMode: Report")
    assert dial(check, snapshot, ConnectionRecord()).address == "127.0.0.1"
    labels = {"reason": "region-not-allowed", "policy": "RegionAllowListPolicy/default/regions"}
    assert metrics.registry.get_sample_value("egress_policy_reports_total", labels) == 1
    assert metrics.registry.get_sample_value("egress_denials_total", {"reason": "region-not-allowed"}) is None
