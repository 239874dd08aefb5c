"""The in-process upstream hop: where a request with failover or retries is sent, so its answer streams.

mitmproxy cannot re-send a flow, and an addon cannot answer a flow with a body that is still arriving. So a
request that may need more than one attempt is pointed (addons/failover.py) at this loopback HTTP/1.1 server,
started inside the gateway process on 127.0.0.1 and an ephemeral port. The hop walks the candidates
(egressproxy/failover_walk.py) with the gateway's own client over the one dialer (egressproxy/dialer_http.py:
destination check, DNSPolicy, SSRF guard, BackendTLSPolicy, pins, CRLs, mTLS), and streams the kept answer
back chunk by chunk; mitmproxy streams it on to the client exactly like a first answer, through the same
taps, metrics and keep-alive.

Nothing else can use it: each request must carry `x-egress-hop: <process token> <ticket>`, where the token is
32 random bytes made at start and the ticket is a one-time id for a walk the failover addon registered (with
the request's replay buffer, candidates and decision). A request without a valid ticket gets 403. The header
never leaves the process: the hop builds each upstream request from the ticket, not from what it received.

A candidate that speaks the other chat API (egressproxy/cross_format.py) is sent its translated request, and its
answer comes back in the client's format: an SSE answer through the stream translator, each client event sent
as soon as the provider's event that makes it is complete; any other answer (a JSON completion, an error) read
whole (within the attempt's deadline), translated, and sent with its length.

Mid-stream failures end the client's stream visibly: a `text/event-stream` answer gets an SSE `error` event and
then the connection is reset; any other answer is reset (no terminating chunk), so no client sees a clean end.
A translated stream that is cut (or that the provider broke off before its final event) ends with the
translator's error event, in the client's format, and then the reset.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

import h11
import httpx

from egressproxy.ai_formats import MalformedPayload, StreamOutcome, StreamTranslator, stream_translator
from egressproxy.candidate_request import CandidateContext, credential_source, prepare_candidate, token_fetch
from egressproxy.credential_injection import OutgoingRequest
from egressproxy.cross_format import CandidateFormats, Translation, answer_headers, translate_answer
from egressproxy.dialer import Dialer
from egressproxy.dialer_http import UpstreamFailed, gateway_client
from egressproxy.failover_walk import Answer, AttemptFailed, Send, WalkPlan, WalkResult, describe_candidate, walk
from egressproxy.flowrecord import Attempt, FlowRecord, Verdict
from egressproxy.gcp_tokens import ServiceAccountTokens
from egressproxy.outcomes import GatewayFailure
from egressproxy.provider_health import ProviderHealth
from egressproxy.responses import GatewayAnswer, denial, gateway_error
from egressproxy.retryability import Phase
from egressproxy.snapshot import Snapshot
from egressproxy.upstreams import Upstream

__all__ = ["HOP_HEADER", "HopTicket", "UpstreamHop"]

log = logging.getLogger("egressproxy")

HOP_HEADER = "x-egress-hop"
_TICKET_TTL = 600.0  # seconds a ticket waits for its request (a client that vanished leaves one behind)
_READ = 65536
_CLIENT_CACHE = 64
_TRANSLATED_MAX = 16 * 1024 * 1024  # a whole answer read for translation; larger is refused (502)
# Never copied between the hop's two sides: they describe one connection, not the message.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization", "proxy-authenticate"}
)
_REQUEST_DROPPED = _HOP_BY_HOP | {"host", "content-length", HOP_HEADER}

Attempts = Callable[[Upstream, str, bool], None]  # (candidate, outcome, given up for the next one)


@dataclass(slots=True)
class HopTicket:
    """One registered walk: the request as it would go to the first candidate, minus candidate-specific parts."""

    snapshot: Snapshot
    plan: WalkPlan
    context: CandidateContext
    original: OutgoingRequest  # the replay buffer: never modified, each candidate gets a copy
    record: FlowRecord  # the flow's record: the hop writes the candidate that answered
    first_authority: str  # Host for the first candidate (URLRewrite's hostname, or as the route decided)
    read_timeout: float  # for each read of the answer (the request timeout bounds the whole)
    backend_timeout: float | None = None  # HTTPRoute timeouts.backendRequest: one whole attempt, body included
    formats: CandidateFormats = field(default_factory=dict)  # candidates of the other chat API (cross_format.py)
    created: float = field(default_factory=time.monotonic)


class _HttpxAnswer:
    """An upstream answer whose head arrived; its raw body (encoding untouched) is read as it is streamed."""

    def __init__(self, response: httpx.Response, started: float) -> None:
        self.response = response
        self.started = started  # monotonic time the attempt began (timeouts.backendRequest counts from it)
        self.status = response.status_code
        self.headers: Mapping[str, str] = {k.lower(): v for k, v in response.headers.items()}
        self._raw = response.aiter_raw()
        self._buffered = b""
        self._ended = False
        self._broken: Exception | None = None  # the body broke while peeked: streaming it must fail the same way

    async def peek(self, limit: int) -> bytes:
        try:
            while len(self._buffered) < limit and not self._ended:
                try:
                    self._buffered += await self._raw.__anext__()
                except StopAsyncIteration:
                    self._ended = True
        except Exception as e:  # a body that breaks while peeked: what arrived is what there is
            self._ended, self._broken = True, e
        return self._buffered[:limit]

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises whatever broke it (never a short body passed off as complete)."""
        if self._buffered:
            yield self._buffered
        if self._broken is not None:
            raise self._broken
        if self._ended:
            return
        async for chunk in self._raw:
            yield chunk

    async def close(self) -> None:
        await self.response.aclose()


