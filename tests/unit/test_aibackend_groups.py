"""AIBackend `groups`: the named Backends' candidates in priority order, weighted within a group; the policies
that attach to the AIBackend (rate limits, region allow-lists) still apply to every candidate."""

from __future__ import annotations

import random
import textwrap
from collections import Counter

import pytest

from egressproxy.ca import create_ca, secret_manifest
from egressproxy.compiler import compile_config
from egressproxy.config.loader import load_text
from egressproxy.decisions import RequestView, decide_request

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: https, protocol: HTTPS, tls: {mode: Terminate, caCertRef: {name: ca}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: llm}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [llm.example.com, eu.example.com]
  rules:
  - backendRefs: [{group: gateway.kgateway.dev, kind: AIBackend, name: pool}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: AIBackend
metadata: {name: pool}
spec:
  groups:
  - priority: 1
    backends:
    - backendRef: {name: last}
  - priority: 0
    backends:
    - {backendRef: {name: heavy}, weight: 3}
    - {backendRef: {name: light}, weight: 1}
    - {backendRef: {name: off}, weight: 0}
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: pool-budget}
spec:
  targetRefs: [{group: gateway.kgateway.dev, kind: AIBackend, name: pool}]
  requests: 5
  window: 1m
  scope: PerRoute
"""


def _ai(name: str, host: str, region: str, extra: str = "") -> str:
    return f"""
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata:
  name: {name}
  labels: {{topology.kubernetes.io/region: {region}}}
spec:
  type: AI
  ai:
    priorityGroups:
    - providers:
      - name: {name}
        openai: {{model: m, authToken: {{kind: Inline, inline: k}}, hostOverride: {{host: {host}}}}}{extra}
"""


SECOND = "\n    - providers:\n      - name: heavy-backup\n        openai: {model: m, authToken: {kind: Inline, inline: k}, hostOverride: {host: heavy-backup.test}}"
BACKENDS = (_ai("heavy", "heavy.test", "us-east-1", SECOND) + _ai("light", "light.test", "eu-west-1")
            + _ai("last", "last.test", "eu-west-1") + _ai("off", "off.test", "eu-west-1"))
REGIONS = """
---
apiVersion: policy.egressproxy.io/v1alpha1
kind: RegionAllowListPolicy
metadata: {name: eu-only}
spec:
  targetRefs: [{group: gateway.kgateway.dev, kind: AIBackend, name: pool}]
  allowedRegions: [eu-west-1]
"""


def _snapshot(extra: str = ""):
    text = textwrap.dedent(CONFIG + BACKENDS + extra) + "---\n" + secret_manifest("ca", *create_ca("ca"))
    loaded = load_text(text, "groups.yaml")
    assert loaded.ok, loaded.problems
    compiled = compile_config(loaded.resources)
    assert compiled.ok, compiled.problems
    return compiled


def _decide(snapshot, seed: int):
    request = RequestView(host="llm.example.com", port=443, method="POST", path="/v1/chat/completions")
    return decide_request(snapshot, snapshot.gateway.listener("https"), request, connection_host="llm.example.com",
                          rng=random.Random(seed))


@pytest.fixture(scope="module")
def compiled():
    return _snapshot()


def test_groups_go_in_priority_order_and_each_member_keeps_its_own_fallback_groups(compiled) -> None:
    ups = _decide(compiled.snapshot, 0).upstreams
    # priority 0 (heavy, light; heavy's own second group right after), then priority 1 (last); weight 0 never
    assert sorted((u.group, u.host) for u in ups) == [(0, "heavy.test"), (0, "light.test"), (1, "heavy-backup.test"),
                                                      (2, "last.test")]
    assert [u.group for u in ups] == [0, 0, 1, 2]
    assert all(u.via is not None and u.via.ref.name == "pool" for u in ups)
    assert {u.backend_name for u in ups} == {"default/heavy", "default/light", "default/last"}


def test_weights_decide_who_goes_first_within_a_group(compiled) -> None:
    first = Counter(_decide(compiled.snapshot, seed).upstreams[0].host for seed in range(400))
    assert set(first) == {"heavy.test", "light.test"}
    assert 0.65 < first["heavy.test"] / 400 < 0.85  # weight 3 of 4


def test_a_rate_limit_attached_to_the_aibackend_applies_whichever_member_goes_first(compiled) -> None:
    for seed in range(20):
        decision = _decide(compiled.snapshot, seed)
        assert decision.rate_limit is not None and decision.rate_limit.requests == 5


def test_a_region_allow_list_on_the_aibackend_filters_members_by_their_own_region_label() -> None:
    ups = _decide(_snapshot(REGIONS).snapshot, 0).upstreams
    assert {u.host for u in ups} == {"light.test", "last.test"}


def test_the_aibackend_with_groups_is_programmed_and_dumps_its_groups(compiled) -> None:
    pool = next(b for b in compiled.snapshot.backends.values() if b.ref.name == "pool")
    assert pool.to_dump()["groups"] == [[{"backend": "default/heavy", "weight": 3}, {"backend": "default/light", "weight": 1},
                                         {"backend": "default/off", "weight": 0}], [{"backend": "default/last", "weight": 1}]]
    (programmed,) = [c for c in compiled.statuses[pool.ref] if c.type == "Programmed"]
    assert programmed.status == "True", programmed


def test_an_aibackend_whose_groups_mix_in_an_api_failover_cannot_translate_says_so() -> None:
    gemini = """
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: gem}
spec:
  type: AI
  ai:
    llm:
      gemini: {model: g, authToken: {kind: Inline, inline: k}}
"""
    pool = CONFIG.replace("    - backendRef: {name: last}", "    - backendRef: {name: last}\n    - backendRef: {name: gem}")
    text = textwrap.dedent(pool + BACKENDS + gemini) + "---\n" + secret_manifest("ca", *create_ca("ca"))
    compiled = compile_config(load_text(text, "groups.yaml").resources)
    ref = next(r for r in compiled.statuses if r.kind == "AIBackend")
    (programmed,) = [c for c in compiled.statuses[ref] if c.type == "Programmed"]
    assert programmed.status == "False" and "spec.groups (mixing the gemini and openai APIs" in programmed.message
