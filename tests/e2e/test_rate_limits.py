"""RateLimitPolicy through the real gateway: 429 with Retry-After and the JSON denial, recovery when the window
closes, PerAgent / PerRoute / PerExecution buckets, token budgets counted from JSON and SSE usage (the stream still
arriving event by event), the policies that apply merged into one budget (DESIGN.md 4), one counter shared by two
gateways through a real redis-server, failureMode when that Redis is killed mid-traffic, the client of a store a
reload drops closed, and the warning for Local budgets under --workers."""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.gateway import GatewayProcess
from tests.support.llm_origin import LlmOrigin
from tests.support.origins import HttpOrigin
from tests.support.pki import TestCA
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.e2e

GATEWAY = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: http, protocol: HTTP}
  - {name: https, protocol: HTTPS, tls: {mode: Terminate, caCertRef: {name: egress-ca}}}
  upstreamTLS:
    additionalTrustBundleSecretRef: {name: origin-ca}
    hostAliases:
    - {ip: 127.0.0.1, hostnames: [api.example.test, other.example.test, llm.example.test]}
"""


def route(name: str, host: str, policy: str | None = None) -> str:
    filters = (
        f"\n  - filters:\n    - {{type: ExtensionRef, extensionRef: {{group: clrk.apoxy.dev, kind: RateLimitPolicy, name: {policy}}}}}"
        if policy
        else "\n  - {}"
    )
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}}}
spec:
  parentRefs: [{{name: eg, sectionName: http}}, {{name: eg, sectionName: https}}]
  hostnames: [{host}]
  rules:{filters}
"""


def policy(name: str, body: str, *, gateway_wide: bool = False) -> str:
    target = "\n  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}]" if gateway_wide else ""
    spec = "".join(f"\n  {line}" for line in body.strip().splitlines())
    return f"""
apiVersion: clrk.apoxy.dev/v1alpha1
kind: RateLimitPolicy
metadata: {{name: {name}}}
spec:{spec}{target}
"""


def plain(gw: GatewayProcess, identity: str = "team-a/agent") -> httpx.Client:
    return httpx.Client(proxy=httpx.Proxy(gw.proxy_url, auth=(identity, "unused")), timeout=15)


def tls_client(gw: GatewayProcess, gateway_ca: tuple[Path, str], identity: str = "team-a/agent") -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(gateway_ca[0]))
    return httpx.Client(proxy=httpx.Proxy(gw.proxy_url, auth=(identity, "unused")), verify=ctx, timeout=15)


def metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    total = 0.0
    for found_labels, value in re.findall(rf"^{name}\{{([^}}]*)\}} ([0-9.e+]+)$", gw.metrics(), re.M):
        if all(f'{k}="{v}"' in found_labels for k, v in labels.items()):
            total += float(value)
    return total


def assert_rate_limited(r: httpx.Response, policy_name: str) -> int:
    """The DESIGN.md 4.1 denial, as 429 with Retry-After; returns the Retry-After seconds."""
    assert r.status_code == 429, r.text
    assert r.headers["x-egress-denied"] == "rate-limited"
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error", "reason", "policy"}
    assert (body["reason"], body["policy"]) == ("rate-limited", f"RateLimitPolicy/default/{policy_name}")
    retry_after = int(r.headers["retry-after"])
    assert retry_after >= 1
    return retry_after


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `condition` until true; the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"not within {timeout}s: {what}"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
def echo(plain_origin: Callable[..., HttpOrigin]) -> HttpOrigin:
    return plain_origin(name="api")


# --- requests ---------------------------------------------------------------------------------------------------


