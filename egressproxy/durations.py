"""Go duration strings (`30s`, `1m30s`, `1.5h`, `300ms`) as Kubernetes' metav1.Duration parses them."""

from __future__ import annotations

import re

__all__ = ["parse_duration", "format_duration", "DurationError"]

_UNIT_SECONDS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 micro sign
    "μs": 1e-6,  # U+03BC greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# A number and its unit: as in Go, the unit is every character up to the next digit or '.'.
_COMPONENT = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([^\d.]*)")
# Go durations are int64 nanoseconds: about 292 years.
_MAX_SECONDS = (2**63 - 1) / 1e9


class DurationError(ValueError):
    """A string that Go's time.ParseDuration would reject."""


def parse_duration(text: str) -> float:
    """Return the duration in seconds.

    Follows time.ParseDuration: an optional sign, then one or more decimal numbers each with a unit
    (ns, us, µs, ms, s, m, h); the bare `0` is the only unit-less value accepted.
    """
    if not isinstance(text, str):
        raise DurationError(f"expected a duration string such as '30s', got {type(text).__name__}")
    s = text.strip()
    if s != text or not s:
        raise DurationError(f"invalid duration {text!r}")
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _COMPONENT.match(s, pos)
        if m is None:
            raise DurationError(f"invalid duration {text!r}")
        number, unit = m.groups()
        if not unit:
            raise DurationError(f"missing unit in duration {text!r} (use ns, us, ms, s, m or h)")
        if unit not in _UNIT_SECONDS:
            raise DurationError(f"unknown unit {unit!r} in duration {text!r} (use ns, us, ms, s, m or h)")
        total += float(number) * _UNIT_SECONDS[unit]
        pos = m.end()
    if not s:
        raise DurationError(f"invalid duration {text!r}")
    if total > _MAX_SECONDS:
        raise DurationError(f"invalid duration {text!r}: longer than Go's maximum of about 2562047h")
    return sign * total


def format_duration(seconds: float) -> str:
    """Render seconds the way Go's Duration.String() would for whole and fractional seconds."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    rest = abs(seconds)
    if rest < 1:
        ms = rest * 1000
        return f"{sign}{ms:g}ms"
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    out = sign
    if hours:
        out += f"{int(hours)}h"
    if hours or minutes:
        out += f"{int(minutes)}m"
    out += f"{secs:g}s"
    return out
