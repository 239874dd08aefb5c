"""Upstream candidates: priority groups first, weighted order within a group, weight 0 never tried."""

from __future__ import annotations

import random
from collections import Counter

from egressproxy.upstreams import Upstream, order_candidates


def _u(host: str, group: int = 0, weight: int = 1) -> Upstream:
    return Upstream(host, 443, group=group, weight=weight)


def test_groups_are_tried_in_priority_order_whatever_the_draw() -> None:
    for seed in range(20):
        order = order_candidates([_u("c", 2), _u("a", 0), _u("b", 1)], random.Random(seed))
        assert [u.host for u in order] == ["a", "b", "c"]


def test_weight_zero_is_never_a_candidate() -> None:
    order = order_candidates([_u("a", weight=0), _u("b")], random.Random(1))
    assert [u.host for u in order] == ["b"]


def test_first_choice_follows_the_weights() -> None:
    rng = random.Random(7)
    firsts = Counter(order_candidates([_u("heavy", weight=3), _u("light", weight=1)], rng)[0].host for _ in range(4000))
    assert 0.70 < firsts["heavy"] / 4000 < 0.80  # 3/4 expected
    # every member of the group is still in the order, as a fallback
    assert {u.host for u in order_candidates([_u("heavy", weight=3), _u("light", weight=1)], rng)} == {"heavy", "light"}


def test_injected_source_makes_the_order_reproducible() -> None:
    members = [_u(h, weight=w) for h, w in (("a", 1), ("b", 2), ("c", 5))]
    assert order_candidates(members, random.Random(42)) == order_candidates(members, random.Random(42))


def test_dump_is_the_explain_shape() -> None:
    assert _u("api.openai.com", group=1).to_dump() == {
        "backend": None, "host": "api.openai.com", "port": 443, "scheme": "https", "group": 1,
    }
