"""Raw TCP and UDP flows: the per-flow message list is trimmed as it grows.

mitmproxy appends every chunk of a raw flow to `flow.messages` for the connection's life; a long-lived tunnel
would grow without bound, so only the last few messages are kept (enough for mitmweb to show activity). Their
bytes are metered for every connection alike, by the metering layer (`addons/connection_records.py`).
"""

from __future__ import annotations

from mitmproxy import tcp, udp

from egressproxy.engine.guard import fail_closed
from egressproxy.runtime.state import GatewayState

__all__ = ["L4Relay", "KEEP_MESSAGES"]

KEEP_MESSAGES = 16


class L4Relay:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    @staticmethod
    def _trim(flow: tcp.TCPFlow | udp.UDPFlow) -> None:
        if len(flow.messages) > KEEP_MESSAGES:
            del flow.messages[: len(flow.messages) - KEEP_MESSAGES]

    @fail_closed
    def tcp_message(self, flow: tcp.TCPFlow) -> None:
        self._trim(flow)

    @fail_closed
    def udp_message(self, flow: udp.UDPFlow) -> None:
        self._trim(flow)
