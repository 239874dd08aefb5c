"""decision_reuse: a connection's next request gets its last decision back only when nothing it would be decided
on differs (snapshot, listener, host, port, scheme, path, connection name) and nothing else could change it."""

from __future__ import annotations

import pytest

import egressproxy.decision_reuse as decision_reuse
from egressproxy.decision_reuse import DecisionMemo, decide_reusing
from egressproxy.decisions import RequestDecision, RequestView, decide_request
from egressproxy.snapshot import Listener, Snapshot
from tests.support.addon_state import compile_snapshot

GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: https, protocol: HTTPS, tls: {mode: Terminate, caCertRef: {name: ca}}}
"""

ROUTES = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg}]
  hostnames: [api.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: one}]
  - matches: [{path: {type: PathPrefix, value: /split}}]
    backendRefs:
    - {group: gateway.kgateway.dev, kind: Backend, name: one, weight: 1}
    - {group: gateway.kgateway.dev, kind: Backend, name: two, weight: 1}
  - {}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: teams}
spec:
  parentRefs: [{name: eg}]
  hostnames: [teams.example.com]
  rules:
  - matches: [{headers: [{name: x-team, value: a}]}]
    backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: one}]
  - {}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: one}
spec: {type: Static, static: {hosts: [{host: one.internal, port: 8443}]}}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: two}
spec: {type: Static, static: {hosts: [{host: two.internal, port: 8443}]}}
"""


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    return compile_snapshot(GATEWAY + ROUTES, ca="ca")


def https(snapshot: Snapshot) -> Listener:
    listener = snapshot.gateway.listener("https")
    assert listener is not None
    return listener


def view(host: str = "api.example.com", path: str = "/v1/x", headers: dict[str, str] | None = None, port: int = 443,
         method: str = "GET") -> RequestView:
    return RequestView(host, port, method, path, headers or {}, {}, "https")


