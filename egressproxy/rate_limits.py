"""RateLimitPolicy in its compiled forms, and which bucket a request counts in (pure; no I/O).

Two forms: `RateLimitFields` is one policy as written (None where it sets nothing), compiled once per snapshot;
`RateLimit` is the budget a request counts against: the field-by-field merge of every RateLimitPolicy that
applies to it (DESIGN.md section 4: most specific wins each field; egressproxy/rate_limit_precedence.py merges).

Scopes (DESIGN.md 4.1 / 4.2):
- `PerAgent`: one bucket per workload identity `namespace/serviceaccount` (DESIGN.md section 5; unidentified
  workloads share the `unknown/unknown` bucket);
- `PerRoute`: one bucket per route (`namespace/name`; traffic served by defaultPolicy allow-all shares one);
- `PerExecution`: one bucket per value of the `x-egress-execution-id` request header (an agent run, a job), per
  workload. A request without the header counts in its workload's one "no execution id" bucket: leaving the
  header out never escapes the limit, it only pools those requests together.

A request has one budget. Its counters are keyed by the contributing policies, most specific first, plus the
scope's subject: two requests with the same effective budget share a counter, different budgets never do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from egressproxy.config.problems import ObjectRef
from egressproxy.flowrecord import Identity

__all__ = ["EXECUTION_HEADER", "MERGED_FIELDS", "NO_EXECUTION", "RateLimit", "RateLimitFields", "RedisStoreConfig", "bucket_key"]

EXECUTION_HEADER = "x-egress-execution-id"
NO_EXECUTION = "-"  # the bucket of PerExecution requests that carry no execution id
_MAX_KEY_PART = 128  # longer client-supplied ids are hashed, so a key stays small in memory and in Redis


@dataclass(frozen=True, slots=True)
class RedisStoreConfig:
    """`store.redis`: where the shared counters live. The password never appears in a repr or a dump."""

    host: str
    port: int
    password_secret: ObjectRef | None = None
    password: str | None = field(default=None, repr=False)
    username: str | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def to_dump(self) -> dict[str, Any]:
        secret = str(self.password_secret) if self.password_secret else None
        return {"address": self.address, "passwordSecretRef": secret}


@dataclass(frozen=True, slots=True)
class RateLimitFields:
    """One RateLimitPolicy as written: each field None where the policy does not set it, so a merge takes that
    field from a less specific policy. `store` is one field: a policy that sets it replaces the whole store
    (never one policy's address with another's password)."""

    policy: ObjectRef
    requests: int | None = None
    tokens: int | None = None
    window: float | None = None
    scope: str | None = None
    store: str | None = None  # Local | Redis, when the policy sets `store`
    redis: RedisStoreConfig | None = None  # with store Redis
    failure_mode: str | None = None  # Allow | Deny
    enforcement_mode: str | None = None  # Enforce | Report

    @classmethod
    def from_spec(
        cls, ref: ObjectRef, spec: Mapping[str, Any], redis: RedisStoreConfig | None = None
    ) -> "RateLimitFields":
        store = spec.get("store")
        window = spec.get("window")
        return cls(
            policy=ref,
            requests=spec.get("requests"),
            tokens=spec.get("tokens"),
            window=float(window) if window is not None else None,
            scope=spec.get("scope"),
            store=(store.get("type") or "Local") if store is not None else None,
            redis=redis if store is not None else None,
            failure_mode=spec.get("failureMode"),
            enforcement_mode=spec.get("enforcementMode"),
        )

    def value(self, name: str) -> Any:
        """The value of spec field `name` (one of `MERGED_FIELDS`), None when unset."""
        return getattr(self, _ATTRIBUTES[name])

    @property
    def sets(self) -> tuple[str, ...]:
        """The spec fields this policy sets, in `MERGED_FIELDS` order."""
        return tuple(name for name in MERGED_FIELDS if self.value(name) is not None)

    def to_dump(self) -> dict[str, Any]:
        """The fields it sets (a dump never shows the Redis password, only the Secret's name)."""
        out: dict[str, Any] = {name: self.value(name) for name in self.sets}
        if self.store is not None:
            out["store"] = _store_dump(self.redis if self.store == "Redis" else None)
        return out


# The fields a merge resolves one by one, spec name -> attribute of RateLimitFields.
_ATTRIBUTES = {
    "requests": "requests",
    "tokens": "tokens",
    "window": "window",
    "scope": "scope",
    "store": "store",
    "failureMode": "failure_mode",
    "enforcementMode": "enforcement_mode",
}
MERGED_FIELDS = tuple(_ATTRIBUTES)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The budget a request counts against: limits, window, scope, store and modes, merged from `policies`.

    `policy` names it (the denial body's `policy`, the metrics' label): the most specific contributing policy.
    `policies` are all contributors, most specific first (`policy` first); `sources` says which supplied each
    field. Constructed with `policy` alone, it is that one policy's budget.
    """

    policy: ObjectRef
    window: float  # seconds
    requests: int | None = None
    tokens: int | None = None
    scope: str = "PerAgent"  # PerAgent | PerRoute | PerExecution
    redis: RedisStoreConfig | None = None  # None: the Local (in-process) store
    fail_open: bool = True  # failureMode Allow (default) | Deny, when the Redis store is unreachable
    report_only: bool = False  # enforcementMode Report: count and report, never deny
    policies: tuple[ObjectRef, ...] = ()
    sources: tuple[tuple[str, ObjectRef], ...] = field(default=(), compare=False)  # (spec field, policy)
    # `<ns>/<name>[+<ns>/<name>...]|<scope>`: the counters' key prefix, computed once
    budget_key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.policies:
            object.__setattr__(self, "policies", (self.policy,))
        refs = "+".join(f"{ref.namespace}/{ref.name}" for ref in self.policies)
        object.__setattr__(self, "budget_key", f"{refs}|{self.scope}")

    @property
    def name(self) -> str:
        """`RateLimitPolicy/ns/name`: the denial body's `policy` and the metrics' label."""
        return str(self.policy)

    def to_dump(self) -> dict[str, Any]:
        return {
            "policy": self.name,
            "policies": [str(ref) for ref in self.policies],
            "requests": self.requests,
            "tokens": self.tokens,
            "window": self.window,
            "scope": self.scope,
            "store": _store_dump(self.redis),
            "failureMode": "Allow" if self.fail_open else "Deny",
            "enforcementMode": "Report" if self.report_only else "Enforce",
            "from": {name: str(ref) for name, ref in self.sources},
        }


def _store_dump(redis: RedisStoreConfig | None) -> dict[str, Any]:
    return {"type": "Redis", "redis": redis.to_dump()} if redis else {"type": "Local"}


def bucket_key(limit: RateLimit, identity: Identity, route: str | None, headers: Mapping[str, str]) -> str:
    """The bucket this request counts in under `limit`: `<ns>/<name>[+<ns>/<name>...]|<scope>|<subject>`, the
    contributing policies most specific first (no secret in it; `+` is in no Kubernetes name)."""
    if limit.scope == "PerRoute":
        subject = route or "(no route)"
    elif limit.scope == "PerExecution":
        execution = headers.get(EXECUTION_HEADER, "").strip() or NO_EXECUTION
        subject = f"{identity}|{_bounded(execution)}"
    else:
        subject = str(identity)
    return f"{limit.budget_key}|{subject}"


def _bounded(value: str) -> str:
    if len(value) <= _MAX_KEY_PART:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()