def test_over_the_limit_is_a_429_with_retry_after_and_the_window_frees_again(gateway, gateway_ca, trust_secret, echo) -> None:
    gw = gateway(GATEWAY, route("api", "api.example.test", "two"), policy("two", "requests: 2\nwindow: 2s"),
                 gateway_ca[1], trust_secret)
    url = f"http://api.example.test:{echo.port}/v1/x"
    with plain(gw) as client:
        assert [client.get(url).status_code for _ in range(2)] == [200, 200], gw.logs()
        denied = client.get(url)
        retry_after = assert_rate_limited(denied, "two")
        assert retry_after <= 2
        assert "2 requests per 2s" in denied.json()["error"]
        assert len(echo.requests) == 2  # the denied request never reached the origin
        assert metric(gw, "egress_denials_total", reason="rate-limited") == 1
        took = wait_for(lambda: client.get(url).status_code == 200, retry_after + 2, "the window frees a slot")
        assert took <= retry_after + 0.5


def test_per_agent_counts_each_workload_identity_apart(gateway, gateway_ca, trust_secret, tls_origin) -> None:
    origin = tls_origin("api.example.test")
    gw = gateway(GATEWAY, route("api", "api.example.test"), policy("per-agent", "requests: 1\nwindow: 1m\nscope: PerAgent", gateway_wide=True),
                 gateway_ca[1], trust_secret)
    url = f"https://api.example.test:{origin.port}/"
    with tls_client(gw, gateway_ca, "team-a/agent") as a, tls_client(gw, gateway_ca, "team-b/agent") as b:
        assert a.get(url).status_code == 200, gw.logs()
        assert_rate_limited(a.get(url), "per-agent")
        assert b.get(url).status_code == 200  # another workload has its own budget
        assert_rate_limited(b.get(url), "per-agent")


def test_per_route_counts_each_route_for_every_workload(gateway, gateway_ca, trust_secret, echo) -> None:
    gw = gateway(GATEWAY, route("api", "api.example.test"), route("other", "other.example.test"),
                 policy("per-route", "requests: 2\nwindow: 1m\nscope: PerRoute", gateway_wide=True), gateway_ca[1], trust_secret)
    api, other = f"http://api.example.test:{echo.port}/", f"http://other.example.test:{echo.port}/"
    with plain(gw, "team-a/agent") as a, plain(gw, "team-b/agent") as b:
        assert (a.get(api).status_code, b.get(api).status_code) == (200, 200), gw.logs()
        assert_rate_limited(a.get(api), "per-route")  # both workloads spent the route's budget
        assert (a.get(other).status_code, b.get(other).status_code) == (200, 200)  # the other route's own
        assert_rate_limited(b.get(other), "per-route")


def test_per_execution_counts_each_execution_id_and_pools_requests_without_one(gateway, gateway_ca, trust_secret, echo) -> None:
    gw = gateway(GATEWAY, route("api", "api.example.test", "per-run"), policy("per-run", "requests: 1\nwindow: 1m\nscope: PerExecution"),
                 gateway_ca[1], trust_secret)
    url = f"http://api.example.test:{echo.port}/"
    with plain(gw) as client:
        run = {"x-egress-execution-id": "run-1"}
        assert client.get(url, headers=run).status_code == 200, gw.logs()
        assert_rate_limited(client.get(url, headers=run), "per-run")
        assert client.get(url, headers={"x-egress-execution-id": "run-2"}).status_code == 200
        assert client.get(url).status_code == 200  # no execution id: one shared bucket, still limited
        assert_rate_limited(client.get(url), "per-run")


def test_report_mode_lets_requests_pass_and_counts_what_it_would_have_denied(gateway, gateway_ca, trust_secret, echo) -> None:
    gw = gateway(GATEWAY, route("api", "api.example.test", "watch"), policy("watch", "requests: 1\nwindow: 1m\nenforcementMode: Report"),
                 gateway_ca[1], trust_secret)
    url = f"http://api.example.test:{echo.port}/"
    with plain(gw) as client:
        assert [client.get(url).status_code for _ in range(3)] == [200, 200, 200], gw.logs()
    assert metric(gw, "egress_policy_reports_total", reason="rate-limited", policy="RateLimitPolicy/default/watch") == 2
    assert metric(gw, "egress_denials_total", reason="rate-limited") == 0


# --- precedence: the policies that apply merge into one budget ------------------------------------------------


