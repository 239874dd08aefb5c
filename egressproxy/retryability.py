"""Whether an upstream attempt may be tried elsewhere, and how long its provider cools down: one function.

`retryable(status, body, headers, phase)` serves both the failover walk (try the next candidate?) and the
health view (skip this provider for how long?), so the two can never disagree about an answer.

The rules (docs/failover.md):

| phase / answer                          | next candidate | cooldown                                  | reason            |
| --------------------------------------- | -------------- | ----------------------------------------- | ----------------- |
| the gateway refused to send (a policy)  | yes            | none                                      | refused           |
| connect refused / unreachable           | yes            | 5s                                        | connect-failure   |
| TLS failed (certificate did not verify) | yes            | 5s                                        | tls-failure       |
| no response head within the try timeout | yes            | 5s                                        | timeout           |
| 429, quota exhausted                    | yes            | 5m (the cap)                              | quota-exhausted   |
| 429, transient                          | yes            | the provider's reset headers, else 5s     | rate-limited      |
| 5xx (529 included)                      | yes            | Retry-After if sent, else 5s              | server-error      |
| any other status                        | no             | none                                      | not-retryable     |
| a response byte already reached client  | no             | none                                      | mid-stream        |

A 429 is quota exhausted when the body names `insufficient_quota` (OpenAI's error code) or the provider says
`x-should-retry: false`: waiting a few seconds does not help, so the provider stays out for the cap.

Cooldown headers, the first that parses wins: `retry-after-ms`, `Retry-After` (seconds or an HTTP date), then
the longest of OpenAI's `x-ratelimit-reset-requests`/`-tokens` (Go-style durations: `6m0s`, `1s`, `20ms`) and
Anthropic's `anthropic-ratelimit-*-reset` (RFC 3339 instants) whose limit is exhausted (its `remaining` header
is 0 or absent). Every value is capped at 5 minutes.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

__all__ = [
    "COOLDOWN_CAP",
    "DEFAULT_COOLDOWN",
    "Phase",
    "Retryability",
    "cooldown_from_headers",
    "is_quota_exhausted",
    "retryable",
]

COOLDOWN_CAP = 300.0  # seconds (DESIGN.md 4.1: capped at 5m)
DEFAULT_COOLDOWN = 5.0  # seconds, when the provider says nothing
_QUOTA_SCAN = 65536  # bytes of a 429 body searched for `insufficient_quota`


class Phase(enum.Enum):
    """How far an attempt got when it ended."""

    REFUSED = "refused"  # the gateway would not send it there (SSRF guard, a credential refused over cleartext)
    CONNECT = "connect"  # no TCP connection (refused, unreachable, DNS, connect timeout)
    TLS = "tls"  # the TLS handshake failed (a certificate that does not verify included)
    HEAD = "head"  # connected, no response head before the try timeout (or the origin closed)
    RESPONSE = "response"  # a response head arrived; nothing of it has been sent to the client
    STREAMING = "streaming"  # response bytes already reached the client


@dataclass(frozen=True, slots=True)
class Retryability:
    retry: bool  # the next candidate may be tried (never after a byte reached the client)
    cooldown: float  # seconds the provider is skipped (0: not cooled down)
    reason: str  # the metric label and the walk's account of the attempt


_PHASE_FAILURES = {Phase.CONNECT: "connect-failure", Phase.TLS: "tls-failure", Phase.HEAD: "timeout"}


def retryable(status: int | None, body: bytes, headers: Mapping[str, str], phase: Phase, now: float | None = None) -> Retryability:
    """Decide one attempt. `headers` are the response's, names lower-case; `now` is wall-clock seconds (for
    HTTP-date and RFC 3339 reset times; default: now)."""
    if phase is Phase.STREAMING:
        return Retryability(False, 0.0, "mid-stream")
    if phase is Phase.REFUSED:
        return Retryability(True, 0.0, "refused")  # says nothing about the provider's health
    if phase is not Phase.RESPONSE or status is None:
        return Retryability(True, DEFAULT_COOLDOWN, _PHASE_FAILURES.get(phase, "connect-failure"))
    if status == 429:
        if is_quota_exhausted(body, headers):
            return Retryability(True, COOLDOWN_CAP, "quota-exhausted")
        return Retryability(True, _or_default(cooldown_from_headers(headers, now)), "rate-limited")
    if 500 <= status <= 599:
        return Retryability(True, _or_default(cooldown_from_headers(headers, now)), "server-error")
    return Retryability(False, 0.0, "not-retryable")


def is_quota_exhausted(body: bytes, headers: Mapping[str, str]) -> bool:
    """A 429 that waiting does not cure: OpenAI's `insufficient_quota`, or the provider's `x-should-retry: false`."""
    if headers.get("x-should-retry", "").strip().lower() == "false":
        return True
    return b"insufficient_quota" in body[:_QUOTA_SCAN]


def _or_default(seconds: float | None) -> float:
    return DEFAULT_COOLDOWN if seconds is None else seconds


def cooldown_from_headers(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the provider asked us to wait, capped at 5 minutes; None when no header says."""
    wall = datetime.now(timezone.utc).timestamp() if now is None else now
    for parse in (_retry_after_ms, _retry_after):
        seconds = parse(headers, wall)
        if seconds is not None:
            return _cap(seconds)
    resets = [s for s in (_openai_reset(headers), _anthropic_reset(headers, wall)) if s is not None]
    return _cap(max(resets)) if resets else None


def _cap(seconds: float) -> float:
    return min(max(seconds, 0.0), COOLDOWN_CAP)


def _retry_after_ms(headers: Mapping[str, str], now: float) -> float | None:
    value = headers.get("retry-after-ms")
    try:
        return float(value) / 1000.0 if value is not None else None
    except ValueError:
        return None


def _retry_after(headers: Mapping[str, str], now: float) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp() - now


_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_reset_duration(value: str) -> float | None:
    """OpenAI's reset durations (`6m0s`, `1s`, `20ms`, `1h2m3.5s`); None for anything else."""
    text = value.strip()
    if not text:
        return None
    total, pos = 0.0, 0
    for match in _GO_DURATION.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        pos = match.end()
    return total if pos == len(text) else None


def _exhausted(headers: Mapping[str, str], remaining_name: str) -> bool:
    """A limit whose `remaining` header is absent or 0 is the one that was hit."""
    remaining = headers.get(remaining_name)
    return remaining is None or remaining.strip() == "0"


def _openai_reset(headers: Mapping[str, str]) -> float | None:
    found: list[float] = []
    for kind in ("requests", "tokens"):
        value = headers.get(f"x-ratelimit-reset-{kind}")
        if value is None or not _exhausted(headers, f"x-ratelimit-remaining-{kind}"):
            continue
        seconds = parse_reset_duration(value)
        if seconds is not None:
            found.append(seconds)
    return max(found) if found else None


_ANTHROPIC_RESET = re.compile(r"anthropic-ratelimit-([a-z-]+)-reset")


def _anthropic_reset(headers: Mapping[str, str], now: float) -> float | None:
    found: list[float] = []
    for name, value in headers.items():
        match = _ANTHROPIC_RESET.fullmatch(name)
        if match is None or not _exhausted(headers, f"anthropic-ratelimit-{match.group(1)}-remaining"):
            continue
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        found.append(when.timestamp() - now)
    return max(found) if found else None
