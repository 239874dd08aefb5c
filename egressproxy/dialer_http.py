"""The dialer as an httpx client: connections the gateway opens on its own get the same checks as mitmproxy's.

A failover replay, an ext_authz call or a token fetch must not be a way around the destination check or the
upstream TLS policy. `gateway_client(dialer, snapshot, upstream)` returns an `httpx.AsyncClient` whose transport
dials through `DialerNetworkBackend`, an httpcore network backend (httpcore's documented extension point):

- `connect_tcp(host, port)` accepts only the candidate it was made for (`Upstream.key`), asks the dialer for
  the one checked address (aliases, DNS with the Backend's DNSPolicy, SSRF guard, reverse DNS) and connects to
  exactly that address;
- `start_tls` ignores the `ssl.SSLContext` httpcore offers and runs the dialer's own OpenSSL connection (the
  Backend's BackendTLSPolicy or the gateway trust, SPKI pins, CRLs, client certificate) over the socket through
  memory BIOs, with the same verify callback as the `tls_start_server` hook.

A refusal or failure raises `UpstreamFailed` carrying the typed outcome (a denial `Verdict` or a
`GatewayFailure`), the same values the hooks write on the records: callers answer from it, never from text.
HTTP/1.1 only for now (ALPN offers `http/1.1`); a candidate behind a parent proxy is refused (no CONNECT yet).
"""

from __future__ import annotations

import ssl
import typing
from collections.abc import AsyncIterator, Iterable

import httpcore
import httpx
from OpenSSL import SSL

from egressproxy.dialer import Dialer, TlsSettings
from egressproxy.engine.upstream_ssl import UpstreamConnection
from egressproxy.flowrecord import ConnectionRecord, Verdict
from egressproxy.hostnames import InvalidHostname, canonical_host
from egressproxy.outcomes import DialOutcome, GatewayFailure, readable_connect_error
from egressproxy.snapshot import Snapshot
from egressproxy.upstream_tls import client_certificate_required, describe_alert
from egressproxy.upstreams import Upstream

__all__ = ["UpstreamFailed", "DialerNetworkBackend", "DialerTransport", "gateway_client"]

_READ = 65536
_TLS_INVALID = "upstream-tls-invalid"


class UpstreamFailed(Exception):
    """A gateway-originated connection was refused or failed; `outcome` says why, typed."""

    def __init__(self, outcome: DialOutcome) -> None:
        self.outcome = outcome
        text = outcome.message if isinstance(outcome, GatewayFailure) else f"{outcome.reason}: {outcome.message}"
        super().__init__(text)


