"""TrafficPolicy `ai` compiled once per snapshot (compiler/ai_policy_forms.py) and merged per request part by
part, most specific first (prompt_guard.AiPolicyTable), as `decide_request` hands it to the data plane."""

from __future__ import annotations

from egressproxy.decisions import RequestView, decide_request
from egressproxy.pii_detectors import Detector
from tests.support.addon_state import compile_snapshot

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners: [{name: http, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: llm}
spec:
  parentRefs: [{name: eg, sectionName: http}]
  hostnames: [llm.example.test]
  rules: [{}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other}
spec:
  parentRefs: [{name: eg, sectionName: http}]
  hostnames: [other.example.test]
  rules: [{}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: gateway-wide}
spec:
  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}]
  ai:
    models: {denied: ["gpt-3.5*"]}
    promptGuard:
      request:
        regex: {action: MASK, builtins: [Email]}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: route}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: llm}]
  ai:
    promptGuard:
      request:
        customResponse: {message: nope}
        regex:
          action: REJECT
          builtins: [CreditCard, CREDIT_CARD, Ssn]
          matches: [{pattern: 'ACME-\\d+', name: code}]
    defaults: [{field: temperature, value: 0.5}]
"""


def _ai(host: str):  # type: ignore[no-untyped-def]
    snapshot = compile_snapshot(CONFIG)
    listener = snapshot.gateway.listeners[0]
    decision = decide_request(snapshot, listener, RequestView(host, 80, "POST", "/v1/chat/completions", scheme="http"))
    assert decision.verdict.allowed
    return decision.ai


def test_each_part_comes_from_the_most_specific_policy_that_sets_it() -> None:
    ai = _ai("llm.example.test")
    assert ai.request is not None and ai.request.regex.policy == "TrafficPolicy/default/route"
    assert ai.request.message == "nope" and ai.request.regex.action == "REJECT"
    assert [d.name for d in ai.request.regex.detectors] == ["CreditCard", "Ssn", "code"]  # both spellings: one
    assert ai.models is not None and ai.models.policy == "TrafficPolicy/default/gateway-wide"
    assert ai.defaults_policy == "TrafficPolicy/default/route"


def test_a_route_without_its_own_policy_gets_the_gateway_one() -> None:
    ai = _ai("other.example.test")
    assert ai.request is not None and ai.request.regex.action == "MASK"
    assert ai.request.regex.policy == "TrafficPolicy/default/gateway-wide"
    assert ai.defaults is None


def test_patterns_are_compiled_with_the_snapshot() -> None:
    snapshot = compile_snapshot(CONFIG)
    compiled = list(snapshot.compiled.ai.by_policy.values())
    detectors = [d for p in compiled if p.request for d in p.request.regex.detectors]
    assert detectors and all(isinstance(d, Detector) and d.pattern.pattern for d in detectors)
    dump = snapshot.compiled.to_dump()["ai"]
    assert dump["TrafficPolicy/default/route"]["request"]["detectors"] == ["CreditCard", "Ssn", "code"]
