"""The two ways a translation refuses: the request asks for something the other format cannot express, or the
provider sent something that is not the format it claims.

Both carry the offending field path and a reason written for the client (the caller turns `Untranslatable` into a
400-ish refusal in the client's own error format, see `error_bodies.refusal_body`). Neither ever quotes a field's
value, so no prompt text or credential can reach a log line or an error through them.
"""

from __future__ import annotations

__all__ = ["TranslationError", "Untranslatable", "MalformedPayload"]


class TranslationError(Exception):
    """Base class: `field` is the JSON path of the offending member (`messages[2].content[0]`)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


class Untranslatable(TranslationError):
    """The request asks for something the target format cannot express (`n > 1`, audio input, ...)."""


class MalformedPayload(TranslationError):
    """A body or stream event is not what its format promises (not JSON, wrong shape)."""