class DialerNetworkBackend(httpcore.AsyncNetworkBackend):
    """Connects only to `upstream`, at the address the dialer checked, speaking TLS under the dialer's policy.

    Usage: `httpcore.AsyncConnectionPool(network_backend=DialerNetworkBackend(dialer, snapshot, upstream))`, or
    simply `gateway_client(...)`.
    """

    def __init__(self, dialer: Dialer, snapshot: Snapshot, upstream: Upstream, settings: TlsSettings = TlsSettings()) -> None:
        self.dialer = dialer
        self.snapshot = snapshot
        self.upstream = upstream
        self.settings = settings
        self.record = ConnectionRecord(generation=snapshot.generation, upstreams={upstream.key: upstream})
        self._tcp = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            name = canonical_host(host)
        except InvalidHostname:
            name = host
        if self.upstream.parent is not None:
            # Parent mode (DESIGN.md 4.1) tunnels through the parent proxy with its credentials; this client does
            # not speak CONNECT yet, and dialling the destination directly would skip the parent's policy.
            parent = self.upstream.parent
            detail = f"{name}:{port} is reached through the parent proxy {parent.host}:{parent.port}, which the gateway client does not support yet"
            raise UpstreamFailed(GatewayFailure("upstream-unreachable", detail))
        if (name, port) != self.upstream.key:
            raise UpstreamFailed(
                Verdict.deny("dial-not-allowed", "", f"dial to {name}:{port} is not the candidate {self.upstream.host}:{self.upstream.port}")
            )
        destination = await self.dialer.destination(self.snapshot, self.record, name, port)
        if destination.address is None:
            assert destination.outcome is not None
            raise UpstreamFailed(destination.outcome)
        try:
            stream = await self._tcp.connect_tcp(destination.address, port, timeout, local_address, socket_options)
        except httpcore.ConnectTimeout as e:
            raise UpstreamFailed(GatewayFailure("upstream-timeout", f"connecting to {name}:{port} ({destination.address}) timed out")) from e
        except (httpcore.ConnectError, OSError) as e:
            detail = f"connecting to {name}:{port} ({destination.address}) failed: {readable_connect_error(str(e))}"
            raise UpstreamFailed(GatewayFailure("upstream-unreachable", detail)) from e
        return _CheckedStream(stream, self, name)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[typing.Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise UpstreamFailed(Verdict.deny("dial-not-allowed", "", "the gateway never dials unix sockets upstream"))

    async def sleep(self, seconds: float) -> None:
        await self._tcp.sleep(seconds)


class _CheckedStream(httpcore.AsyncNetworkStream):
    """The TCP stream to the checked address; `start_tls` runs the dialer's TLS, not the offered context."""

    def __init__(self, raw: httpcore.AsyncNetworkStream, backend: DialerNetworkBackend, name: str) -> None:
        self.raw = raw
        self.backend = backend
        self.name = name

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self.raw.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self.raw.write(buffer, timeout)

    async def aclose(self) -> None:
        await self.raw.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        backend = self.backend
        upstream = backend.upstream
        params = backend.dialer.tls_params(backend.snapshot, upstream.backend_name)
        name = params.hostname or upstream.sni or self.name
        conn = backend.dialer.tls_connection(params, name, backend.settings, [b"http/1.1"])
        tls = _TlsStream(self.raw, conn)
        await tls.handshake(timeout)
        return tls

    def get_extra_info(self, info: str) -> typing.Any:
        return self.raw.get_extra_info(info)


class _TlsStream(httpcore.AsyncNetworkStream):
    """pyOpenSSL over memory BIOs on top of an async TCP stream; every TLS failure is an `UpstreamFailed`."""

    def __init__(self, raw: httpcore.AsyncNetworkStream, conn: UpstreamConnection) -> None:
        self.raw = raw
        self.conn = conn

    async def handshake(self, timeout: float | None) -> None:
        while True:
            try:
                self.conn.do_handshake()
                break
            except SSL.WantReadError:
                await self._flush(timeout)
                if not await self._fill(timeout):
                    raise self._failed("the origin closed the connection during the TLS handshake") from None
            except SSL.Error as e:
                raise self._failed(_describe_ssl_error(self.conn, e)) from e
        await self._flush(timeout)

    async def _flush(self, timeout: float | None) -> None:
        while True:
            try:
                out = self.conn.bio_read(_READ)
            except SSL.WantReadError:
                return
            if not out:
                return
            try:
                await self.raw.write(out, timeout)
            except httpcore.NetworkError:
                cause = self._closed_cause()
                if cause is None:
                    raise
                raise self._failed(cause) from None

    async def _fill(self, timeout: float | None) -> bool:
        try:
            data = await self.raw.read(_READ, timeout)
        except httpcore.ReadError:  # a reset: the origin is gone, like an EOF
            data = b""
        if not data:
            self.conn.bio_shutdown()
            return False
        self.conn.bio_write(data)
        return True

    def _failed(self, fallback: str) -> UpstreamFailed:
        verification = self.conn.egress
        cause = verification.failure or fallback
        params = verification.params
        return UpstreamFailed(GatewayFailure(_TLS_INVALID, cause, params.source if params.from_policy else ""))

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        while True:
            try:
                return self.conn.recv(max_bytes)
            except SSL.WantReadError:
                await self._flush(timeout)
                if not await self._fill(timeout):
                    return self._eof()
            except SSL.ZeroReturnError:
                return self._eof()
            except SSL.SysCallError:
                return self._eof()
            except SSL.Error as e:
                raise self._failed(_describe_ssl_error(self.conn, e)) from e

    def _eof(self) -> bytes:
        """The end of the stream; before any data from an origin that asked for a client certificate we did not
        have, it is that origin refusing us (TLS 1.3 completes the handshake before the origin checks)."""
        cause = self._closed_cause()
        if cause is not None:
            raise self._failed(cause)
        return b""

    def _closed_cause(self) -> str | None:
        """Why the origin closed (or reset) the connection, when our TLS knows it."""
        verification = self.conn.egress
        if verification.failure is not None:
            return verification.failure
        if (
            not verification.received_data
            and verification.certificate_requested
            and not verification.params.has_client_certificate
        ):
            return client_certificate_required(verification.name)
        return None

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        while view:
            try:
                sent = self.conn.send(view)
            except SSL.WantReadError:
                await self._flush(timeout)
                if not await self._fill(timeout):
                    raise self._failed("the origin closed the connection")
                continue
            except SSL.Error as e:
                raise self._failed(_describe_ssl_error(self.conn, e)) from e
            view = view[sent:]
            await self._flush(timeout)

    async def aclose(self) -> None:
        try:
            self.conn.shutdown()
            await self._flush(None)
        except Exception:  # closing: the peer may already be gone
            pass
        await self.raw.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise RuntimeError("TLS is already established on this stream")

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "ssl_object":
            return None  # httpcore asks only to notice h2; we offer http/1.1 alone
        return self.raw.get_extra_info(info)


def _describe_ssl_error(conn: UpstreamConnection, error: SSL.Error) -> str:
    """The cause of an SSL error outside the verify callback (an alert from the origin), as the hooks name it."""
    verification = conn.egress
    if verification.failure is not None:
        return verification.failure
    text = str(error.args[0][-1][-1]) if error.args and isinstance(error.args[0], list) and error.args[0] else str(error)
    return describe_alert(
        text,
        sent_client_certificate=verification.params.has_client_certificate,
        certificate_requested=verification.certificate_requested,
        name=verification.name,
        source=verification.params.source,
    )


class DialerTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore pool that dials only through a `DialerNetworkBackend`."""

    def __init__(self, backend: DialerNetworkBackend) -> None:
        # httpcore wants an ssl.SSLContext for https origins; _CheckedStream.start_tls ignores it (the dialer's
        # OpenSSL context decides trust), so an empty client context, never one that trusts anything, is given.
        placeholder = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._pool = httpcore.AsyncConnectionPool(network_backend=backend, ssl_context=placeholder, http1=True, http2=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        req = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            resp = await self._pool.handle_async_request(req)
        except httpcore.TimeoutException as e:
            raise UpstreamFailed(GatewayFailure("upstream-timeout", f"{request.url.host}: {e or type(e).__name__}")) from e
        except httpcore.NetworkError as e:
            raise UpstreamFailed(GatewayFailure("upstream-unreachable", f"{request.url.host}: {e or type(e).__name__}")) from e
        assert isinstance(resp.stream, typing.AsyncIterable)
        return httpx.Response(
            status_code=resp.status, headers=resp.headers, stream=_ResponseStream(resp.stream), extensions=resp.extensions
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: typing.AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._stream:
            yield part

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()


def gateway_client(
    dialer: Dialer, snapshot: Snapshot, upstream: Upstream, *, timeout: float = 30.0, settings: TlsSettings = TlsSettings()
) -> httpx.AsyncClient:
    """An httpx client for one upstream candidate that can reach nothing else and skips no check.

    Connecting is bounded by the gateway's `connectTimeout`, everything else by `timeout`. `trust_env=False`: no
    proxy or CA bundle from the environment can bypass the dialer.
    """
    transport = DialerTransport(DialerNetworkBackend(dialer, snapshot, upstream, settings))
    connect = snapshot.gateway.connect_timeout if snapshot.gateway.connect_timeout > 0 else timeout
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(timeout, connect=connect), trust_env=False)