class UpstreamHop:
    def __init__(self, dialer: Dialer, health: ProviderHealth, on_attempt: Attempts | None = None) -> None:
        self.dialer = dialer
        self.health = health
        self.on_attempt = on_attempt or (lambda _u, _r, _g: None)
        self.tokens = ServiceAccountTokens()
        self.token = secrets.token_hex(32)
        self.port = 0
        self._tickets: dict[str, HopTicket] = {}
        self._server: asyncio.Server | None = None
        self._clients: dict[tuple[int, Upstream], httpx.AsyncClient] = {}
        self._starting: asyncio.Lock | None = None

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def start(self) -> int:
        """Listen on 127.0.0.1 (once); returns the port."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._server is None:
                self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
                self.port = self._server.sockets[0].getsockname()[1]
                log.info("failover hop listening on 127.0.0.1:%d (loopback, in-process only)", self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    # --- tickets ----------------------------------------------------------------------------------------------

    def issue(self, ticket: HopTicket) -> str:
        """Register a walk; the value of the `x-egress-hop` header that claims it (once)."""
        now = time.monotonic()
        if len(self._tickets) > 256:
            self._tickets = {k: t for k, t in self._tickets.items() if now - t.created < _TICKET_TTL}
        ticket_id = secrets.token_hex(16)
        self._tickets[ticket_id] = ticket
        return f"{self.token} {ticket_id}"

    def claim(self, value: str | None) -> HopTicket | None:
        token, _, ticket_id = (value or "").partition(" ")
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            return None
        return self._tickets.pop(ticket_id, None)

    # --- one connection from mitmproxy --------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._request(conn, reader)
                if request is None:
                    return
                ticket = self.claim(_header(request, HOP_HEADER))
                if ticket is None:
                    await self._send_whole(conn, writer, denial(Verdict.deny("hop-not-allowed", "", "not a failover hop ticket")))
                    return
                if not await self._answer(conn, reader, writer, ticket):
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            if not writer.transport.is_closing():
                writer.close()

    async def _request(self, conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
        """The next request head; its body (the addon keeps the replay buffer) is read and dropped."""
        head: h11.Request | None = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(_READ)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.EndOfMessage):
                return head
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    async def _answer(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ticket: HopTicket) -> bool:
        """Walk and stream; False when the connection must be dropped (a mid-stream failure, a client gone)."""
        result = await self._walk_while_connected(conn, reader, ticket)
        if result is None:
            return False
        if result.answer is None:
            await self._send_whole(conn, writer, _failure_answer(result, ticket.record))
            return True
        assert isinstance(result.answer, _HttpxAnswer) and result.upstream is not None
        ticket.record.upstream = result.upstream
        ticket.record.backend = result.upstream.backend_name
        ticket.record.credential = credential_source(ticket.snapshot, result.upstream, ticket.context)
        deadline = result.answer.started + ticket.backend_timeout if ticket.backend_timeout else None
        translation = ticket.formats.get(result.upstream)
        if isinstance(translation, Translation):
            return await self._translated(conn, writer, result.answer, ticket.record, deadline, translation)
        return await self._stream(conn, writer, result.answer, ticket.record, deadline)

    async def _translated(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, answer: _HttpxAnswer, record: FlowRecord,
        deadline: float | None, translation: Translation,
    ) -> bool:
        """The answer of a candidate of the other chat API, in the client's format."""
        provider_headers = answer.response.headers.multi_items()
        if answer.status < 400 and answer.headers.get("content-type", "").startswith("text/event-stream"):
            translator = stream_translator(translation.provider, translation.client, translation.reported_model,
                                           translation.include_usage)
            sse = answer_headers(provider_headers, "text/event-stream")
            return await self._stream(conn, writer, answer, record, deadline, translator, sse)
        try:
            body = await _read_whole(answer, deadline)
            translated = translate_answer(translation, answer.status, body)
        except MalformedPayload as e:
            record.error = "upstream-unreachable"
            detail = f"the provider's answer is not the {translation.provider} format it speaks: {e}"
            await self._send_whole(conn, writer, gateway_error("upstream-unreachable", detail))
            return True
        except Exception as e:  # the body broke, overran the deadline or the size limit: nothing was sent yet
            await _quietly_close(answer)
            record.error = "upstream-timeout" if isinstance(e, TimeoutError) else "upstream-unreachable"
            detail = "timeouts.backendRequest ran out" if record.error == "upstream-timeout" else str(e) or type(e).__name__
            await self._send_whole(conn, writer, gateway_error(record.error, f"reading the provider's answer: {detail}"))
            return True
        whole = tuple((k, v) for k, v in answer_headers(provider_headers, "application/json") if k.lower() not in _HOP_BY_HOP)
        await self._send_whole(conn, writer, GatewayAnswer(answer.status, whole, translated))
        return True

    async def _walk_while_connected(self, conn: h11.Connection, reader: asyncio.StreamReader, ticket: HopTicket) -> WalkResult | None:
        """The walk, cancelled when mitmproxy closes the connection first (the client went away, or the request
        timed out): no further candidate is sent a prompt nobody waits for. None when cancelled."""
        attempts = ticket.record.attempts

        def attempted(upstream: Upstream, outcome: str, went_on: bool) -> None:
            self.on_attempt(upstream, outcome, went_on)
            attempts.append(Attempt(describe_candidate(upstream), outcome, went_on))  # the flow's trace

        walking = asyncio.ensure_future(walk(ticket.plan, self._sender(ticket), self.health, attempted))
        closing = asyncio.ensure_future(reader.read(_READ))
        try:
            await asyncio.wait((walking, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not closing.done():
                closing.cancel()
        if walking.done():
            if closing.done() and not closing.cancelled() and closing.exception() is None and closing.result():
                conn.receive_data(closing.result())  # a pipelined next request: h11 keeps it for the next cycle
            return walking.result()
        walking.cancel()
        try:
            await walking
        except asyncio.CancelledError:
            pass
        log.debug("failover walk cancelled: the connection from mitmproxy closed before an answer")
        return None

    async def _stream(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, answer: _HttpxAnswer, record: FlowRecord,
        deadline: float | None, translator: StreamTranslator | None = None, headers: list[tuple[str, str]] | None = None,
    ) -> bool:
        """Send the answer on as it arrives (through `translator` when it is the other chat API's stream, with
        `headers` instead of the provider's); an upstream that fails or overruns `deadline` (monotonic) mid-body
        ends the stream visibly."""
        sent = headers if headers is not None else answer.response.headers.multi_items()
        head = [(k.encode(), v.encode()) for k, v in sent if k.lower() not in _HOP_BY_HOP]
        writer.write(conn.send(h11.Response(status_code=answer.status, headers=head, reason=answer.response.reason_phrase.encode())) or b"")
        await writer.drain()
        chunks = answer.chunks()
        while True:
            try:
                remaining = deadline - time.monotonic() if deadline is not None else None
                chunk = await asyncio.wait_for(chunks.__anext__(), remaining)
            except StopAsyncIteration:
                break
            except Exception as e:  # whatever broke the upstream (httpcore's errors are not httpx's here), or time
                await _quietly_close(answer)
                timed_out = isinstance(e, TimeoutError)
                record.error = "upstream-timeout" if timed_out else "upstream-unreachable"
                cause = "timeouts.backendRequest ran out" if timed_out else str(e) or type(e).__name__
                await self._end_visibly(conn, writer, answer, cause, record.error, _cut_event(translator))
                return False
            if translator is not None:
                try:
                    chunk = translator.feed(chunk)
                except MalformedPayload as e:
                    await _quietly_close(answer)
                    record.error = "upstream-unreachable"
                    await self._end_visibly(conn, writer, answer, f"untranslatable stream: {e}", record.error, translator.cut_event())
                    return False
                if not chunk:
                    continue
            try:
                writer.write(conn.send(h11.Data(data=chunk)) or b"")
                await writer.drain()
            except (ConnectionError, h11.LocalProtocolError):  # mitmproxy closed: the client went away
                await _quietly_close(answer)
                writer.transport.abort()
                return False
        await answer.close()
        if translator is not None and not await self._translator_ended(conn, writer, answer, translator, record):
            return False
        try:
            writer.write(conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:  # the origin sent fewer bytes than its Content-Length
            await self._end_visibly(conn, writer, answer, "the upstream ended its body early", "upstream-unreachable")
            return False
        await writer.drain()
        return True

    async def _translator_ended(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, answer: _HttpxAnswer, translator: StreamTranslator,
        record: FlowRecord,
    ) -> bool:
        """The provider's stream ended: send the translator's last bytes; False (ended visibly) when it was cut."""
        tail = translator.end()
        if tail:
            writer.write(conn.send(h11.Data(data=tail)) or b"")
        if translator.outcome is not StreamOutcome.CUT:
            return True
        record.error = "upstream-unreachable"
        await self._end_visibly(conn, writer, answer, "the provider's stream ended before its final event", record.error,
                                translator.cut_event())
        return False

    @staticmethod
    async def _end_visibly(
        conn: h11.Connection, writer: asyncio.StreamWriter, answer: _HttpxAnswer, cause: str, reason: str,
        final: bytes | None = None,
    ) -> None:
        """An SSE `error` event (`final`, the translator's, else one when the stream is SSE and chunked), then a
        reset: never a clean end."""
        if final is not None:
            try:
                writer.write(conn.send(h11.Data(data=final)) or b"")
            except h11.LocalProtocolError:
                pass
        elif answer.headers.get("content-type", "").startswith("text/event-stream") and "content-length" not in answer.headers:
            message = "the upstream took longer than its backend request timeout" if reason == "upstream-timeout" else (
                "the upstream connection failed mid-stream"
            )
            event = {"error": {"type": "upstream_error", "message": message, "reason": reason}}
            payload = f"event: error\ndata: {json.dumps(event)}\n\n".encode()
            try:
                writer.write(conn.send(h11.Data(data=payload)) or b"")
            except h11.LocalProtocolError:
                pass
        log.info("upstream failed mid-stream (%s): the client's stream is ended with an error", cause)
        try:
            await writer.drain()
        finally:
            writer.transport.abort()  # no terminating chunk: mitmproxy sees the body cut short

    async def _send_whole(self, conn: h11.Connection, writer: asyncio.StreamWriter, answer: GatewayAnswer) -> None:
        headers = [(k.encode(), v.encode()) for k, v in answer.headers] + [(b"content-length", str(len(answer.body)).encode())]
        writer.write(conn.send(h11.Response(status_code=answer.status, headers=headers)) or b"")
        writer.write(conn.send(h11.Data(data=answer.body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()

    # --- one attempt ------------------------------------------------------------------------------------------

    def _sender(self, ticket: HopTicket) -> Send:
        first = ticket.plan.attempts[0] if ticket.plan.attempts else None
        fetch = token_fetch(self.dialer, ticket.snapshot)

        async def send(upstream: Upstream, timeout: float | None) -> Answer:
            authority = ticket.first_authority if upstream == first else _authority(upstream)
            translation = ticket.formats.get(upstream)
            translation = translation if isinstance(translation, Translation) else None
            if translation is not None and translation.losses:
                log.debug("translated for %s: dropped %s", upstream.backend_name, ", ".join(translation.losses))
            prepared = await prepare_candidate(
                ticket.snapshot, upstream, ticket.context, ticket.original, self.tokens, fetch, authority, translation
            )
            if isinstance(prepared, GatewayFailure):
                raise AttemptFailed(Phase.REFUSED, prepared)
            headers = [(n, v) for n, v in prepared.headers if n.lower() not in _REQUEST_DROPPED]
            headers.insert(0, ("host", authority))
            client = self._client(ticket.snapshot, upstream, ticket.read_timeout)
            url = httpx.URL(scheme=upstream.scheme, host=upstream.host, port=upstream.port, raw_path=prepared.path.encode())
            request = client.build_request(prepared.method, url, headers=headers, content=prepared.body)
            started = time.monotonic()
            try:
                response = await asyncio.wait_for(client.send(request, stream=True), timeout)
            except UpstreamFailed as e:
                raise AttemptFailed(_phase(e), e.outcome) from e
            except (TimeoutError, httpx.TimeoutException) as e:
                raise AttemptFailed(Phase.HEAD, GatewayFailure("upstream-timeout", f"{upstream.host}:{upstream.port}: no response head in time")) from e
            except Exception as e:  # httpx's and httpcore's protocol errors: the origin closed without an answer
                detail = f"{upstream.host}:{upstream.port}: {e or type(e).__name__}"
                raise AttemptFailed(Phase.HEAD, GatewayFailure("upstream-unreachable", detail)) from e
            return _HttpxAnswer(response, started)

        return send

    def _client(self, snapshot: Snapshot, upstream: Upstream, read_timeout: float) -> httpx.AsyncClient:
        """One pooled client per candidate and config generation (keep-alive to providers across requests)."""
        key = (snapshot.generation, upstream)
        client = self._clients.get(key)
        if client is None:
            stale = [k for k in self._clients if k[0] != snapshot.generation]
            if len(self._clients) >= _CLIENT_CACHE:
                stale = list(self._clients)
            for old in stale:
                asyncio.get_running_loop().create_task(self._clients.pop(old).aclose())
            client = self._clients[key] = gateway_client(self.dialer, snapshot, upstream, timeout=read_timeout)
        return client


def _cut_event(translator: StreamTranslator | None) -> bytes | None:
    return translator.cut_event() if translator is not None else None


async def _read_whole(answer: _HttpxAnswer, deadline: float | None) -> bytes:
    """An answer's whole body, within the attempt's deadline and `_TRANSLATED_MAX` bytes."""

    async def read() -> bytes:
        body = bytearray()
        async for chunk in answer.chunks():
            body += chunk
            if len(body) > _TRANSLATED_MAX:
                raise ValueError(f"the answer is larger than {_TRANSLATED_MAX} bytes")
        return bytes(body)

    try:
        return await asyncio.wait_for(read(), deadline - time.monotonic() if deadline is not None else None)
    finally:
        await _quietly_close(answer)


async def _quietly_close(answer: _HttpxAnswer) -> None:
    try:
        await answer.close()
    except Exception:  # the connection is already broken
        pass


def _phase(error: UpstreamFailed) -> Phase:
    outcome = error.outcome
    if isinstance(outcome, Verdict):  # the SSRF guard, reverse DNS or the dial guard said no: not a health matter
        return Phase.REFUSED
    if isinstance(outcome, GatewayFailure) and outcome.reason == "upstream-tls-invalid":
        return Phase.TLS
    if isinstance(outcome, GatewayFailure) and outcome.reason == "upstream-timeout":
        return Phase.HEAD
    return Phase.CONNECT


def _failure_answer(result: WalkResult, record: FlowRecord) -> GatewayAnswer:
    failure = result.failure
    if isinstance(failure, Verdict):
        record.verdict = failure
        return denial(failure)
    assert failure is not None
    record.error = failure.reason
    record.failure = failure
    return gateway_error(failure.reason, failure.message, failure.policy)


def _authority(upstream: Upstream) -> str:
    default = 443 if upstream.scheme == "https" else 80
    return upstream.host if upstream.port == default else f"{upstream.host}:{upstream.port}"


def _header(request: h11.Request, name: str) -> str | None:
    wanted = name.encode()
    for key, value in request.headers:
        if key == wanted:
            return value.decode("latin-1")
    return None
