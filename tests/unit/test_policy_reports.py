"""egressproxy/engine/policy_reports.py: Report-mode denials counted, logged and traced; region checks in the
flow's decision trace (what mitmweb shows)."""

from __future__ import annotations

import logging

import pytest
from mitmproxy.test import tflow

from egressproxy.config.problems import ObjectRef
from egressproxy.engine.policy_reports import note_region_checks, note_reports
from egressproxy.metrics import GatewayMetrics
from egressproxy.regions import RegionPolicy, check_candidate
from egressproxy.request_policies import PolicyReport
from egressproxy.upstreams import Upstream
from tests.support.trace import trace_lines


def test_a_report_is_counted_logged_and_commented(caplog: pytest.LogCaptureFixture) -> None:
    metrics, flow = GatewayMetrics(), tflow.tflow()
    with caplog.at_level(logging.INFO, logger="egressproxy"):
        note_reports(metrics, flow, [PolicyReport("rbac-denied", "TrafficPolicy/ns/p", "no Allow expression of rbac is true")])
    labels = {"reason": "rbac-denied", "policy": "TrafficPolicy/ns/p"}
    assert metrics.registry.get_sample_value("egress_policy_reports_total", labels) == 1
    assert trace_lines(flow) == ["report TrafficPolicy/ns/p: report (rbac-denied)"]
    assert "report: TrafficPolicy/ns/p would deny GET address with rbac-denied (enforcementMode Report)" in caplog.text


def test_region_checks_go_on_the_comment() -> None:
    flow = tflow.tflow()
    policy = RegionPolicy(ObjectRef("RegionAllowListPolicy", "ns", "eu"), ("eu-*",))
    checks = [check_candidate(policy, Upstream("bedrock-runtime.us-east-1.amazonaws.com", 443))]
    note_region_checks(flow, checks)
    assert trace_lines(flow) == [(
        "region RegionAllowListPolicy/ns/eu: deny (bedrock-runtime.us-east-1.amazonaws.com:443: region us-east-1 "
        "(from hostname) is not in allowedRegions [eu-*])"
    )]
    note_region_checks(flow, [])
    assert len(trace_lines(flow)) == 1
