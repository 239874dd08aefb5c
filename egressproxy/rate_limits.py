"""RateLimitPolicy in its compiled form, and which bucket a request counts in (pure; no I/O).

Scopes (DESIGN.md 4.1 / 4.2):
- `PerAgent`: one bucket per workload identity `namespace/serviceaccount` (DESIGN.md section 5; unidentified
  workloads share the `unknown/unknown` bucket);
- `PerRoute`: one bucket per route (`namespace/name`; traffic served by defaultPolicy allow-all shares one);
- `PerExecution`: one bucket per value of the `x-egress-execution-id` request header (an agent run, a job), per
  workload. A request without the header counts in its workload's one "no execution id" bucket: leaving the
  header out never escapes the limit, it only pools those requests together.

Every attached RateLimitPolicy is its own budget: a request must fit all of them (a route's limit never lifts a
gateway-wide budget). A policy attached twice (a route filter and a targetRef) counts once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from egressproxy.config.problems import ObjectRef
from egressproxy.flowrecord import Identity

__all__ = ["EXECUTION_HEADER", "NO_EXECUTION", "RateLimit", "RedisStoreConfig", "bucket_key"]

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
class RateLimit:
    """One RateLimitPolicy, ready to count: limits, window, scope, store and modes."""

    policy: ObjectRef
    window: float  # seconds
    requests: int | None = None
    tokens: int | None = None
    scope: str = "PerAgent"  # PerAgent | PerRoute | PerExecution
    redis: RedisStoreConfig | None = None  # None: the Local (in-process) store
    fail_open: bool = True  # failureMode Allow (default) | Deny, when the Redis store is unreachable
    report_only: bool = False  # enforcementMode Report: count and report, never deny

    @property
    def name(self) -> str:
        """`RateLimitPolicy/ns/name`: the denial body's `policy` and the metrics' label."""
        return str(self.policy)

    @classmethod
    def from_spec(cls, ref: ObjectRef, spec: Mapping[str, Any], redis: RedisStoreConfig | None = None) -> "RateLimit":
        return cls(
            policy=ref,
            window=float(spec["window"]),
            requests=spec.get("requests"),
            tokens=spec.get("tokens"),
            scope=spec.get("scope", "PerAgent"),
            redis=redis,
            fail_open=spec.get("failureMode", "Allow") == "Allow",
            report_only=spec.get("enforcementMode", "Enforce") == "Report",
        )

    def to_dump(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "tokens": self.tokens,
            "window": self.window,
            "scope": self.scope,
            "store": {"type": "Redis", "redis": self.redis.to_dump()} if self.redis else {"type": "Local"},
            "failureMode": "Allow" if self.fail_open else "Deny",
            "enforcementMode": "Report" if self.report_only else "Enforce",
        }


def bucket_key(limit: RateLimit, identity: Identity, route: str | None, headers: Mapping[str, str]) -> str:
    """The bucket this request counts in under `limit`: `<ns>/<name>|<scope>|<subject>` (no secret in it)."""
    if limit.scope == "PerRoute":
        subject = route or "(no route)"
    elif limit.scope == "PerExecution":
        execution = headers.get(EXECUTION_HEADER, "").strip() or NO_EXECUTION
        subject = f"{identity}|{_bounded(execution)}"
    else:
        subject = str(identity)
    return f"{limit.policy.namespace}/{limit.policy.name}|{limit.scope}|{subject}"


def _bounded(value: str) -> str:
    if len(value) <= _MAX_KEY_PART:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()