def test_gateway_requests_and_route_tokens_are_one_budget_named_by_the_route_policy(
    gateway, gateway_ca, trust_secret, llm, echo
) -> None:
    """DESIGN.md 4: the route's policy supplies tokens, the gateway's supplies requests; one budget, named by the
    route's policy, counted apart from the gateway's own budget on other routes."""
    gw = gateway(GATEWAY, route("llm", "llm.example.test", "route-tokens"), route("api", "api.example.test"),
                 policy("gw-requests", "requests: 3\nwindow: 1m", gateway_wide=True), policy("route-tokens", "tokens: 50\nwindow: 1m"),
                 gateway_ca[1], trust_secret)
    chat, health = f"https://llm.example.test:{llm.port}/v1/chat/completions", f"https://llm.example.test:{llm.port}/health"
    with tls_client(gw, gateway_ca, "team-a/agent") as a, tls_client(gw, gateway_ca, "team-b/agent") as b:
        for _ in range(2):  # 30, then 60 tokens of 50
            r = a.post(chat, json={"model": "m", "messages": []})
            assert r.status_code == 200, r.text
        denied = a.get(health)
        assert_rate_limited(denied, "route-tokens")
        assert "50 tokens per 60s (PerAgent)" in denied.json()["error"]
        assert [b.get(health).status_code for _ in range(3)] == [200] * 3  # no tokens spent: the requests count
        denied = b.get(health)
        assert_rate_limited(denied, "route-tokens")  # the gateway's requests, in the route policy's budget
        assert "3 requests per 60s (PerAgent)" in denied.json()["error"]
    with plain(gw, "team-a/agent") as a:  # the gateway's budget alone on the api route: its own counter
        api = f"http://api.example.test:{echo.port}/"
        assert [a.get(api).status_code for _ in range(3)] == [200] * 3
        assert_rate_limited(a.get(api), "gw-requests")


def test_a_looser_route_policy_overrides_the_gateway_requests(gateway, gateway_ca, trust_secret, echo) -> None:
    gw = gateway(GATEWAY, route("api", "api.example.test", "api-more"), route("other", "other.example.test"),
                 policy("gw-one", "requests: 1\nwindow: 1m", gateway_wide=True), policy("api-more", "requests: 3\nwindow: 1m"),
                 gateway_ca[1], trust_secret)
    api, other = f"http://api.example.test:{echo.port}/", f"http://other.example.test:{echo.port}/"
    with plain(gw) as client:
        assert [client.get(api).status_code for _ in range(3)] == [200] * 3, gw.logs()  # the route's 3, not 1
        assert_rate_limited(client.get(api), "api-more")
        assert client.get(other).status_code == 200
        assert_rate_limited(client.get(other), "gw-one")


# --- tokens -----------------------------------------------------------------------------------------------------


@pytest.fixture
def llm(origin_ca: TestCA, tmp_path: Path) -> Iterator[LlmOrigin]:
    cert, key = origin_ca.issue("llm.example.test").write(tmp_path / "llm", "leaf")
    with LlmOrigin(input_tokens=20, output_tokens=10, tls=(cert, key)) as origin:  # 30 tokens per answer
        yield origin


TOKENS = policy("tokens", "tokens: 50\nwindow: 1m")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_token_budget_counts_the_usage_of_json_answers(gateway, gateway_ca, trust_secret, llm, path) -> None:
    gw = gateway(GATEWAY, route("llm", "llm.example.test", "tokens"), TOKENS, gateway_ca[1], trust_secret)
    url = f"https://llm.example.test:{llm.port}{path}"
    with tls_client(gw, gateway_ca) as client:
        for _ in range(2):  # 30, then 60 tokens: the second answer overdraws the budget once
            r = client.post(url, json={"model": "m", "messages": []})
            assert r.status_code == 200 and "usage" in r.json(), r.text + gw.logs()
        denied = client.post(url, json={"model": "m", "messages": []})
        assert_rate_limited(denied, "tokens")
        assert "50 tokens per 60s" in denied.json()["error"]
    assert len(llm.requests) == 2


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_token_budget_counts_the_usage_of_sse_streams_that_still_arrive_event_by_event(
    gateway, gateway_ca, trust_secret, llm, path
) -> None:
    gw = gateway(GATEWAY, route("llm", "llm.example.test", "tokens"), TOKENS, gateway_ca[1], trust_secret)
    url = f"https://llm.example.test:{llm.port}{path}"
    body = {"model": "m", "messages": [], "stream": True, "stream_options": {"include_usage": True}}
    with tls_client(gw, gateway_ca) as client:
        for _ in range(2):
            with client.stream("POST", url, json=body) as r:
                assert r.status_code == 200, gw.logs()
                lines = r.iter_lines()
                first = next(line for line in lines if line.startswith("data:"))
                # The provider holds the rest back until this first event is here: a buffering gateway fails here.
                llm.gate.set()
                rest = list(lines)
            assert "first" in first or "message_start" in first
            assert any('"usage"' in line for line in rest)
            llm.gate.clear()
        assert_rate_limited(client.post(url, json=body), "tokens")


