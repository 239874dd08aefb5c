"""The data plane's decisions (egressproxy/decisions.py) on a compiled snapshot, without mitmproxy."""

from __future__ import annotations

import random
import textwrap
from collections import Counter

import pytest

from egressproxy.ca import create_ca, secret_manifest
from egressproxy.compiler import compile_config
from egressproxy.config.loader import load_text
from egressproxy.decisions import Action, RequestView, decide_connect, decide_connection, decide_request, parent_for
from egressproxy.matching import Carries

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: https, protocol: HTTPS, tls: {mode: Terminate, caCertRef: {name: ca}}}
  - {name: pass, protocol: TLS, tls: {mode: Passthrough}}
  - {name: db, protocol: TCP, port: 5432}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [api.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    backendRefs:
    - {group: gateway.kgateway.dev, kind: Backend, name: primary, weight: 3}
    - {group: gateway.kgateway.dev, kind: Backend, name: never, weight: 0}
  - matches: [{path: {type: Exact, value: /blocked}}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: primary}
spec: {type: Static, static: {hosts: [{host: primary.internal, port: 443}]}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: never}
spec: {type: Static, static: {hosts: [{host: never.internal, port: 443}]}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: pinned}
spec:
  parentRefs: [{name: eg, sectionName: pass}]
  hostnames: [pinned.example.org]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressDenyPolicy
metadata: {name: no-pinned}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: TLSRoute, name: pinned}
  denyResponse: {statusCode: 451, message: pinned is closed}
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressL4Route
metadata: {name: db}
spec:
  parentRefs: [{name: eg, sectionName: db}]
  rules:
  - matches: [{destinationCIDRs: [10.1.0.0/16]}]
