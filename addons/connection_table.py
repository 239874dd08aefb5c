"""Keeps one ConnectionRecord per client connection, with the workload identity known at connect time."""

from __future__ import annotations

import os

from mitmproxy import connection

from egressproxy.engine.guard import fail_closed
from egressproxy.flowrecord import UNKNOWN_IDENTITY, Identity
from egressproxy.runtime.state import GatewayState


def sidecar_identity() -> Identity:
    """The sidecar's own workload, from EGRESS_NAMESPACE / EGRESS_SERVICE_ACCOUNT (DESIGN.md section 5)."""
    ns = os.environ.get("EGRESS_NAMESPACE")
    sa = os.environ.get("EGRESS_SERVICE_ACCOUNT")
    return Identity(ns, sa, "sidecar environment EGRESS_NAMESPACE/EGRESS_SERVICE_ACCOUNT") if ns and sa else UNKNOWN_IDENTITY


class ConnectionTable:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.default_identity = sidecar_identity()

    @fail_closed
    def client_connected(self, client: connection.Client) -> None:
        record = self.state.connection(client.id)
        record.identity = self.default_identity
        if self.state.snapshot is not None:
            record.generation = self.state.snapshot.generation

    def client_disconnected(self, client: connection.Client) -> None:
        self.state.forget(client.id)