# --- Redis ------------------------------------------------------------------------------------------------------


def redis_policy(name: str, server: RedisServer, extra: str = "", password_secret: str | None = None) -> str:
    secret = f", passwordSecretRef: {{name: {password_secret}}}" if password_secret else ""
    return policy(name, f'requests: 3\nwindow: 1m\nstore: {{type: Redis, redis: {{address: "{server.address}"{secret}}}}}\n{extra}')


def test_two_gateways_sharing_one_redis_share_the_counter(gateway, gateway_ca, trust_secret, echo, redis_server) -> None:  # noqa: F811
    server = redis_server()
    docs = (GATEWAY, route("api", "api.example.test", "shared"), redis_policy("shared", server), gateway_ca[1], trust_secret)
    gw1, gw2 = gateway(*docs), gateway(*docs)
    url = f"http://api.example.test:{echo.port}/"
    with plain(gw1) as one, plain(gw2) as two:
        assert [one.get(url).status_code, two.get(url).status_code, one.get(url).status_code] == [200, 200, 200], gw1.logs()
        assert_rate_limited(two.get(url), "shared")  # gateway 2 saw one request, but the budget is shared
        assert_rate_limited(one.get(url), "shared")
    assert len(echo.requests) == 3


def test_a_token_budget_in_redis_is_shared_by_two_gateways(gateway, gateway_ca, trust_secret, llm, redis_server) -> None:  # noqa: F811
    server = redis_server()
    store = f'store: {{type: Redis, redis: {{address: "{server.address}"}}}}'
    docs = (GATEWAY, route("llm", "llm.example.test", "tokens"), policy("tokens", f"tokens: 25\nwindow: 1m\n{store}"),
            gateway_ca[1], trust_secret)
    gw1, gw2 = gateway(*docs), gateway(*docs)
    with tls_client(gw1, gateway_ca) as one, tls_client(gw2, gateway_ca) as two:
        r = one.post(f"https://llm.example.test:{llm.port}/v1/chat/completions", json={"model": "m", "messages": []})
        assert r.status_code == 200, gw1.logs()  # 30 tokens spent through gateway 1
        # A request that reports no usage spends nothing: gateway 2 can only deny it from the shared count.
        no_usage = f"https://llm.example.test:{llm.port}/health"
        wait_for(lambda: two.get(no_usage).status_code == 429, 5, "gateway 2 sees the tokens gateway 1 spent")
        assert_rate_limited(two.get(no_usage), "tokens")