class CountingDecide:
    """decide_request, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: object, **kwargs: object) -> RequestDecision:
        self.calls += 1
        return decide_request(*args, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def decide(monkeypatch: pytest.MonkeyPatch) -> CountingDecide:
    counting = CountingDecide()
    monkeypatch.setattr(decision_reuse, "decide_request", counting)
    return counting


def test_the_same_key_on_the_same_snapshot_reuses_the_decision(snapshot: Snapshot, decide: CountingDecide) -> None:
    first, memo = decide_reusing(None, snapshot, https(snapshot), view(), "api.example.com")
    assert memo is not None and first.upstreams[0].host == "one.internal"
    again, memo2 = decide_reusing(memo, snapshot, https(snapshot), view(method="POST", headers={"x": "y"}), "api.example.com")
    assert again is first and memo2 is memo
    assert decide.calls == 1


@pytest.mark.parametrize(
    ("changed", "expected_route"),
    [
        (view(path="/v1/other"), "api"),
        (view(port=8443), "api"),
        (view(host="teams.example.com"), "teams"),
    ],
)
def test_any_other_key_decides_again(snapshot: Snapshot, decide: CountingDecide, changed: RequestView,
                                     expected_route: str) -> None:
    _, memo = decide_reusing(None, snapshot, https(snapshot), view(), None)
    decision, _ = decide_reusing(memo, snapshot, https(snapshot), changed, None)
    assert decide.calls == 2
    assert decision.route is not None and decision.route.ref.name == expected_route


def test_a_different_connection_name_decides_again_and_denies_the_mismatch(snapshot: Snapshot, decide: CountingDecide) -> None:
    _, memo = decide_reusing(None, snapshot, https(snapshot), view(), "api.example.com")
    decision, _ = decide_reusing(memo, snapshot, https(snapshot), view(), "other.example.com")
    assert decide.calls == 2
    assert decision.verdict.reason == "host-mismatch"


def test_a_reload_that_changes_the_routes_is_never_answered_from_the_memo(snapshot: Snapshot) -> None:
    """Same key, new snapshot: the new configuration decides (here it no longer has the route: denied)."""
    decision, memo = decide_reusing(None, snapshot, https(snapshot), view(), "api.example.com")
    assert decision.verdict.allowed and memo is not None
    reloaded = compile_snapshot(GATEWAY + ROUTES.replace("hostnames: [api.example.com]", "hostnames: [api2.example.com]"), ca="ca")
    after, memo_after = decide_reusing(memo, reloaded, https(reloaded), view(), "api.example.com")
    assert (after.verdict.allowed, after.verdict.reason) == (False, "no-route")
    assert memo_after is not None and memo_after.snapshot is reloaded


def test_an_identical_recompile_is_still_a_new_snapshot(snapshot: Snapshot, decide: CountingDecide) -> None:
    _, memo = decide_reusing(None, snapshot, https(snapshot), view(), None)
    same_text = compile_snapshot(GATEWAY + ROUTES, ca="ca")
    decide_reusing(memo, same_text, https(same_text), view(), None)
    assert decide.calls == 2


def test_a_host_whose_routes_match_on_headers_is_decided_every_time(snapshot: Snapshot, decide: CountingDecide) -> None:
    first, memo = decide_reusing(None, snapshot, https(snapshot), view("teams.example.com", "/", {"x-team": "a"}), None)
    assert memo is None and first.rule_index == 0
    other, _ = decide_reusing(memo, snapshot, https(snapshot), view("teams.example.com", "/", {"x-team": "b"}), None)
    assert other.rule_index == 1 and decide.calls == 2


def test_a_weighted_choice_is_drawn_for_every_request(snapshot: Snapshot) -> None:
    """Two weighted backends in one group: the order is random per request, so it is never kept."""
    decision, memo = decide_reusing(None, snapshot, https(snapshot), view(path="/split"), None)
    assert len(decision.upstreams) == 2 and memo is None


def test_a_denial_is_reused_too(snapshot: Snapshot, decide: CountingDecide) -> None:
    denied, memo = decide_reusing(None, snapshot, https(snapshot), view("nobody.example.com", "/"), None)
    assert not denied.verdict.allowed and memo is not None
    again, _ = decide_reusing(memo, snapshot, https(snapshot), view("nobody.example.com", "/"), None)
    assert again is denied and decide.calls == 1


def test_a_memo_of_another_listener_is_not_used(snapshot: Snapshot, decide: CountingDecide) -> None:
    two = compile_snapshot(
        GATEWAY + "  - {name: other, protocol: HTTPS, port: 8443, tls: {mode: Terminate, caCertRef: {name: ca}}}\n" + ROUTES,
        ca="ca",
    )
    _, memo = decide_reusing(None, two, https(two), view(), None)
    other = two.gateway.listener("other")
    assert other is not None and isinstance(memo, DecisionMemo)
    decide_reusing(memo, two, other, view(), None)
    assert decide.calls == 2


HOST_ONLY = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: hosts}
spec:
  parentRefs: [{name: eg}]
  hostnames: [hosts.example.com]
  rules: [{backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: one}]}]
"""


def test_a_hostname_only_route_reuses_the_decision_for_any_path(decide: CountingDecide) -> None:
    snapshot = compile_snapshot(GATEWAY + ROUTES + HOST_ONLY, ca="ca")
    first, memo = decide_reusing(None, snapshot, https(snapshot), view("hosts.example.com", "/a"), None)
    assert memo is not None and memo.path is None
    again, _ = decide_reusing(memo, snapshot, https(snapshot), view("hosts.example.com", "/b?x=1"), None)
    assert again is first and decide.calls == 1


def test_where_a_rule_matches_on_the_path_the_path_is_part_of_the_key(snapshot: Snapshot, decide: CountingDecide) -> None:
    """api.example.com has PathPrefix rules: /v1/x and /other pick different rules, so the memo holds the path."""
    first, memo = decide_reusing(None, snapshot, https(snapshot), view(path="/v1/x"), None)
    assert memo is not None and memo.path == "/v1/x"
    other, _ = decide_reusing(memo, snapshot, https(snapshot), view(path="/other"), None)
    assert decide.calls == 2 and (first.rule_index, other.rule_index) == (0, 2)