"""


@pytest.fixture(scope="module")
def snapshot():
    text = textwrap.dedent(CONFIG) + "---\n" + secret_manifest("ca", *create_ca("ca"))
    loaded = load_text(text, "decisions.yaml")
    assert loaded.ok, loaded.problems
    compiled = compile_config(loaded.resources)
    assert compiled.ok, compiled.problems
    return compiled.snapshot


def test_connect_to_a_routed_host_opens_and_an_unrouted_one_is_denied(snapshot) -> None:
    assert decide_connect(snapshot, "API.example.com.", 443).verdict.allowed
    denied = decide_connect(snapshot, "other.example.com", 443)
    assert (denied.verdict.allowed, denied.verdict.reason, denied.verdict.policy) == (False, "no-route", "EgressGateway/default/eg")


def test_connect_to_a_denied_passthrough_route_is_refused_with_its_policy(snapshot) -> None:
    verdict = decide_connect(snapshot, "pinned.example.org", 443).verdict
    assert (verdict.allowed, verdict.reason, verdict.status_code) == (False, "route-denied", 451)
    assert verdict.policy == "EgressDenyPolicy/default/no-pinned" and verdict.message == "pinned is closed"


def test_an_invalid_authority_is_denied_before_anything_else(snapshot) -> None:
    assert decide_connect(snapshot, "bad_host!", 443).verdict.reason == "invalid-host"


def test_sni_must_agree_with_the_connect_authority(snapshot) -> None:
    decision = decide_connection(snapshot, Carries.TLS, 443, connect_host="api.example.com", sni="evil.example.com")
    assert decision.action is Action.CLOSE and decision.verdict.reason == "sni-mismatch"
    same = decide_connection(snapshot, Carries.TLS, 443, connect_host="api.example.com", sni="API.EXAMPLE.COM")
    assert same.action is Action.INTERCEPT and same.listener is not None and same.listener.name == "https"


def test_tcp_is_relayed_by_destination_address_only_where_a_route_allows(snapshot) -> None:
    assert decide_connection(snapshot, Carries.TCP, 5432, ip="10.1.2.3").action is Action.TCP
    assert decide_connection(snapshot, Carries.TCP, 5432, ip="10.2.0.1").action is Action.CLOSE


def _request(host: str, path: str) -> RequestView:
    return RequestView(host=host, port=443, method="GET", path=path)


def test_host_header_disagreeing_with_the_tunnel_is_421(snapshot) -> None:
    listener = snapshot.gateway.listener("https")
    decision = decide_request(snapshot, listener, _request("evil.example.com", "/v1"), connection_host="api.example.com")
    assert (decision.verdict.reason, decision.verdict.status_code) == ("host-mismatch", 421)


def test_a_request_matching_no_rule_of_its_route_is_unmatched(snapshot) -> None:
    listener = snapshot.gateway.listener("https")
    decision = decide_request(snapshot, listener, _request("api.example.com", "/v2"), connection_host="api.example.com")
    assert decision.verdict.reason == "no-route" and decision.route is None


def test_weighted_backends_never_pick_a_zero_weight(snapshot) -> None:
    listener = snapshot.gateway.listener("https")
    picks = Counter()
    for _ in range(200):
        decision = decide_request(snapshot, listener, _request("api.example.com", "/v1/x"), connection_host="api.example.com")
        assert decision.verdict.allowed
        picks[tuple(u.backend_name for u in decision.upstreams)] += 1
    assert picks == Counter({("default/primary",): 200})


def test_no_parent_without_parent_mode(snapshot) -> None:
    assert parent_for(snapshot, None) is None


# --- upstream candidates (DESIGN.md section 6, seam 1) ---------------------------------------------------------

CANDIDATES = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: allow-all
  listeners:
  - {name: https, protocol: HTTPS, tls: {mode: Terminate, caCertRef: {name: ca}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: llm}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [llm.example.com]
  rules:
  - backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: ai}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [split.example.com]
  rules:
  - backendRefs:
    - {group: gateway.kgateway.dev, kind: Backend, name: heavy, weight: 3}
    - {kind: Service, name: svc, port: 8080, weight: 1}
    - {group: gateway.kgateway.dev, kind: Backend, name: off, weight: 0}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mixed}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [mixed.example.com]
  rules:
  - backendRefs:
    - {group: gateway.kgateway.dev, kind: Backend, name: heavy, weight: 1}
    - {group: gateway.kgateway.dev, kind: Backend, name: ai, weight: 1}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: dynamic}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [dynamic.example.com]
  rules: [{}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: heavy}
spec: {type: Static, static: {hosts: [{host: heavy.internal, port: 8443}]}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: off}
spec: {type: Static, static: {hosts: [{host: off.internal, port: 443}]}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: ai, namespace: default}
spec:
  type: AI
  ai:
    priorityGroups:
    - providers:
      - name: local
        openai:
          model: m
          hostOverride: {host: 127.0.0.1, port: 9000, scheme: http}
      - name: azure
        azureOpenai: {endpoint: "https://my-res.openai.azure.com/", deploymentName: d, apiVersion: "2024-02-01"}
    - providers:
      - name: claude
        anthropic: {model: claude}
      - name: bedrock
        bedrock: {model: m, region: eu-west-1}
    - providers:
      - name: vertex
        vertexAi: {model: gemini, project: p, location: europe-west4}
      - name: gemini
        gemini: {model: gemini}
"""


def _compiled(config: str):
    text = textwrap.dedent(config) + "---\n" + secret_manifest("ca", *create_ca("ca"))
    loaded = load_text(text, "candidates.yaml")
    assert loaded.ok, loaded.problems
    compiled = compile_config(loaded.resources)
    assert compiled.ok, compiled.problems
    return compiled.snapshot


@pytest.fixture(scope="module")
def candidates_snapshot():
    return _compiled(CANDIDATES)


def _candidates(snapshot, host: str, seed: int = 0):
    listener = snapshot.gateway.listener("https")
    decision = decide_request(snapshot, listener, _request(host, "/v1/chat"), connection_host=host, rng=random.Random(seed))
    assert decision.verdict.allowed
    return decision.upstreams


