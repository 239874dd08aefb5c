"""Failover across AI priority groups through the real process, to fake providers on their real hostnames.

`api.openai.com` and `api.mistral.ai` resolve (hostAliases) to two scripted TLS origins on random loopback
addresses, port 443, with certificates from the test CA the gateway trusts; a rogue origin has a certificate
from another CA; a local model server speaks plain HTTP. Every test case has its own Backend (so its own
cooldowns) and route (`<case>.llm.test`), and names itself to the origins in `x-test-case`. The workload is
the official `openai` SDK holding a dummy key (SDK retries off: every retry seen is the gateway's), through
the explicit proxy, trusting the gateway's CA.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import ssl
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.gateway import GatewayProcess, free_port
from tests.support.pki import TestCA
from tests.support.provider_origin import Hang, Json, ProviderOrigin, Reset, Sse
from tests.support.loopback import random_loopback

pytestmark = pytest.mark.e2e

OPENAI_KEY = "sk-openai-SECRET-failover"
MISTRAL_KEY = "mistral-SECRET-failover"
DUMMY = "dummy-workload-key"



def _provider(name: str, kind: str, key: str, extra: str = "") -> str:
    return f"""      - name: {name}
        {kind}:
          authToken: {{kind: Inline, inline: {key}}}{extra}"""


def _openai(extra: str = "") -> str:
    return _provider("primary", "openai", OPENAI_KEY, extra)


def _mistral(extra: str = "") -> str:
    """Mistral's API is OpenAI-compatible: an openai provider pointed at api.mistral.ai."""
    return _provider("fallback", "openai", MISTRAL_KEY, "\n          hostOverride: {host: api.mistral.ai}" + extra)


def _case(case: str, groups: list[list[str]], timeouts: str = "") -> str:
    body = "".join("\n    - providers:\n" + "\n".join(group) for group in groups)
    rule_timeouts = f"\n    timeouts: {timeouts}" if timeouts else ""
    return f"""apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: ai-{case}}}
spec:
  type: AI
  ai:
    priorityGroups:{body}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r-{case}}}
spec:
  parentRefs: [{{name: eg, sectionName: https}}]
  hostnames: [{case}.llm.test]
  rules:
  - backendRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: ai-{case}}}]{rule_timeouts}
"""


class Scene:
    def __init__(self, gw: GatewayProcess, primary: ProviderOrigin, fallback: ProviderOrigin, rogue: ProviderOrigin,
                 local: ProviderOrigin, static: ProviderOrigin, ca: Path) -> None:
        self.gw, self.primary, self.fallback, self.rogue, self.local, self.ca = gw, primary, fallback, rogue, local, ca
        self.static = static

    def http(self) -> httpx.Client:
        return httpx.Client(proxy=self.gw.proxy_url, verify=ssl.create_default_context(cafile=str(self.ca)), timeout=20)

    def sdk(self, case: str) -> openai.OpenAI:
        return openai.OpenAI(api_key=DUMMY, base_url=f"https://{case}.llm.test/v1", max_retries=0,
                             default_headers={"x-test-case": case}, http_client=self.http())

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.gw.metrics().splitlines():
            if not line.startswith(name + "{"):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


CASES = ["refused", "s503", "s429", "s529", "timeout", "s400", "big", "rogue", "stream", "firstbyte", "midreset",
         "midreset-raw", "local", "quota", "allcool", "eject", "huge", "h2", "slowstream", "parallel"]
RETRY_CASES = ["retry-get", "retry-post", "retry-on", "retry-slow", "route-retry", "backend-timeout"]


def _retry_case(case: str, retry: str) -> str:
    """A route to a plain Static Backend with a TrafficPolicy `retry` attached to it."""
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r-{case}}}
spec:
  parentRefs: [{{name: eg, sectionName: https}}]
  hostnames: [{case}.llm.test]
  rules:
  - backendRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: static}}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: tp-{case}}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r-{case}}}]
  {retry}