def test_redis_killed_mid_traffic_allow_passes_and_deny_denies(gateway, gateway_ca, trust_secret, echo, redis_server) -> None:  # noqa: F811
    server = redis_server()
    gw = gateway(
        GATEWAY,
        route("api", "api.example.test", "open-when-down"),
        route("other", "other.example.test", "closed-when-down"),
        redis_policy("open-when-down", server),  # failureMode defaults to Allow
        redis_policy("closed-when-down", server, "failureMode: Deny"),
        gateway_ca[1],
        trust_secret,
    )
    api, other = f"http://api.example.test:{echo.port}/", f"http://other.example.test:{echo.port}/"
    with plain(gw) as client:
        assert (client.get(api).status_code, client.get(other).status_code) == (200, 200), gw.logs()
        server.stop()
        assert [client.get(api).status_code for _ in range(4)] == [200] * 4  # Allow: past the limit of 3, unlimited
        down = client.get(other)
        assert_rate_limited(down, "closed-when-down")
        assert "unreachable (failureMode Deny)" in down.json()["error"]
        errors = metric(gw, "egress_rate_limit_store_errors_total", policy="RateLimitPolicy/default/open-when-down", failure_mode="Allow")
        assert errors == 4
        assert metric(gw, "egress_rate_limit_store_errors_total", policy="RateLimitPolicy/default/closed-when-down", failure_mode="Deny") == 1
        assert gw.logs().count("is unreachable") == 1  # once per outage, not per request
        server.start()
        wait_for(lambda: client.get(other).status_code == 200, 10, "the Deny policy passes again once Redis answers")
    assert "answers again" in gw.logs()


def redis_clients(server: RedisServer) -> int:
    """Connections to `server` other than the one asking."""
    with redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5) as client:
        me = client.client_id()
        return sum(1 for c in client.client_list() if int(c["id"]) != me)


def test_after_a_reload_the_client_of_a_store_no_policy_names_is_closed(gateway, gateway_ca, trust_secret, echo, redis_server) -> None:  # noqa: F811
    old, new = redis_server(), redis_server()
    gw = gateway(GATEWAY, route("api", "api.example.test", "moving"), redis_policy("moving", old), gateway_ca[1], trust_secret)
    url = f"http://api.example.test:{echo.port}/"
    with plain(gw) as client:
        assert client.get(url).status_code == 200, gw.logs()
        assert redis_clients(old) == 1
        (gw.configs[0] / "02.yaml").write_text(redis_policy("moving", new))
        assert gw.admin("/reload", "POST").status_code == 200, gw.logs()
        assert client.get(url).status_code == 200
        assert redis_clients(new) == 1
        wait_for(lambda: redis_clients(old) == 0, 5, "the gateway closes its client of the store no policy names")
    assert f"rate-limit store Redis at {old.address}: client closed" in gw.logs()


def test_the_redis_password_reaches_no_log_dump_or_answer(gateway, gateway_ca, trust_secret, echo, redis_server) -> None:  # noqa: F811
    password = "pw-7f3a9c-never-shown"
    server = redis_server(password=password)
    secret = f"apiVersion: v1\nkind: Secret\nmetadata: {{name: redis-auth}}\nstringData: {{password: {password}}}\n"
    gw = gateway(GATEWAY, route("api", "api.example.test", "guarded"), redis_policy("guarded", server, "failureMode: Deny", "redis-auth"),
                 secret, gateway_ca[1], trust_secret)
    url = f"http://api.example.test:{echo.port}/"
    with plain(gw) as client:
        assert client.get(url).status_code == 200, gw.logs()  # authenticated with the Secret's password
        server.stop()
        down = client.get(url)
        assert down.status_code == 429
    dump = gw.admin("/config_dump").text
    assert "Secret/default/redis-auth" in dump
    for text in (dump, gw.logs(), gw.metrics(), down.text, str(down.headers)):
        assert password not in text


# --- workers ----------------------------------------------------------------------------------------------------


def test_local_budgets_under_several_workers_are_warned_about_once(gateway, gateway_ca, trust_secret) -> None:
    gw = gateway(GATEWAY, route("api", "api.example.test"), policy("per-agent", "requests: 5\nwindow: 1m", gateway_wide=True),
                 gateway_ca[1], trust_secret, extra_args=["--workers", "2"])
    wait_for(lambda: "worker 1 started" in gw.logs() and gw.logs().count("regular listening") >= 2, 20, "both workers serve")
    warning = "rate limits with store Local are counted by each of the 2 worker processes alone"
    assert gw.logs().count(warning) == 1, gw.logs()
    assert "RateLimitPolicy/default/per-agent" in gw.logs().split(warning)[1].splitlines()[0]
