"""AIBackend `groups` through the real process: a route names an AIBackend whose groups name other Backends; the
gateway fails over from group 0 (both of its Backends) to group 1, and picks within a group by weight.

Fake providers on their real hostnames (hostAliases to loopback, test CA trusted): `api.openai.com` serves every
OpenAI-format Backend (each with its own key, so the test sees which Backend was sent the request) and
`api.anthropic.com` the Anthropic one of group 1, reached across formats. The workload is the official `openai`
SDK holding a dummy key, SDK retries off.
"""

from __future__ import annotations

import json
import ssl
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.pki import TestCA
from tests.support.provider_origin import Json, ProviderOrigin
from tests.support.loopback import random_loopback

pytestmark = pytest.mark.e2e

DUMMY = "dummy-workload-key"


def _key(backend: str) -> str:
    return f"sk-{backend}-SECRET-groups"



def _openai_backend(name: str) -> str:
    return f"""apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: {name}}}
spec:
  type: AI
  ai:
    llm:
      openai: {{model: gpt-4o-mini, authToken: {{kind: Inline, inline: {_key(name)}}}}}
"""


def _anthropic_backend(name: str) -> str:
    return f"""apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: {name}}}
spec:
  type: AI
  ai:
    llm:
      anthropic: {{model: claude-x, authToken: {{kind: Inline, inline: {_key(name)}}}}}
"""


def _pool(case: str, groups: str) -> str:
    return f"""apiVersion: gateway.kgateway.dev/v1alpha1
kind: AIBackend
metadata: {{name: pool-{case}}}
spec:
  groups:{textwrap.indent(groups, "  ")}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r-{case}}}
spec:
  parentRefs: [{{name: eg, sectionName: https}}]
  hostnames: [{case}.llm.test]
  rules:
  - backendRefs: [{{group: gateway.kgateway.dev, kind: AIBackend, name: pool-{case}}}]
"""


FAIL_GROUPS = """
- priority: 1
  backends:
  - {backendRef: {name: fail-c}}
- priority: 0
  backends:
  - {backendRef: {name: fail-a}, weight: 3}
  - {backendRef: {name: fail-b}, weight: 1}
"""
WEIGHT_GROUPS = """
- priority: 0
  backends:
  - {backendRef: {name: weight-a}, weight: 3}
  - {backendRef: {name: weight-b}, weight: 1}
  - {backendRef: {name: weight-off}, weight: 0}
"""


class Scene:
    def __init__(self, gw: GatewayProcess, gpt: ProviderOrigin, claude: ProviderOrigin, ca: Path) -> None:
        self.gw, self.gpt, self.claude, self.ca = gw, gpt, claude, ca

    def sdk(self, case: str) -> openai.OpenAI:
        http = httpx.Client(proxy=self.gw.proxy_url, verify=ssl.create_default_context(cafile=str(self.ca)), timeout=20)
        return openai.OpenAI(api_key=DUMMY, base_url=f"https://{case}.llm.test/v1", max_retries=0,
                             default_headers={"x-test-case": case}, http_client=http)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory, origin_ca: TestCA, gateway_ca: tuple[Path, str]) -> Iterator[Scene]:
    tmp = tmp_path_factory.mktemp("groups")
    gpt_ip, claude_ip = random_loopback(), random_loopback()
    gcert = origin_ca.issue("api.openai.com").write(tmp / "gpt", "leaf")
    ccert = origin_ca.issue("api.anthropic.com").write(tmp / "claude", "leaf")
    with ProviderOrigin("openai", gpt_ip, 443, tls=gcert) as gpt, ProviderOrigin("anthropic", claude_ip, 443, tls=ccert) as claude:
        trust = textwrap.indent(origin_ca.cert_pem.decode(), "    ")
        docs = [
            gateway_ca[1],
            f"apiVersion: v1\nkind: Secret\nmetadata: {{name: origin-ca}}\nstringData:\n  ca.crt: |\n{trust}",
            f"""apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg}}
spec:
  defaultPolicy: deny-all
  listeners:
  - {{name: https, protocol: HTTPS, tls: {{mode: Terminate, caCertRef: {{name: egress-ca}}}}}}
  upstreamTLS:
    additionalTrustBundleSecretRef: {{name: origin-ca}}
    hostAliases:
    - {{ip: {gpt_ip}, hostnames: [api.openai.com]}}
    - {{ip: {claude_ip}, hostnames: [api.anthropic.com]}}
    - {{ip: 127.0.0.1, hostnames: [fail.llm.test, weight.llm.test]}}
""",
            *(_openai_backend(n) for n in ("fail-a", "fail-b", "weight-a", "weight-b", "weight-off")),
            _anthropic_backend("fail-c"),
            _pool("fail", FAIL_GROUPS),
            _pool("weight", WEIGHT_GROUPS),
        ]
        config = tmp / "config"
        config.mkdir()
        for i, doc in enumerate(docs):
            (config / f"{i:02d}.yaml").write_text(doc)
        with GatewayProcess(config, tmp / "data") as gw:
            yield Scene(gw, gpt, claude, gateway_ca[0])


def _chat(scene: Scene, case: str) -> str:
    completion = scene.sdk(case).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    return str(completion.choices[0].message.content)


def test_group_zero_down_fails_over_to_group_one_across_formats(scene: Scene) -> None:
    scene.gpt.script("fail", Json(503, {"error": {"message": "overloaded"}}))
    assert _chat(scene, "fail") == "from anthropic"
    tried = [s.headers["authorization"] for s in scene.gpt.seen("fail")]
    assert sorted(tried) == sorted([f"Bearer {_key('fail-a')}", f"Bearer {_key('fail-b')}"])  # all of group 0 first
    [last] = scene.claude.seen("fail")
    assert last.headers["x-api-key"] == _key("fail-c") and json.loads(last.body)["model"] == "claude-x"


def test_weights_choose_within_a_group_and_weight_zero_is_never_sent(scene: Scene) -> None:
    for _ in range(40):
        assert _chat(scene, "weight") == "from openai"
    first = Counter(s.headers["authorization"] for s in scene.gpt.seen("weight"))
    assert sum(first.values()) == 40  # every request answered by its first candidate
    assert f"Bearer {_key('weight-off')}" not in first
    share = first[f"Bearer {_key('weight-a')}"] / 40
    assert 0.5 <= share <= 0.95, first  # weight 3 of 4: 0.75 expected
