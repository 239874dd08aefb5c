"""Upstream TLS session resumption (egressproxy/engine/tls_sessions.py, Dialer.tls_connection).

The dialer's connections handshake with a pyOpenSSL origin over memory BIOs: a session is kept once the origin's
first data arrives, offered to the next connection under exactly the same key, and never to one whose origin,
name, verification parameters, settings or ALPN offer differ (a resumed handshake skips every certificate check).
"""

from __future__ import annotations

import gc
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from egressproxy.dialer import Dialer
from egressproxy.engine.tls_sessions import TlsSessions
from egressproxy.engine.upstream_ssl import TlsSettings, UpstreamConnection
from egressproxy.metrics import GatewayMetrics
from egressproxy.resolver import Resolver
from egressproxy.upstream_tls import UpstreamTlsParams
from tests.support.pki import TestCA

NAME = "origin.test"
ORIGIN = ("origin.test", 443)


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA("session test origins")


@pytest.fixture(scope="module")
def server_context(ca: TestCA) -> SSL.Context:
    issued = ca.issue(NAME, "other.test")
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.use_certificate(x509.load_pem_x509_certificate(issued.cert_pem))
    context.use_privatekey(serialization.load_pem_private_key(issued.key_pem, None))  # type: ignore[arg-type]
    context.set_session_id(b"egressproxy-test")
    return context


@pytest.fixture
def params(ca: TestCA) -> UpstreamTlsParams:
    return UpstreamTlsParams("test trust", system_trust=False, trust_der=(ca.cert.public_bytes(serialization.Encoding.DER),))


@pytest.fixture
def dialer() -> Dialer:
    metrics = GatewayMetrics()
    return Dialer(Resolver(metrics), metrics)


def _pump(a: SSL.Connection, b: SSL.Connection) -> None:
    for src, dst in ((a, b), (b, a)):
        try:
            data = src.bio_read(65536)
        except SSL.WantReadError:
            continue
        dst.bio_write(data)


def _handshake(client: UpstreamConnection, server_context: SSL.Context) -> bool:
    """Handshake, one byte of origin data (which also delivers TLS 1.3 tickets), then the end as the gateway sees
    it: no close_notify (mitmproxy sends none upstream), `mark_closed` from the server_disconnected hook, and the
    connection freed. True when the handshake resumed a session."""
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    for _ in range(20):
        for conn in (client, server):
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                pass
        _pump(client, server)
    server.send(b"x")
    _pump(client, server)
    assert client.recv(1) == b"x"
    assert client.egress.failure is None
    client.mark_closed()
    resumed = client.resumed()
    del client, server
    gc.collect()  # OpenSSL frees the connection now: without mark_closed, its session would be made unresumable
    return resumed


def test_a_connection_freed_without_mark_closed_leaves_no_resumable_session(dialer, params, server_context) -> None:
    """Pins why `mark_closed` exists: OpenSSL spoils the session of a connection freed without close_notify."""
    conn = dialer.tls_connection(params, NAME, TlsSettings(), None, ORIGIN)
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    for _ in range(20):
        for side in (conn, server):
            try:
                side.do_handshake()
            except SSL.WantReadError:
                pass
        _pump(conn, server)
    server.send(b"x")
    _pump(conn, server)
    conn.recv(1)
    del conn, server
    gc.collect()
    assert len(dialer.sessions) == 1
    assert _connect(dialer, params, server_context) is False


def _connect(dialer: Dialer, params: UpstreamTlsParams, server_context: SSL.Context, *, name: str = NAME,
             origin: tuple[str, int] | None = ORIGIN, settings: TlsSettings = TlsSettings(),
             alpn: list[bytes] | None = None) -> bool:
    return _handshake(dialer.tls_connection(params, name, settings, alpn, origin), server_context)


def test_a_second_connection_under_the_same_key_resumes(dialer, params, server_context) -> None:
    assert _connect(dialer, params, server_context) is False
    assert _connect(dialer, params, server_context) is True
    assert dialer.sessions.stats()["offered"] == 1


@pytest.mark.parametrize(
    "change",
    ["name", "origin port", "parameters", "settings", "alpn", "no origin"],
)
def test_a_session_never_crosses_to_another_key(dialer, params, server_context, change: str) -> None:
    assert _connect(dialer, params, server_context) is False
    kwargs: dict[str, object] = {
        "name": {"name": "other.test"},
        "origin port": {"origin": (ORIGIN[0], 8443)},
        "settings": {"settings": TlsSettings(cipher_list=("ECDHE-RSA-AES128-GCM-SHA256",))},
        "alpn": {"alpn": [b"http/1.1"]},
        "no origin": {"origin": None},
        "parameters": {},
    }[change]
    other = replace(params, source="BackendTLSPolicy/default/pinned") if change == "parameters" else params
    assert _connect(dialer, other, server_context, **kwargs) is False  # type: ignore[arg-type]
    assert dialer.sessions.stats()["offered"] == 0


def test_a_failed_check_keeps_no_session(dialer, server_context) -> None:
    untrusting = UpstreamTlsParams("nothing trusted", system_trust=False)
    conn = dialer.tls_connection(untrusting, NAME, TlsSettings(), None, ORIGIN)
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    with pytest.raises(SSL.Error):
        for _ in range(20):
            for side in (conn, server):
                try:
                    side.do_handshake()
                except SSL.WantReadError:
                    pass
            _pump(conn, server)
    assert conn.egress.failure is not None
    assert len(dialer.sessions) == 0


def test_sessions_are_bounded_and_expire() -> None:
    now = [0.0]
    sessions = TlsSessions(capacity=2, max_age=10.0, clock=lambda: now[0])
    marker = [SSL.Session(), SSL.Session(), SSL.Session()]
    for i, session in enumerate(marker):
        sessions.put(i, session)
    assert sessions.get(0) is None  # the least recently used one went first
    assert sessions.get(1) is marker[1] and sessions.get(2) is marker[2]
    now[0] = 11.0
    assert sessions.get(2) is None
    assert sessions.stats() == {"entries": 1, "offered": 2, "resumed": 0, "full": 0}