"""


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory, origin_ca: TestCA, gateway_ca: tuple[Path, str]) -> Iterator[Scene]:
    tmp = tmp_path_factory.mktemp("failover")
    primary_ip, fallback_ip = random_loopback(), random_loopback()
    pcert = origin_ca.issue("api.openai.com").write(tmp / "primary", "leaf")
    fcert = origin_ca.issue("api.mistral.ai").write(tmp / "fallback", "leaf")
    rogue_ca = TestCA("rogue")
    rcert = rogue_ca.issue("127.0.0.1", "api.openai.com").write(tmp / "rogue", "leaf")
    scert = origin_ca.issue("127.0.0.1").write(tmp / "static", "leaf")
    closed = free_port()
    with ProviderOrigin("primary", primary_ip, 443, tls=pcert) as primary, \
            ProviderOrigin("fallback", fallback_ip, 443, tls=fcert) as fallback, \
            ProviderOrigin("rogue", "127.0.0.1", 0, tls=rcert) as rogue, \
            ProviderOrigin("local") as local, \
            ProviderOrigin("static", "127.0.0.1", 0, tls=scert) as static:
        trust = textwrap.indent(origin_ca.cert_pem.decode(), "    ")
        hosts = [f"{c}.llm.test" for c in CASES + RETRY_CASES]
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
    - {{ip: {primary_ip}, hostnames: [api.openai.com]}}
    - {{ip: {fallback_ip}, hostnames: [api.mistral.ai]}}
    - {{ip: 127.0.0.1, hostnames: {json.dumps(hosts)}}}
""",
        ]
        two = [[_openai()], [_mistral()]]
        for case in CASES:
            if case == "refused":
                groups = [[_openai(f"\n          hostOverride: {{host: 127.0.0.1, port: {closed}}}")], [_mistral()]]
                docs.append(_case(case, groups))
            elif case in ("timeout", "slowstream"):
                docs.append(_case(case, two, "{request: 20s, backendRequest: 1s}"))
            elif case == "rogue":
                groups = [[_openai(f"\n          hostOverride: {{host: 127.0.0.1, port: {rogue.port}}}")], [_mistral()]]
                docs.append(_case(case, groups))
            elif case == "eject":
                outlier = "\n  outlierDetection: {consecutive5xx: 2, interval: 1s, baseEjectionTime: 2s, maxEjectionPercent: 100}"
                docs.append(_case(case, two).replace("\n    priorityGroups:", "\n    priorityGroups:", 1).replace(
                    "spec:\n  type: AI", "spec:\n  type: AI" + outlier, 1))
            elif case == "local":
                local_provider = f"      - name: local\n        openai:\n          hostOverride: {{host: 127.0.0.1, port: {local.port}, scheme: http}}"
                docs.append(_case(case, [[local_provider], [_openai()]]))
            else:
                docs.append(_case(case, two))
        docs.append(f"""apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: static}}
spec:
  type: Static
  static: {{hosts: [{{host: 127.0.0.1, port: {static.port}}}]}}
""")
        docs.append(_retry_case("retry-get", "retry: {attempts: 2}"))
        docs.append(_retry_case("retry-post", "retry: {attempts: 2}"))
        docs.append(_retry_case("retry-on", "retries: {attempts: 1, retryOn: '5xx,connect-failure'}"))
        docs.append(_retry_case("retry-slow", "retry: {attempts: 1, perTryTimeout: 1s}"))
        docs.append("""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r-route-retry}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [route-retry.llm.test]
  rules:
  - backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: static}]
    retry: {attempts: 2, codes: [502]}
""")
        docs.append("""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r-backend-timeout}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [backend-timeout.llm.test]
  rules:
  - backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: static}]
    timeouts: {request: 20s, backendRequest: 1s}
""")
        config = tmp / "config"
        config.mkdir()
        for i, doc in enumerate(docs):
            (config / f"{i:02d}.yaml").write_text(doc)
        gw = GatewayProcess(config, tmp / "data", extra_args=["--log-level", "debug"])
        with gw:
            yield Scene(gw, primary, fallback, rogue, local, static, gateway_ca[0])


def _chat(scene: Scene, case: str, **kwargs: Any) -> Any:
    return scene.sdk(case).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], **kwargs)


def _origin_of(completion: Any) -> str:
    return completion.choices[0].message.content