def test_ai_priority_groups_are_tried_in_order_with_each_providers_endpoint(candidates_snapshot) -> None:
    """Group 0 first, then group 1, then group 2; each provider at its hostOverride or well-known endpoint."""
    ups = _candidates(candidates_snapshot, "llm.example.com")
    assert [u.group for u in ups] == [0, 0, 1, 1, 2, 2]
    by_provider = {u.provider.name: (u.host, u.port, u.scheme, u.group) for u in ups}
    assert by_provider == {
        "local": ("127.0.0.1", 9000, "http", 0),
        "azure": ("my-res.openai.azure.com", 443, "https", 0),
        "claude": ("api.anthropic.com", 443, "https", 1),
        "bedrock": ("bedrock-runtime.eu-west-1.amazonaws.com", 443, "https", 1),
        "vertex": ("europe-west4-aiplatform.googleapis.com", 443, "https", 2),
        "gemini": ("generativelanguage.googleapis.com", 443, "https", 2),
    }
    assert {u.backend_name for u in ups} == {"default/ai"}


def test_a_host_override_is_trusted_and_a_public_endpoint_is_not(candidates_snapshot) -> None:
    ups = {u.provider.name: u for u in _candidates(candidates_snapshot, "llm.example.com")}
    assert ups["local"].trusted and ups["local"].sni is None  # plain HTTP to a local model server
    assert not ups["azure"].trusted and ups["azure"].sni == "my-res.openai.azure.com"
    assert not ups["claude"].trusted


def test_weights_order_a_group_from_the_injected_random_source(candidates_snapshot) -> None:
    """Weight 3 : 1 puts the heavy Backend first about 3 times in 4; weight 0 is never a candidate; the same
    seed gives the same order."""
    firsts = Counter(_candidates(candidates_snapshot, "split.example.com", seed)[0].backend_name for seed in range(400))
    assert set(firsts) == {"default/heavy", "default/svc"}
    assert 0.65 < firsts["default/heavy"] / 400 < 0.85
    for seed in range(20):
        ups = _candidates(candidates_snapshot, "split.example.com", seed)
        assert len(ups) == 2 and "default/off" not in {u.backend_name for u in ups}
        assert ups == _candidates(candidates_snapshot, "split.example.com", seed)


def test_static_and_service_candidates_are_trusted_configured_addresses(candidates_snapshot) -> None:
    ups = {u.backend_name: u for u in _candidates(candidates_snapshot, "split.example.com")}
    heavy, svc = ups["default/heavy"], ups["default/svc"]
    assert (heavy.host, heavy.port, heavy.trusted, heavy.weight) == ("heavy.internal", 8443, True, 3)
    assert (svc.host, svc.port, svc.trusted, svc.weight) == ("svc.default.svc.cluster.local", 8080, True, 1)
    assert svc.backend is not None and svc.backend.type == "Service"


def test_backendref_weights_apply_within_group_zero_only(candidates_snapshot) -> None:
    """A Static Backend and an AI Backend side by side: both compete in group 0, AI fallbacks come after."""
    for seed in range(10):
        ups = _candidates(candidates_snapshot, "mixed.example.com", seed)
        assert {u.backend_name for u in ups if u.group == 0} == {"default/heavy", "default/ai"}
        assert [u.group for u in ups] == [0, 0, 0, 1, 1, 2, 2]


def test_a_rule_without_backends_forwards_to_the_requested_destination_untrusted(candidates_snapshot) -> None:
    (only,) = _candidates(candidates_snapshot, "dynamic.example.com")
    assert (only.host, only.port, only.backend, only.trusted, only.parent) == ("dynamic.example.com", 443, None, False, None)
    (unrouted,) = _candidates(candidates_snapshot, "elsewhere.example.net")  # allow-all: the same, no route
    assert (unrouted.host, unrouted.backend, unrouted.trusted) == ("elsewhere.example.net", None, False)


