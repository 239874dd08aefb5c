"""IP -> name bindings made by the gateway's own DNS answers (what Apoxy does by snooping DNS).

When the DNS listener answers `api.example.com -> 203.0.113.7`, a later transparent connection to 203.0.113.7
carries no name of its own (no SNI, or not TLS at all); the binding lets hostname rules (EgressL4Route
destinationHostnames, TLSRoute without SNI) apply to it. Bindings live as long as the answer's TTL plus a grace
period (clients cache a little past the TTL), and the table is bounded.
"""

from __future__ import annotations

import time
from collections import OrderedDict

__all__ = ["DnsBindings"]

GRACE_SECONDS = 60.0
MAX_BINDINGS = 65536


class DnsBindings:
    def __init__(self, cap: int = MAX_BINDINGS) -> None:
        self._bindings: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.cap = cap

    def bind(self, address: str, name: str, ttl: float) -> None:
        self._bindings[address] = (name, time.monotonic() + ttl + GRACE_SECONDS)
        self._bindings.move_to_end(address)
        while len(self._bindings) > self.cap:
            self._bindings.popitem(last=False)

    def name_for(self, address: str | None) -> str | None:
        if address is None:
            return None
        entry = self._bindings.get(address)
        if entry is None:
            return None
        name, expires = entry
        if expires < time.monotonic():
            del self._bindings[address]
            return None
        return name

    def __len__(self) -> int:
        return len(self._bindings)