def test_a_503_fails_over_to_the_next_group_with_that_providers_credential(scene: Scene) -> None:
    scene.primary.script("s503", Json(503, {"error": {"message": "overloaded"}}))
    completion = _chat(scene, "s503")
    assert _origin_of(completion) == "from fallback"
    [first] = scene.primary.seen("s503")
    [second] = scene.fallback.seen("s503")
    assert first.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert second.headers["authorization"] == f"Bearer {MISTRAL_KEY}"
    assert DUMMY not in json.dumps(second.headers)
    assert "x-egress-hop" not in first.headers and "x-egress-hop" not in second.headers
    assert first.body_sha256 == second.body_sha256
    assert scene.metric("egress_failovers_total", backend="default/ai-s503", provider="primary", reason="server-error") == 1
    assert scene.metric("egress_upstream_attempts_total", backend="default/ai-s503", provider="fallback", outcome="ok") == 1


def test_a_refused_connection_fails_over(scene: Scene) -> None:
    assert _origin_of(_chat(scene, "refused")) == "from fallback"
    assert scene.metric("egress_failovers_total", backend="default/ai-refused", reason="connect-failure") == 1


def test_an_http2_client_fails_over_and_streams_too(scene: Scene) -> None:
    scene.primary.script("h2", Json(503))
    with httpx.Client(proxy=scene.gw.proxy_url, verify=ssl.create_default_context(cafile=str(scene.ca)), http2=True,
                      timeout=20) as client:
        plain = client.post("https://h2.llm.test/v1/chat/completions", json={"model": "m"}, headers={"x-test-case": "h2"})
        assert plain.http_version == "HTTP/2" and plain.status_code == 200
        assert plain.json()["choices"][0]["message"]["content"] == "from fallback"
        scene.fallback.script("h2", Sse(events=2))
        with client.stream("POST", "https://h2.llm.test/v1/chat/completions", json={"model": "m", "stream": True},
                           headers={"x-test-case": "h2"}) as stream:
            text = b"".join(stream.iter_raw())
    assert b"fallback-0" in text and b"fallback-1" in text and b"[DONE]" in text


def test_a_529_fails_over(scene: Scene) -> None:
    scene.primary.script("s529", Json(529, {"type": "error", "error": {"type": "overloaded_error"}}))
    assert _origin_of(_chat(scene, "s529")) == "from fallback"
    assert len(scene.primary.seen("s529")) == 1


def test_a_429_cools_the_provider_down_for_its_retry_after_then_it_recovers(scene: Scene) -> None:
    scene.primary.script("s429", Json(429, {"error": {"type": "rate_limit"}}, {"retry-after": "2"}), Json())
    started = time.monotonic()
    assert _origin_of(_chat(scene, "s429")) == "from fallback"
    skipped = [h for h in scene.gw.admin("/stats").json()["upstream_health"] if h["backend"] == "default/ai-s429"]
    assert [(h["provider"], h["state"]) for h in skipped] == [("primary", "cooled-down")]
    # Cooled down: the next request goes straight to the fallback, the primary sees nothing.
    assert _origin_of(_chat(scene, "s429")) == "from fallback"
    assert len(scene.primary.seen("s429")) == 1
    assert scene.metric("egress_upstream_attempts_total", backend="default/ai-s429", provider="primary", outcome="cooled-down") == 1
    # Recovery: once the 2s are over, the primary takes requests again.
    deadline = started + 10
    while time.monotonic() < deadline:
        if _origin_of(_chat(scene, "s429")) == "from primary":
            break
    else:
        pytest.fail("the primary never recovered from its cooldown")
    assert time.monotonic() - started >= 2.0
    assert len(scene.primary.seen("s429")) == 2


def test_a_quota_exhausted_429_is_not_retried_on_that_provider_and_cools_it_down_long(scene: Scene) -> None:
    scene.primary.script("quota", Json(429, {"error": {"code": "insufficient_quota", "type": "insufficient_quota"}}))
    assert _origin_of(_chat(scene, "quota")) == "from fallback"
    assert _origin_of(_chat(scene, "quota")) == "from fallback"
    assert len(scene.primary.seen("quota")) == 1
    assert scene.metric("egress_failovers_total", backend="default/ai-quota", reason="quota-exhausted") == 1


