"""Transparent UDP sessions end in finished connection records, like TCP connections (no netns needed here)."""

from __future__ import annotations

import socket
from pathlib import Path

from egressproxy.flowrecord import FinishedConnection
from egressproxy.runtime.state import GatewayState
from egressproxy.runtime.udp_relay import TransparentUdpRelay, _Session
from egressproxy.sinks import Sink


class Collect(Sink):
    def __init__(self) -> None:
        self.records: list[FinishedConnection] = []

    def connection_finished(self, record: FinishedConnection) -> None:
        self.records.append(record)


def test_a_closed_session_is_one_record_with_its_bytes_each_way(tmp_path: Path) -> None:
    state = GatewayState(tmp_path)
    collect = Collect()
    state.sinks.register(collect)
    relay = TransparentUdpRelay(state, "127.0.0.1", 0)
    client, destination = ("10.0.0.5", 40000), ("10.0.0.9", 5353)
    session = _Session(
        client,
        destination,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
        "udp",
        "default/stats",
        "default/eg",
    )
    session.bytes_upstream, session.bytes_downstream = 120, 900
    relay.sessions[(client, destination)] = session
    relay._close(session)
    relay._close(session)  # closing twice (sweep and stop) is still one record
    [record] = collect.records
    assert (record.gateway, record.listener, record.route, record.carries) == ("default/eg", "udp", "default/stats", "UDP")
    assert (record.bytes_upstream, record.bytes_downstream) == (120, 900)
    assert record.duration >= 0
