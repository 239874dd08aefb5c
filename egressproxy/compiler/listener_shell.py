"""A listener before its route tables exist, and its precedence among the listeners that could take a
connection (DESIGN.md section 4: TLS Terminate > HTTPS > HTTP > TLS Passthrough > TCP; UDP apart)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from egressproxy.snapshot import CAMaterial

PRECEDENCE_TLS_TERMINATE = 5
PRECEDENCE_HTTPS = 4
PRECEDENCE_HTTP = 3
PRECEDENCE_TLS_PASSTHROUGH = 2
PRECEDENCE_TCP = 1
PRECEDENCE_UDP = 0


@dataclass
class ListenerShell:
    """A listener before its route tables exist."""

    name: str
    protocol: str
    port: int | None
    tls_mode: str | None
    intercepts: bool
    precedence: int
    index: int
    allowed_routes: Mapping[str, Any]
    ca: CAMaterial | None = None


def precedence(protocol: str, tls_mode: str | None) -> int:
    if protocol == "TLS":
        return PRECEDENCE_TLS_TERMINATE if tls_mode == "Terminate" else PRECEDENCE_TLS_PASSTHROUGH
    if protocol == "HTTPS" or (protocol == "HTTP" and tls_mode == "Terminate"):
        return PRECEDENCE_HTTPS
    return {"HTTP": PRECEDENCE_HTTP, "TCP": PRECEDENCE_TCP}.get(protocol, PRECEDENCE_UDP)