def test_no_response_head_within_the_backend_request_timeout_fails_over(scene: Scene) -> None:
    scene.primary.script("timeout", Hang(4))
    started = time.monotonic()
    assert _origin_of(_chat(scene, "timeout")) == "from fallback"
    assert time.monotonic() - started < 3.5
    assert scene.metric("egress_failovers_total", backend="default/ai-timeout", reason="timeout") == 1


def test_a_400_is_passed_through_untouched_and_not_retried(scene: Scene) -> None:
    body = {"error": {"message": "bad request: messages is required", "type": "invalid_request_error"}}
    scene.primary.script("s400", Json(400, body, {"x-request-id": "req-400"}))
    with scene.http() as client:
        response = client.post("https://s400.llm.test/v1/chat/completions", json={"model": "m"}, headers={"x-test-case": "s400"})
    assert response.status_code == 400
    assert response.json() == body
    assert response.headers["x-request-id"] == "req-400"
    assert scene.fallback.seen("s400") == []


def test_a_300_kib_prompt_is_replayed_byte_identical(scene: Scene) -> None:
    scene.primary.script("big", Json(503))
    prompt = os.urandom(150 * 1024).hex()  # 300 KiB of text
    payload = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]}).encode()
    with scene.http() as client:
        response = client.post("https://big.llm.test/v1/chat/completions", content=payload,
                               headers={"x-test-case": "big", "content-type": "application/json"})
    assert response.status_code == 200, response.text
    [first] = scene.primary.seen("big")
    [second] = scene.fallback.seen("big")
    expected = hashlib.sha256(payload).hexdigest()
    assert (first.body_sha256, second.body_sha256) == (expected, expected)
    assert second.body_len == len(payload) >= 300 * 1024


def test_a_body_larger_than_the_replay_buffer_goes_to_the_first_candidate_only(scene: Scene) -> None:
    scene.primary.script("huge", Json(503, {"error": "busy"}))
    payload = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * (1100 * 1024)}]}).encode()
    with scene.http() as client:
        response = client.post("https://huge.llm.test/v1/chat/completions", content=payload,
                               headers={"x-test-case": "huge", "content-type": "application/json"})
    assert response.status_code == 503 and response.json() == {"error": "busy"}  # the first candidate's answer
    [seen] = scene.primary.seen("huge")
    assert seen.body_sha256 == hashlib.sha256(payload).hexdigest()
    assert scene.fallback.seen("huge") == []


def test_a_candidate_whose_certificate_does_not_verify_is_never_sent_the_prompt(scene: Scene) -> None:
    assert _origin_of(_chat(scene, "rogue")) == "from fallback"
    assert scene.rogue.seen("rogue") == []
    assert scene.metric("egress_failovers_total", backend="default/ai-rogue", reason="tls-failure") == 1


def test_the_replacement_streams_its_first_event_before_the_fallback_sends_its_last(scene: Scene) -> None:
    gate = threading.Event()
    scene.primary.script("stream", Json(503))
    scene.fallback.script("stream", Sse(events=3, wait_after=0, gate=gate))
    received: list[str] = []
    stream = _chat(scene, "stream", stream=True)
    for chunk in stream:
        received.append(chunk.choices[0].delta.content if chunk.choices else "")
        gate.set()  # the origin sends events 1 and 2 only once the client has event 0
    assert received == ["fallback-0 ", "fallback-1 ", "fallback-2 "]


def test_nothing_is_retried_after_the_first_byte_and_a_mid_stream_death_is_an_sse_error(scene: Scene) -> None:
    scene.primary.script("firstbyte", Reset(events=1))
    with scene.http() as client, client.stream(
        "POST", "https://firstbyte.llm.test/v1/chat/completions", json={"model": "m", "stream": True},
        headers={"x-test-case": "firstbyte"},
    ) as response:
        assert response.status_code == 200
        text = b""
        with pytest.raises(httpx.HTTPError):
            for part in response.iter_raw():
                text += part
    assert b"primary-0" in text
    assert b"event: error" in text and b"upstream-unreachable" in text
    assert scene.fallback.seen("firstbyte") == []


