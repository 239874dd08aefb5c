"""What a prompt guard looks for: the builtin detectors (CreditCard, Email, PhoneNumber, Ssn, CaSin) and custom
patterns, each a compiled regex, an optional checksum and the mask that replaces what it finds.

Patterns are compiled with the `regex` module (a superset of `re` for the patterns `validate` accepts) because
it can report *partial* matches at the end of a text: what a streamed response may still complete into a match.
That is how the streaming masker (egressproxy/stream_masking.py) holds back only the characters that could still
be the start of a match, and nothing else. Matching passes `concurrent=True` (the GIL is released while it runs),
so a large body judged in a worker thread (addons/ai_guardrails.py) leaves the event loop free.

Masks follow Presidio's convention (which agentgateway's builtin recognizers come from): the entity's name in
angle brackets, `<CREDIT_CARD>`, `<EMAIL>`, `<PHONE_NUMBER>`, `<SSN>`, `<CA_SIN>`; a custom pattern's mask is
`<NAME>` of its `name` upper-cased, or `<MASKED>` without one. No mask contains a digit or an `@`, so masked text
never matches a builtin again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import regex

__all__ = ["BUILTIN_NAMES", "MATCH_TIMEOUT", "Detector", "builtin", "custom", "luhn_valid"]

# Seconds one scan may take. The builtins are linear (about 70 ms for 100 KB of adversarial text); a custom
# pattern with nested quantifiers may not be, on text the workload chooses. Past this, `regex` raises
# TimeoutError and the hook or tap fails closed (a 403 `internal-error`, or a stream ended with an error event).
MATCH_TIMEOUT = 2.0

# Builtin names as the request and response lists spell them (kgateway's reference uses both).
BUILTIN_NAMES = {
    "CreditCard": "CreditCard", "CREDIT_CARD": "CreditCard",
    "Email": "Email", "EMAIL": "Email",
    "PhoneNumber": "PhoneNumber", "PHONE_NUMBER": "PhoneNumber",
    "Ssn": "Ssn", "SSN": "Ssn",
    "CaSin": "CaSin", "CA_SIN": "CaSin",
}


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) checksum of a string of digits: card numbers and Canadian SINs carry one."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(ch for ch in text if "0" <= ch <= "9")


def _card(text: str) -> bool:
    digits = _digits(text)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _sin(text: str) -> bool:
    digits = _digits(text)
    return len(digits) == 9 and luhn_valid(digits)


@dataclass(frozen=True, slots=True)
class Detector:
    """One thing to find: `pattern` finds candidates, `check` (when set) confirms each, `mask` replaces it."""

    name: str  # the builtin's name, or the custom pattern's `name` (else its pattern)
    pattern: regex.Pattern[str] = field(repr=False)
    mask: str
    check: Callable[[str], bool] | None = field(default=None, repr=False)

    def matches(self, text: str, pos: int = 0) -> list[tuple[int, int]]:
        """The confirmed matches in `text` from `pos`, as (start, end)."""
        return [m.span() for m in self.pattern.finditer(text, pos, concurrent=True, timeout=MATCH_TIMEOUT) if self._confirmed(m.group())]

    def first(self, text: str) -> str | None:
        """The first confirmed match, or None (the value itself: never log it)."""
        for m in self.pattern.finditer(text, concurrent=True, timeout=MATCH_TIMEOUT):
            if self._confirmed(m.group()):
                return str(m.group())
        return None

    def substitute(self, text: str) -> str:
        """`text` with every confirmed match replaced by the mask."""
        return str(self.pattern.sub(lambda m: self.mask if self._confirmed(m.group()) else m.group(), text, concurrent=True, timeout=MATCH_TIMEOUT))

    def open_from(self, text: str, pos: int = 0) -> int | None:
        """Where the earliest match that later text could still complete or extend starts (a partial match at
        the end of `text`, or a match that ends exactly there); None when nothing in `text[pos:]` is open."""
        for m in self.pattern.finditer(text, pos, partial=True, concurrent=True, timeout=MATCH_TIMEOUT):
            if m.partial or m.end() == len(text):
                return int(m.start())
        return None

    def _confirmed(self, value: str) -> bool:
        return self.check is None or self.check(value)


# Each pattern has a bounded width, so a streamed match can never need more hold-back than the longest of them.
_BUILTINS: dict[str, tuple[str, str, Callable[[str], bool] | None]] = {
    # 13-19 digits, optionally grouped by single spaces or dashes; Luhn-checked.
    "CreditCard": (r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])", "<CREDIT_CARD>", _card),
    # Ssn: AAA-GG-SSSS or AAA GG SSSS (one separator, used twice); area 000, 666 and 9xx are never issued.
    "Ssn": (r"(?<![\d-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\d-])", "<SSN>", None),
    # Canadian SIN: 9 digits, as 3-3-3 with an optional space or dash; Luhn-checked.
    "CaSin": (r"(?<![\d-])\d{3}([- ]?)\d{3}\1\d{3}(?![\d-])", "<CA_SIN>", _sin),
    # North American numbers, optionally +1, with or without separators and parentheses; and international
    # numbers written with a leading +country code and at least 7 more digits.
    "PhoneNumber": (
        r"(?<![\w+])(?:(?:\+?1[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[ .-]?)\d{3}[ .-]?\d{4}"
        r"|\+\d{1,3}(?:[ .-]?\d{1,4}){2,4}[ .-]?\d{2,4})(?![\w])",
        "<PHONE_NUMBER>",
        None,
    ),
    # addr-spec as people write it: bounded local part and domain, a dot-separated TLD of 2-24 letters.
    "Email": (
        r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![\w-])",
        "<EMAIL>",
        None,
    ),
}


def builtin(name: str) -> Detector:
    """The builtin detector of `name` (either spelling, see BUILTIN_NAMES)."""
    canonical = BUILTIN_NAMES[name]
    pattern, mask, check = _BUILTINS[canonical]
    return Detector(canonical, regex.compile(pattern), mask, check)


def custom(pattern: str, name: str | None) -> Detector:
    """A custom `matches[]` entry. Raises regex.error when `regex` refuses a pattern `re` accepted."""
    mask = "<" + regex.sub(r"[^A-Z0-9_]+", "_", name.upper()).strip("_") + ">" if name else "<MASKED>"
    try:
        compiled = regex.compile(pattern)
    except RecursionError:  # the parser recurses per group (found by fuzzing): a refusal like any other
        raise regex.error("nested too deeply") from None
    return Detector(name or pattern, compiled, mask if mask != "<>" else "<MASKED>")
