"""The in-process hop answers only requests that carry the process token and an unused ticket."""

from __future__ import annotations

import asyncio
from pathlib import Path

from egressproxy.candidate_request import CandidateContext
from egressproxy.credential_injection import OutgoingRequest
from egressproxy.failover_walk import WalkPlan
from egressproxy.flowrecord import FlowRecord
from egressproxy.runtime.state import GatewayState
from egressproxy.upstream_hop import HOP_HEADER, HopTicket, UpstreamHop
from tests.support.addon_state import compile_snapshot

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  listeners:
  - {name: http, protocol: HTTP}
"""


async def _ask(port: int, header: str | None, close: bool = False) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = f"{HOP_HEADER}: {header}\r\n" if header is not None else ""
    extra += "connection: close\r\n" if close else ""
    writer.write(f"POST /v1/x HTTP/1.1\r\nhost: hop\r\ncontent-length: 2\r\n{extra}\r\n{{}}".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def _ticket(record: FlowRecord) -> HopTicket:
    snapshot = compile_snapshot(CONFIG)
    original = OutgoingRequest("POST", "https", "api.example.com", "/v1/x", [], b"{}")
    return HopTicket(snapshot, WalkPlan(()), CandidateContext(None, None, None), original, record, "api.example.com", 30.0)


def test_only_a_valid_unused_ticket_is_served(tmp_path: Path) -> None:
    state = GatewayState(tmp_path)
    hop: UpstreamHop = state.hop

    async def scenario() -> list[tuple[int, bytes]]:
        port = await hop.start()
        record = FlowRecord()
        claim = hop.issue(_ticket(record))
        token, ticket_id = claim.split(" ")
        out = [
            await _ask(port, None),
            await _ask(port, f"{'0' * len(token)} {ticket_id}"),  # a wrong token, a real ticket
            await _ask(port, claim),  # served: no candidate, so 503 no-healthy-backend
            await _ask(port, claim),  # the ticket was used
        ]
        assert record.error == "no-healthy-backend"
        await hop.stop()
        return out

    results = asyncio.run(scenario())
    assert [status for status, _ in results] == [403, 403, 503, 403]
    assert b"hop-not-allowed" in results[0][1] and b"no-healthy-backend" in results[2][1]


def test_the_hop_listens_on_loopback_only(tmp_path: Path) -> None:
    hop = GatewayState(tmp_path).hop

    async def scenario() -> str:
        await hop.start()
        assert hop._server is not None
        host = hop._server.sockets[0].getsockname()[0]
        await hop.stop()
        return host

    assert asyncio.run(scenario()) == "127.0.0.1"


def test_the_walk_stops_when_mitmproxy_closes_the_connection(tmp_path: Path) -> None:
    """A client that went away (or a request timeout) closes the hop connection: the attempt in flight is
    dropped and no further candidate is sent the prompt."""
    from egressproxy.upstreams import Upstream

    state = GatewayState(tmp_path)
    hop = state.hop

    async def scenario() -> tuple[bool, int]:
        got_request, dropped = asyncio.Event(), asyncio.Event()
        second_connections = 0

        async def hanging(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            got_request.set()
            await reader.read()  # never answers: reads the body, then returns at EOF, when the hop drops the attempt
            dropped.set()
            writer.close()

        async def second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal second_connections
            second_connections += 1
            writer.close()

        slow = await asyncio.start_server(hanging, "127.0.0.1", 0)
        other = await asyncio.start_server(second, "127.0.0.1", 0)
        candidates = tuple(
            Upstream("127.0.0.1", server.sockets[0].getsockname()[1], "http", trusted=True) for server in (slow, other)
        )
        port = await hop.start()
        ticket = _ticket(FlowRecord())
        ticket.plan = WalkPlan(candidates)
        claim = hop.issue(ticket)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST /v1/x HTTP/1.1\r\nhost: hop\r\ncontent-length: 2\r\n{HOP_HEADER}: {claim}\r\n\r\n{{}}".encode())
        await writer.drain()
        await asyncio.wait_for(got_request.wait(), 10)
        writer.close()
        await asyncio.wait_for(dropped.wait(), 10)
        await hop.stop()
        slow.close()
        other.close()
        return dropped.is_set(), second_connections

    assert asyncio.run(scenario()) == (True, 0)


def test_each_attempt_of_the_walk_is_in_the_flows_record(tmp_path: Path) -> None:
    """The decision trace lists the candidates the walk tried, with how each went (egressproxy/decision_trace.py)."""
    from egressproxy.flowrecord import Attempt
    from egressproxy.upstreams import Upstream
    from tests.support.gateway import free_port

    hop = GatewayState(tmp_path).hop
    closed_port: list[int] = []

    async def scenario() -> tuple[int, list[Attempt]]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}")
            await writer.drain()
            writer.close()

        good = await asyncio.start_server(answer, "127.0.0.1", 0)
        closed, open_port = free_port(), good.sockets[0].getsockname()[1]
        closed_port.append(closed)
        record = FlowRecord()
        ticket = _ticket(record)
        candidates = (Upstream("127.0.0.1", closed, "http", trusted=True), Upstream("127.0.0.1", open_port, "http", trusted=True))
        ticket = HopTicket(ticket.snapshot, WalkPlan(candidates), ticket.context, ticket.original, record,
                           ticket.first_authority, ticket.read_timeout)
        port = await hop.start()
        status, _ = await asyncio.wait_for(_ask(port, hop.issue(ticket), close=True), 20)
        await hop.stop()
        good.close()
        return status, record.attempts

    status, attempts = asyncio.run(scenario())
    assert status == 200
    assert len(attempts) == 2, attempts
    first, second = attempts
    assert first.candidate.endswith(f":{closed_port[0]})") and first.went_on and first.outcome != "ok"
    assert second.outcome == "ok" and not second.went_on