def test_the_sdk_sees_a_mid_stream_death_as_an_error_never_a_clean_end(scene: Scene) -> None:
    scene.primary.script("midreset", Reset(events=2))
    got: list[str] = []
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        for chunk in _chat(scene, "midreset", stream=True):
            got.append(chunk.choices[0].delta.content)
    assert got == ["primary-0 ", "primary-1 "]
    assert scene.fallback.seen("midreset") == []


def test_a_non_sse_answer_that_dies_mid_body_is_a_reset(scene: Scene) -> None:
    scene.primary.script("midreset-raw", Reset(events=1, sse=False))
    with scene.http() as client, pytest.raises(httpx.HTTPError):
        client.post("https://midreset-raw.llm.test/v1/chat/completions", json={"model": "m"}, headers={"x-test-case": "midreset-raw"})
    assert scene.fallback.seen("midreset-raw") == []


def test_local_model_first_then_the_cloud(scene: Scene) -> None:
    scene.local.script("local", Json(503))
    assert _origin_of(_chat(scene, "local")) == "from primary"
    [seen] = scene.local.seen("local")
    assert seen.path == "/v1/chat/completions"
    assert scene.primary.seen("local")[0].headers["authorization"] == f"Bearer {OPENAI_KEY}"


def test_every_candidate_down_is_a_503_no_healthy_backend_naming_why(scene: Scene) -> None:
    scene.primary.script("allcool", Json(503, {"error": "down"}, {"retry-after": "30"}))
    scene.fallback.script("allcool", Json(503, {"error": "down"}, {"retry-after": "30"}))
    with scene.http() as client:
        first = client.post("https://allcool.llm.test/v1/chat/completions", json={}, headers={"x-test-case": "allcool"})
        second = client.post("https://allcool.llm.test/v1/chat/completions", json={}, headers={"x-test-case": "allcool"})
    assert first.status_code == 503 and first.headers.get("x-egress-error") is None  # the last provider's own answer
    assert first.json() == {"error": "down"} and first.headers["retry-after"] == "30"  # its peeked body, whole
    assert second.status_code == 503 and second.headers["x-egress-error"] == "no-healthy-backend"
    error = second.json()
    assert error["reason"] == "no-healthy-backend"
    assert re.search(r"default/ai-allcool primary \(api\.openai\.com:443\): cooled-down for", error["error"])
    assert re.search(r"default/ai-allcool fallback \(api\.mistral\.ai:443\): cooled-down for", error["error"])
    assert len(scene.primary.seen("allcool")) == 1 and len(scene.fallback.seen("allcool")) == 1
    assert OPENAI_KEY not in second.text and MISTRAL_KEY not in second.text


def test_no_secret_reaches_logs_metrics_or_the_config_dump(scene: Scene) -> None:
    exposed = scene.gw.logs() + scene.gw.metrics() + scene.gw.admin("/config_dump").text
    for secret in (OPENAI_KEY, MISTRAL_KEY):
        assert secret not in exposed



def test_outlier_detection_ejects_after_consecutive_failures_and_the_candidate_recovers(scene: Scene) -> None:
    # Retry-After: 0 keeps cooldowns out of it: what keeps the primary out is the ejection.
    failing = Json(500, {"error": "boom"}, {"retry-after": "0"})
    scene.primary.script("eject", failing, failing, Json())
    assert _origin_of(_chat(scene, "eject")) == "from fallback"
    assert _origin_of(_chat(scene, "eject")) == "from fallback"  # the second consecutive failure ejects it
    assert scene.metric("egress_outlier_ejections_total", backend="default/ai-eject", provider="primary") == 1
    ejected_at = time.monotonic()
    assert _origin_of(_chat(scene, "eject")) == "from fallback"
    assert len(scene.primary.seen("eject")) == 2
    assert scene.metric("egress_upstream_attempts_total", backend="default/ai-eject", provider="primary", outcome="ejected") >= 1
    deadline = ejected_at + 10
    while time.monotonic() < deadline:
        if _origin_of(_chat(scene, "eject")) == "from primary":
            break
    else:
        pytest.fail("the ejected provider never came back")
    assert time.monotonic() - ejected_at >= 1.5


def _static(scene: Scene, case: str, method: str = "GET") -> httpx.Response:
    with scene.http() as client:
        return client.request(method, f"https://{case}.llm.test/v1/models", headers={"x-test-case": case})


