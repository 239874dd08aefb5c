"""What a request translation hands back: the new body, and what it could not carry across."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TranslatedRequest", "Losses"]


@dataclass(frozen=True, slots=True)
class TranslatedRequest:
    body: dict[str, Any]
    """The request body in the target format, with the target model."""
    stream: bool
    """Whether the client asked for a stream (pick the stream translator for the response)."""
    include_usage: bool
    """Whether an OpenAI client asked for the final usage chunk (`stream_options.include_usage`)."""
    losses: tuple[str, ...] = ()
    """Field paths dropped or changed on the way, each with a short why (names only, never values): for a debug
    log line or a response header, so nobody has to guess why a parameter had no effect."""


@dataclass(slots=True)
class Losses:
    """Collects `path: why` notes while a translation runs."""

    notes: list[str] = field(default_factory=list)

    def note(self, path: str, why: str) -> None:
        self.notes.append(f"{path}: {why}")
