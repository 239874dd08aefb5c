"""addons/l4_relay.py: a raw TCP or UDP flow keeps only its last messages, however long the connection lives.

mitmproxy appends every chunk of a raw flow to `flow.messages`; without trimming a long-lived tunnel grows
without bound. What a user (or mitmweb) sees is the most recent KEEP_MESSAGES messages, in order.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy import tcp, udp
from mitmproxy.test import taddons, tflow

from addons.l4_relay import KEEP_MESSAGES, L4Relay
from egressproxy.runtime.state import GatewayState


def _tcp(count: int) -> tcp.TCPFlow:
    flow = tflow.ttcpflow(messages=[])
    flow.messages = [tcp.TCPMessage(i % 2 == 0, f"chunk {i}".encode()) for i in range(count)]
    return flow


def _udp(count: int) -> udp.UDPFlow:
    flow = tflow.tudpflow(messages=[])
    flow.messages = [udp.UDPMessage(i % 2 == 0, f"datagram {i}".encode()) for i in range(count)]
    return flow


@pytest.mark.parametrize(
    ("count", "kept"),
    [
        (0, []),
        (1, [0]),
        (KEEP_MESSAGES, list(range(KEEP_MESSAGES))),  # at the cap: nothing dropped
        (KEEP_MESSAGES + 1, list(range(1, KEEP_MESSAGES + 1))),  # one over: the oldest goes
        (1000, list(range(1000 - KEEP_MESSAGES, 1000))),
    ],
)
@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_only_the_last_messages_are_kept_in_order(tmp_path: Path, kind: str, count: int, kept: list[int]) -> None:
    relay = L4Relay(GatewayState(tmp_path))
    with taddons.context(relay):
        if kind == "tcp":
            flow: tcp.TCPFlow | udp.UDPFlow = _tcp(count)
            relay.tcp_message(flow)
            prefix = "chunk"
        else:
            flow = _udp(count)
            relay.udp_message(flow)
            prefix = "datagram"
    assert [m.content for m in flow.messages] == [f"{prefix} {i}".encode() for i in kept]


def test_a_long_lived_tunnel_stays_bounded_message_by_message(tmp_path: Path) -> None:
    """As mitmproxy calls it: one hook per appended message."""
    relay = L4Relay(GatewayState(tmp_path))
    flow = tflow.ttcpflow(messages=[])
    flow.messages = []
    with taddons.context(relay):
        for i in range(5 * KEEP_MESSAGES):
            flow.messages.append(tcp.TCPMessage(True, str(i).encode()))
            relay.tcp_message(flow)
            assert len(flow.messages) <= KEEP_MESSAGES
    assert flow.messages[-1].content == str(5 * KEEP_MESSAGES - 1).encode()