def test_traffic_policy_retries_a_get_to_a_plain_backend_before_any_byte_is_sent(scene: Scene) -> None:
    scene.static.script("retry-get", Json(503), Json(502), Json(200, {"ok": True}))
    response = _static(scene, "retry-get")
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert len(scene.static.seen("retry-get")) == 3


def test_traffic_policy_retries_end_with_the_last_answer(scene: Scene) -> None:
    scene.static.script("retry-get", Json(503, {"attempt": "last"}))
    response = _static(scene, "retry-get")
    assert response.status_code == 503 and response.json() == {"attempt": "last"}
    assert len(scene.static.seen("retry-get")) == 3 + 3  # 1 + attempts, after the previous test's three


def test_a_post_is_not_retried_unless_retry_on_says_so(scene: Scene) -> None:
    scene.static.script("retry-post", Json(503), Json(200))
    assert _static(scene, "retry-post", "POST").status_code == 503
    assert len(scene.static.seen("retry-post")) == 1
    scene.static.script("retry-on", Json(503), Json(200))
    assert _static(scene, "retry-on", "POST").status_code == 200
    assert len(scene.static.seen("retry-on")) == 2


def test_a_per_try_timeout_retries_a_slow_attempt(scene: Scene) -> None:
    scene.static.script("retry-slow", Hang(4), Json(200, {"second": True}))
    started = time.monotonic()
    response = _static(scene, "retry-slow")
    assert response.status_code == 200 and response.json() == {"second": True}
    assert time.monotonic() - started < 3.5


def test_an_httproute_rule_retry_retries_only_its_codes(scene: Scene) -> None:
    scene.static.script("route-retry", Json(502), Json(200, {"ok": 1}))
    assert _static(scene, "route-retry").json() == {"ok": 1}
    assert len(scene.static.seen("route-retry")) == 2
    scene.static.script("route-retry", Json(503, {"not": "listed"}), Json(200))
    response = _static(scene, "route-retry")
    assert response.status_code == 503 and len(scene.static.seen("route-retry")) == 3


def test_backend_request_timeout_bounds_a_direct_request(scene: Scene) -> None:
    scene.static.script("backend-timeout", Hang(4))
    started = time.monotonic()
    response = _static(scene, "backend-timeout")
    assert response.status_code == 504 and response.headers["x-egress-error"] == "upstream-timeout"
    assert time.monotonic() - started < 3.5


def test_backend_request_timeout_bounds_a_walked_attempt_mid_stream_visibly(scene: Scene) -> None:
    never = threading.Event()
    scene.primary.script("slowstream", Sse(events=3, wait_after=0, gate=never, gate_timeout=5))
    started = time.monotonic()
    with scene.http() as client, client.stream(
        "POST", "https://slowstream.llm.test/v1/chat/completions", json={"model": "m", "stream": True},
        headers={"x-test-case": "slowstream"},
    ) as response:
        text = b""
        with pytest.raises(httpx.HTTPError):
            for part in response.iter_raw():
                text += part
    assert time.monotonic() - started < 4
    assert b"primary-0" in text and b"primary-1" not in text
    assert b"event: error" in text and b"upstream-timeout" in text
    assert scene.fallback.seen("slowstream") == []  # a byte had gone: never retried


def test_concurrent_requests_each_fail_over_on_their_own(scene: Scene) -> None:
    from concurrent.futures import ThreadPoolExecutor

    scene.primary.script("parallel", Json(503, {"error": "busy"}, {"retry-after": "0"}))
    scene.fallback.script("parallel", Sse(events=3))

    def one(_: int) -> bytes:
        with scene.http() as client, client.stream(
            "POST", "https://parallel.llm.test/v1/chat/completions", json={"model": "m", "stream": True},
            headers={"x-test-case": "parallel"},
        ) as response:
            assert response.status_code == 200
            return b"".join(response.iter_raw())

    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(one, range(16)))
    assert all(b"fallback-2" in body and b"[DONE]" in body for body in bodies)
    assert len(scene.primary.seen("parallel")) == 16 and len(scene.fallback.seen("parallel")) == 16
