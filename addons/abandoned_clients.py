"""Connections the client already gave up on are dropped at accept, before any other work (issue 16).

Go's HTTP transport (and others with a connection pool) dials a spare connection when no idle one is ready, and
abandons the dial when an idle connection frees up first. When a proxy is slow to answer CONNECT, the abandoned
connections pile up in the kernel's accept queue (100 deep): each was then accepted, decided, recorded and
answered in turn, while the live connections behind them waited - so their CONNECT answers came late, their
dials were abandoned too, and keep-alive collapsed into churn (measured: 0.17-0.34 accepted connections per
request against mitmdump's 0.01, the accept queue full the whole time). A connection whose client closed its side
before the gateway looked at it, having sent nothing or only a CONNECT, is now closed at once: no record, no
decision, no hook after this one; `egress_client_refusals_total{reason="client-gave-up"}` counts them.

First in the addon chain, so that halting the `client_connected` hook skips every other addon.
"""

from __future__ import annotations

from mitmproxy import connection, exceptions

from egressproxy.engine.mitmproxy_boundary import gave_up_waiting
from egressproxy.runtime.state import GatewayState

__all__ = ["AbandonedClients", "GAVE_UP"]

GAVE_UP = "client-gave-up"


class AbandonedClients:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.dropped: set[str] = set()

    def client_connected(self, client: connection.Client) -> None:
        if not gave_up_waiting(client):
            return
        client.error = "egress: the client closed the connection before it was accepted"
        self.dropped.add(client.id)
        self.state.metrics.client_refusals.labels(GAVE_UP).inc()
        raise exceptions.AddonHalt()  # mitmproxy closes a client with an error without reading from it

    def client_disconnected(self, client: connection.Client) -> None:
        if client.id in self.dropped:
            self.dropped.discard(client.id)
            raise exceptions.AddonHalt()  # nothing was opened for it: no record to finish, nothing to release
