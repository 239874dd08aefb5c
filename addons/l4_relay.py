"""Raw TCP and UDP flows: bytes are metered, and the per-flow message list is trimmed as it grows.

mitmproxy appends every chunk of a raw flow to `flow.messages` for the connection's life; a long-lived tunnel
would grow without bound, so only the last few messages are kept (enough for mitmweb to show activity).
"""

from __future__ import annotations

from mitmproxy import tcp, udp

from egressproxy.engine.guard import fail_closed
from egressproxy.runtime.state import GatewayState

KEEP_MESSAGES = 16


class L4Relay:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def _meter(self, flow: tcp.TCPFlow | udp.UDPFlow) -> None:
        message = flow.messages[-1]
        record = self.state.connections.get(flow.client_conn.id)
        gateway = str(self.state.snapshot.gateway.ref.namespace + "/" + self.state.snapshot.gateway.ref.name) if self.state.snapshot else ""
        listener = record.listener if record and record.listener else "none"
        direction = "upstream" if message.from_client else "downstream"
        self.state.metrics.streamed_bytes.labels(gateway, listener, direction).inc(len(message.content))
        if len(flow.messages) > KEEP_MESSAGES:
            del flow.messages[: len(flow.messages) - KEEP_MESSAGES]

    @fail_closed
    def tcp_message(self, flow: tcp.TCPFlow) -> None:
        self._meter(flow)

    @fail_closed
    def udp_message(self, flow: udp.UDPFlow) -> None:
        self._meter(flow)