# kgateway's own shapes of the same providers (DESIGN.md 4.2): v2.1 spells the provider blocks in lower case and
# says where the provider is at the llm level (`host`, `port`, `path`); v2.0 nests the block under `provider`
# with `hostOverride` beside it, and spells priority groups `multipool.priorities[].pool[]`.
KGATEWAY_SHAPES = """
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
  hostnames: [seed.example.com]
  rules:
  - backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: ai}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: groups-v21}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [v21.example.com]
  rules:
  - backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: groups-v21}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: multipool-v20}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [v20.example.com]
  rules:
  - backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: multipool-v20}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: llm-v21}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [llm21.example.com]
  rules:
  - backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: llm-v21}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: llm-v20}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [llm20.example.com]
  rules:
  - backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: llm-v20}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: aibackend}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [aibackend.example.com]
  rules:
  - backendRefs: [{group: gateway.kgateway.dev, kind: AIBackend, name: pool}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: AIBackend
metadata: {name: pool}
spec:
  multipool:
    priorities:
    - pool:
      - provider: {gemini: {model: g}}
        hostOverride: {host: gemini.internal, port: 8080, scheme: http}
    - pool:
      - {provider: {vertexai: {model: g, projectId: p, location: us-central1}}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: groups-v21}
spec:
  type: AI
  ai:
    priorityGroups:
    - providers:
      - {name: local, openai: {model: m}, host: 127.0.0.1, port: 9000}
      - name: azure
        azureopenai: {endpoint: "https://my-res.openai.azure.com/", deploymentName: d, apiVersion: "2024-02-01"}
    - providers:
      - {name: claude, anthropic: {model: claude}}
      - {name: bedrock, bedrock: {model: m, region: eu-west-1}}
    - providers:
      - {name: vertex, vertexai: {model: gemini, projectId: p, location: europe-west4}}
      - {name: gemini, gemini: {model: gemini}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: multipool-v20}
spec:
  type: AI
  ai:
    multipool:
      priorities:
      - pool:
        - provider: {openai: {model: m}}
          hostOverride: {host: 127.0.0.1, port: 9000, scheme: http}
        - provider:
            azureopenai: {endpoint: "https://my-res.openai.azure.com/", deploymentName: d, apiVersion: "2024-02-01"}
      - pool:
        - provider: {anthropic: {model: claude}}
        - provider: {bedrock: {model: m, region: eu-west-1}}
      - pool:
        - provider: {vertexai: {model: gemini, projectId: p, location: europe-west4}}
        - provider: {gemini: {model: gemini}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: llm-v21}
spec:
  type: AI
  ai:
    llm:
      host: llm.internal
      port: 8443
      path: {full: /serving/chat}
      openai: {model: m}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: llm-v20}
spec:
  type: AI
  ai:
    llm:
      hostOverride: {host: 10.1.2.3, port: 11434}
      pathOverride: {fullPath: /v1/chat/completions}
      provider:
        bedrock: {model: m}
"""


@pytest.fixture(scope="module")
def kgateway_snapshot():
    seed_ai = CANDIDATES[CANDIDATES.index("apiVersion: gateway.kgateway.dev/v1alpha1\nkind: Backend\nmetadata: {name: ai") :]
    return _compiled(KGATEWAY_SHAPES + "---\n" + seed_ai)


def _dialled(ups) -> list[tuple]:
    return [(u.provider.kind, u.provider.model, u.host, u.port, u.scheme, u.group, u.trusted) for u in ups]



def test_kgateway_v20_multipool_dials_what_the_seed_priority_groups_dial(kgateway_snapshot) -> None:
    """The same providers written as v2.0's `multipool` (provider nested, hostOverride beside it) compile to the
    same priority groups as the seeds' `priorityGroups`: same kinds, models, endpoints, groups and trust."""
    seed = _candidates(kgateway_snapshot, "seed.example.com")
    v20 = _candidates(kgateway_snapshot, "v20.example.com")
    assert _dialled(v20) == _dialled(seed)
    assert [u.provider.name for u in v20] == ["openai", "azureOpenai", "anthropic", "bedrock", "vertexAi", "gemini"]
    assert [u.provider.region for u in v20] == [u.provider.region for u in seed]


