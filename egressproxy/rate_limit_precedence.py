"""Which rate-limit budget a request counts against: DESIGN.md section 4's precedence applied to RateLimitPolicy.

The RateLimitPolicies that apply to a request (`PolicyIndex.policies`: Rule > Route > Backend > Listener >
Gateway, several at one scope in namespace/name order) merge field by field into one budget, the most specific
policy that sets a field winning it: `requests`, `tokens`, `window`, `scope`, `store` (whole: type, address and
password together), `failureMode`, `enforcementMode`. Unset after the merge, `scope` is PerAgent, `store` Local,
`failureMode` Allow and `enforcementMode` Enforce. The budget is named by the most specific contributor; its
counters are keyed by every contributor, so budgets merged from different policies never share a counter.

A policy attached twice to one request (a route filter and a targetRef) contributes once, at its most specific
place. The merge is memoised per attachment point (route, backend, listener, rule), as `PolicyIndex.effective`
does; the compiler warms the memo for every attachment point its route tables can produce, so the data plane
only looks budgets up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from egressproxy.config.problems import ObjectRef
from egressproxy.rate_limits import MERGED_FIELDS, RateLimit, RateLimitFields, RedisStoreConfig

if TYPE_CHECKING:
    from egressproxy.snapshot import PolicyIndex

__all__ = ["KIND", "AttachmentPoint", "RateLimitTable", "merge_rate_limits"]

KIND = "RateLimitPolicy"

# (route, backend, listener, rule): the arguments of `PolicyIndex.policies` that decide which policies apply
AttachmentPoint = tuple[ObjectRef | None, ObjectRef | None, str | None, int | None]


def merge_rate_limits(policies: Sequence[RateLimitFields]) -> RateLimit | None:
    """The one budget of `policies` (most specific first; each ref once): each field from the first that sets
    it. None when no policy applies."""
    if not policies:
        return None
    sources: dict[str, RateLimitFields] = {}
    for name in MERGED_FIELDS:
        for fields in policies:
            if fields.value(name) is not None:
                sources[name] = fields
                break

    def value(name: str, default: Any = None) -> Any:
        source = sources.get(name)
        return source.value(name) if source is not None else default

    store = sources.get("store")
    redis: RedisStoreConfig | None = store.redis if store is not None and store.store == "Redis" else None
    return RateLimit(
        policy=policies[0].policy,
        window=value("window", 0.0),  # every policy sets window (required), so a merge always has one
        requests=value("requests"),
        tokens=value("tokens"),
        scope=value("scope", "PerAgent"),
        redis=redis,
        fail_open=value("failureMode", "Allow") == "Allow",
        report_only=value("enforcementMode", "Enforce") == "Report",
        policies=tuple(fields.policy for fields in policies),
        sources=tuple((name, source.policy) for name, source in sources.items()),
    )


@dataclass(frozen=True, slots=True)
class RateLimitTable:
    """Every RateLimitPolicy of a snapshot as written, and the merged budget per attachment point."""

    policies: Mapping[ObjectRef, RateLimitFields] = field(default_factory=lambda: MappingProxyType({}))
    _memo: dict[AttachmentPoint, RateLimit | None] = field(default_factory=dict, repr=False, compare=False)

    def __bool__(self) -> bool:
        return bool(self.policies)

    def get(self, ref: ObjectRef) -> RateLimitFields | None:
        return self.policies.get(ref)

    def for_request(
        self,
        index: "PolicyIndex",
        route: ObjectRef | None,
        backend: ObjectRef | None,
        listener: str | None,
        rule: int | None,
    ) -> RateLimit | None:
        """The budget of a request at this attachment point (`index` is the same snapshot's PolicyIndex)."""
        point = (route, backend, listener, rule)
        try:
            return self._memo[point]
        except KeyError:
            pass
        limit = self._memo[point] = merge_rate_limits(self.contributors(index, *point))
        return limit

    def contributors(
        self,
        index: "PolicyIndex",
        route: ObjectRef | None,
        backend: ObjectRef | None,
        listener: str | None,
        rule: int | None,
    ) -> tuple[RateLimitFields, ...]:
        """The compiled policies that apply, most specific first, each once."""
        out: dict[ObjectRef, RateLimitFields] = {}
        for attached in index.policies(KIND, route=route, backend=backend, listener=listener, rule=rule):
            fields = self.policies.get(attached.ref)
            if fields is not None and attached.ref not in out:
                out[attached.ref] = fields
        return tuple(out.values())

    def warm(self, index: "PolicyIndex", points: Iterable[AttachmentPoint]) -> None:
        """Merge ahead of traffic (compile time), so a request's lookup finds its budget ready."""
        if self.policies:
            for point in points:
                self.for_request(index, *point)

    def budgets(self) -> tuple[RateLimit, ...]:
        """The distinct budgets merged so far (after `warm`: every one the route tables can produce)."""
        seen: dict[tuple[ObjectRef, ...], RateLimit] = {}
        for limit in self._memo.values():
            if limit is not None:
                seen.setdefault(limit.policies, limit)
        return tuple(seen[k] for k in sorted(seen, key=lambda refs: [str(r) for r in refs]))

    def local_budgets(self) -> tuple[RateLimit, ...]:
        """The budgets (of `budgets()`) counted in this process alone: store Local."""
        return tuple(limit for limit in self.budgets() if limit.redis is None)

    def redis_stores(self) -> frozenset[RedisStoreConfig]:
        """Every Redis store a policy of this snapshot names (its clients are the ones worth keeping)."""
        return frozenset(f.redis for f in self.policies.values() if f.store == "Redis" and f.redis is not None)

    def to_dump(self) -> dict[str, Any]:
        return {str(ref): fields.to_dump() for ref, fields in sorted(self.policies.items())}
