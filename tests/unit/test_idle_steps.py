"""egressproxy/runtime/idle_steps.py: which request steps a snapshot leaves nothing to do, decided per snapshot.

With routing only (the quickstart) every policy step is idle and the HookTable never calls it; each example
that configures one policy kind wakes exactly that step. The set is computed once per snapshot.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from egressproxy.compiler import compile_config
from egressproxy.config.loader import load_paths
from egressproxy.runtime.gateway_addons import GatewayAddons
from egressproxy.runtime.idle_steps import IdleSteps, flow_idle_steps, request_idle_steps
from egressproxy.runtime.reloader import ConfigSource, Reloader
from egressproxy.runtime.state import GatewayState
from egressproxy.snapshot import Snapshot

CONFIG = Path(__file__).resolve().parents[2] / "config"
STEPS = {"rate-limit", "ai-guardrails", "ext-auth", "request-policies", "credentials", "tracing"}


def _example(folder: str) -> Snapshot:
    compiled = compile_config(load_paths([CONFIG / folder]).resources)
    assert compiled.ok and compiled.snapshot is not None, compiled.problems
    return compiled.snapshot


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory) -> IdleSteps:
    state = GatewayState(tmp_path_factory.mktemp("state"))
    GatewayAddons(state, Reloader(ConfigSource(()), state))
    assert isinstance(state.idle_steps, IdleSteps)
    return state.idle_steps


def test_every_policy_step_is_a_gateway_addon_with_its_own_name(idle: IdleSteps) -> None:
    assert {m.step for m in idle.members} == STEPS  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("folder", "awake"),
    [
        ("quickstart", set()),
        ("rate-limits", {"rate-limit"}),
        ("ext-auth", {"ext-auth"}),
        ("policies", {"request-policies"}),
        ("ai-guardrails", {"ai-guardrails"}),
        ("ai-credentials", {"credentials"}),
        ("observability", {"credentials", "tracing"}),
        ("02-ai-token-management", {"rate-limit", "credentials"}),
    ],
)
def test_a_step_is_idle_exactly_when_its_snapshot_configures_nothing_for_it(idle: IdleSteps, folder: str, awake: set[str]) -> None:
    assert idle(_example(folder)) == STEPS - awake


def test_the_set_is_computed_once_per_snapshot() -> None:
    asked: list[Snapshot] = []

    class Step:
        step = "s"

        def idle_on(self, snapshot: Snapshot) -> bool:
            asked.append(snapshot)
            return True

    idle = IdleSteps([Step(), object()])
    first, second = _example("quickstart"), _example("quickstart")
    assert idle(first) == idle(first) == frozenset({"s"})
    assert idle(second) == frozenset({"s"})
    assert asked == [first, second]


def test_a_flow_has_no_idle_steps_until_routed() -> None:
    from mitmproxy.test import tflow

    from egressproxy.engine.answers import flow_record

    flow = tflow.tflow()
    assert flow_idle_steps(flow) == frozenset()
    flow_record(flow).idle_steps = frozenset({"rate-limit"})
    assert flow_idle_steps(flow) == {"rate-limit"}


@pytest.mark.parametrize(
    ("snapshot_idle", "rate_limited", "guarded", "expected"),
    [
        (frozenset({"tracing"}), True, True, {"tracing"}),
        (frozenset({"tracing"}), False, True, {"tracing", "rate-limit"}),
        (frozenset({"tracing"}), True, False, {"tracing", "ai-guardrails"}),
        (frozenset(), False, False, {"rate-limit", "ai-guardrails"}),
        (frozenset(STEPS), False, False, STEPS),
    ],
)
def test_a_request_adds_the_steps_its_own_decision_gives_nothing(snapshot_idle: frozenset[str], rate_limited: bool,
                                                                  guarded: bool, expected: set[str]) -> None:
    """Per route: no budget in the decision -> rate-limit idle, no `ai` policy -> ai-guardrails idle."""
    assert request_idle_steps(snapshot_idle, rate_limited, guarded) == expected


def test_with_nothing_to_add_the_snapshot_set_itself_is_returned() -> None:
    idle = frozenset(STEPS)
    assert request_idle_steps(idle, False, False) is idle
    assert request_idle_steps(frozenset({"tracing"}), False, False) is request_idle_steps(frozenset({"tracing"}), False, False)