def test_kgateway_v21_priority_groups_with_llm_level_host_and_lower_case_blocks(kgateway_snapshot) -> None:
    """v2.1's `host`/`port` beside the provider block are its dial target (https: v2.1 has no scheme);
    `azureopenai` and `vertexai` are the seeds' azureOpenai and vertexAi."""
    seed = _dialled(_candidates(kgateway_snapshot, "seed.example.com"))
    v21 = _candidates(kgateway_snapshot, "v21.example.com")
    assert _dialled(v21) == [("openai", "m", "127.0.0.1", 9000, "https", 0, True), *seed[1:]]
    assert [u.provider.name for u in v21] == ["local", "azure", "claude", "bedrock", "vertex", "gemini"]


def test_kgateway_llm_level_overrides_apply_to_its_provider(kgateway_snapshot) -> None:
    """One provider in the v2.1 form (`host`, `port`, `path.full`) and the v2.0 form (`hostOverride`,
    `pathOverride.fullPath` beside `provider`): dialled at the override, with its path; a Bedrock provider
    without `region` is in kgateway's default us-east-1."""
    (v21,) = _candidates(kgateway_snapshot, "llm21.example.com")
    assert _dialled([v21]) == [("openai", "m", "llm.internal", 8443, "https", 0, True)]
    assert v21.provider.path == "/serving/chat"
    (v20,) = _candidates(kgateway_snapshot, "llm20.example.com")
    assert _dialled([v20]) == [("bedrock", "m", "10.1.2.3", 11434, "https", 0, True)]
    assert (v20.provider.path, v20.provider.region) == ("/v1/chat/completions", "us-east-1")


def test_an_aibackend_takes_the_backend_ai_block_shapes(kgateway_snapshot) -> None:
    """kgateway's AIBackend type is the Backend's `ai` block: the same `multipool` on the AIBackend kind."""
    ups = _candidates(kgateway_snapshot, "aibackend.example.com")
    assert _dialled(ups) == [
        ("gemini", "g", "gemini.internal", 8080, "http", 0, True),
        ("vertexAi", "g", "us-central1-aiplatform.googleapis.com", 443, "https", 1, False),
    ]

def test_a_denied_request_has_no_candidates(snapshot) -> None:
    listener = snapshot.gateway.listener("https")
    decision = decide_request(snapshot, listener, _request("api.example.com", "/v2"), connection_host="api.example.com")
    assert not decision.verdict.allowed and decision.upstreams == ()


PARENTS = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: allow-all
  parentRef: {name: corp}
  listeners:
  - {name: https, protocol: HTTPS, tls: {mode: Terminate, caCertRef: {name: ca}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: via-branch}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [branch.example.com]
  rules:
  - backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: branch}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: pinned}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [pinned.example.com]
  rules:
  - backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: pinned}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: corp}
spec: {type: Static, static: {hosts: [{host: corp-proxy.internal, port: 3128}]}, parent: {}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: branch}
spec: {type: Static, static: {hosts: [{host: branch-proxy.internal, port: 8080}]}, parent: {}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: pinned}
spec: {type: Static, static: {hosts: [{host: pinned.internal, port: 443}]}}
"""


def test_parent_backends_and_the_gateway_parent_ref_set_each_candidates_parent() -> None:
    """A parent Backend sends the original destination through itself; the gateway's parentRef carries the
    rest (a Static Backend's host included); `parent_for` agrees with the candidates."""
    snapshot = _compiled(PARENTS)
    (branch,) = _candidates(snapshot, "branch.example.com")
    assert (branch.host, branch.port, branch.backend_name) == ("branch.example.com", 443, "default/branch")
    assert (branch.parent.host, branch.parent.port) == ("branch-proxy.internal", 8080)
    assert parent_for(snapshot, None, branch.backend) == branch.parent
    (pinned,) = _candidates(snapshot, "pinned.example.com")
    assert (pinned.host, pinned.trusted, pinned.parent.host) == ("pinned.internal", True, "corp-proxy.internal")
    (dynamic,) = _candidates(snapshot, "any.example.org")
    assert (dynamic.host, dynamic.parent.host, dynamic.parent.port) == ("any.example.org", "corp-proxy.internal", 3128)
