"""OpenSSL for upstream TLS: contexts, connections and the verify callback that names a failure's cause.

No mitmproxy state lives here (unit-testable): addons/upstream_tls.py decides which parameters apply to which
upstream connection and calls these. The checks run inside the handshake (an OpenSSL verify callback), because
`tls_established_server` is too late to abort cleanly.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from mitmproxy.addons.tlsconfig import DEFAULT_HOSTFLAGS
from mitmproxy.net import tls as net_tls
from OpenSSL import SSL, crypto

from egressproxy.engine.mitmproxy_boundary import create_ssl_context
from egressproxy.engine.tls_buffers import release_buffers_when_idle
from egressproxy.system_trust import system_store
from egressproxy.upstream_tls import (
    UpstreamTlsParams,
    describe_alert,
    describe_verify_error,
    load_private_key,
    matches_subject_alt_names,
    spki_pin,
)

__all__ = ["TlsSettings", "build_context", "make_connection", "refusing_connection", "Verification", "UpstreamConnection"]

log = logging.getLogger("egressproxy")

_UNABLE_TO_GET_CRL = 3

@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The protocol settings mitmproxy's options give an upstream connection (mirrors TlsConfig)."""

    method: net_tls.Method = net_tls.Method.TLS_CLIENT_METHOD
    min_version: net_tls.Version = net_tls.Version.TLS1_2
    max_version: net_tls.Version = net_tls.Version.UNBOUNDED
    cipher_list: tuple[str, ...] | None = None
    ecdh_curve: Any = None


def build_context(params: UpstreamTlsParams, settings: TlsSettings) -> SSL.Context:
    """An OpenSSL client context holding the trust anchors, CRLs and client certificate of `params`."""
    context: SSL.Context = create_ssl_context(  # mitmproxy's own base (versions, options, ciphers)
        method=settings.method,
        min_version=settings.min_version,
        max_version=settings.max_version,
        cipher_list=settings.cipher_list,
        ecdh_curve=settings.ecdh_curve,
    )
    context.set_verify(SSL.VERIFY_PEER, None)  # each connection sets its own callback
    context.set_info_callback(_info_callback)
    if params.system_trust:
        store_paths = system_store()
        context.load_verify_locations(store_paths.cafile, store_paths.capath)
    store = context.get_cert_store()
    assert store is not None
    for der in params.trust_der:
        store.add_cert(crypto.X509.from_cryptography(x509.load_der_x509_certificate(der)))
    if params.crls_der:
        for der in params.crls_der:
            store.add_crl(x509.load_der_x509_crl(der))
        # Every certificate of the chain is checked against its issuer's CRL; see Verification for which
        # missing CRLs are tolerated.
        store.set_flags(crypto.X509StoreFlags.CRL_CHECK | crypto.X509StoreFlags.CRL_CHECK_ALL)
    if params.has_client_certificate:
        context.use_certificate(x509.load_der_x509_certificate(params.client_chain_der[0]))
        for der in params.client_chain_der[1:]:
            context.add_extra_chain_cert(x509.load_der_x509_certificate(der))
        assert params.client_key_pem is not None
        context.use_privatekey(load_private_key(params.client_key_pem))
        context.check_privatekey()
        SSL._lib.SSL_CTX_set_post_handshake_auth(context._context, 1)
    return context


def _info_callback(conn: SSL.Connection, where: int, ret: int) -> None:
    """Notice the origin's CertificateRequest (the one sign of an mTLS origin a TLS 1.3 client gets)."""
    if not where & SSL.SSL_CB_LOOP:
        return
    egress = getattr(conn, "egress", None)
    if egress is not None and not egress.certificate_requested:
        try:
            if b"certificate request" in (conn.get_state_string() or b""):
                egress.certificate_requested = True
        except Exception:  # pragma: no cover - never let a callback raise into OpenSSL
            pass


def _openssl_error_text(code: int) -> str:
    return SSL._ffi.string(SSL._lib.X509_verify_cert_error_string(code)).decode()


def _subject(cert: Any) -> str:
    try:
        return cert.to_cryptography().subject.rfc4514_string()
    except Exception:  # pragma: no cover - a certificate cryptography cannot parse
        return "?"


@dataclass(eq=False)
class Verification:
    """One upstream handshake's checks and, once something failed, its cause."""

    params: UpstreamTlsParams
    name: str  # the name verified (and sent as SNI unless an IP)
    failure: str | None = None
    received_data: bool = False
    certificate_requested: bool = False  # the origin sent a CertificateRequest
    tentative: str | None = None  # a cause assumed until the origin sends its first byte
    on_failure: Callable[[str], None] | None = None
    on_data: Callable[[], None] | None = None
    refuse: str | None = None  # set: reject whatever the origin presents, with this cause

    def fail(self, cause: str) -> bool:
        if self.failure is None:
            self.failure = cause
        return False

    def callback(self, conn: SSL.Connection, cert: Any, errno: int, depth: int, ok: int) -> bool:
        """OpenSSL's verify callback: never raises (an exception here would crash mitmproxy's TLS layer)."""
        try:
            return self._check(cert, errno, depth, ok)
        except Exception as e:  # pragma: no cover - defensive: refuse, never accept, on a bug
            log.exception("upstream TLS verify callback failed")
            return self.fail(f"internal error while verifying the certificate: {e!r}")

    def _check(self, cert: Any, errno: int, depth: int, ok: int) -> bool:
        if self.refuse is not None:
            return self.fail(self.refuse)
        if not ok:
            if errno == _UNABLE_TO_GET_CRL and depth > 0:
                # crlRefs check every chain certificate whose issuer's CRL is configured; the leaf's issuer
                # must have one (fail closed), an intermediate's issuer (usually the root) may not.
                return True
            text = _openssl_error_text(errno)
            return self.fail(describe_verify_error(errno, text, depth, _subject(cert), self.name, self.params.source))
        if depth == 0:
            leaf = cert.to_cryptography()
            if self.params.subject_alt_names and not matches_subject_alt_names(leaf, self.params.subject_alt_names):
                wanted = ", ".join(f"{k}={v}" for k, v in self.params.subject_alt_names)
                return self.fail(
                    f"subjectAltName mismatch: certificate {_subject(cert)!r} for {self.name} names none of "
                    f"validation.subjectAltNames [{wanted}] ({self.params.source})"
                )
            if self.params.spki_pins:
                pin = spki_pin(leaf)
                if pin not in self.params.spki_pins:
                    return self.fail(
                        f"SPKI pin mismatch: the public key of {_subject(cert)!r} for {self.name} has pin {pin}, "
                        f"not one of the {len(self.params.spki_pins)} validation.spkiPins of {self.params.source}"
                    )
        return True

    def alert(self, error: SSL.Error) -> None:
        """An SSL error while reading after the handshake: before any data it is the origin rejecting us."""
        if self.received_data or self.failure is not None:
            return
        text = _last_error_text(error)
        if "alert" not in text:
            return
        self.failure = describe_alert(
            text,
            sent_client_certificate=self.params.has_client_certificate,
            certificate_requested=self.certificate_requested,
            name=self.name,
            source=self.params.source,
        )
        if self.on_failure is not None:
            self.on_failure(self.failure)


def _last_error_text(error: SSL.Error) -> str:
    args = error.args
    if args and isinstance(args[0], list) and args[0] and isinstance(args[0][-1], tuple):
        return str(args[0][-1][-1])
    return str(error)


class UpstreamConnection(SSL.Connection):
    """pyOpenSSL's Connection, noticing alerts the origin sends right after the handshake (TLS 1.3 mTLS).

    A fatal alert leaves OpenSSL's RECEIVED_SHUTDOWN flag set, and mitmproxy's TLS layer then takes the
    following TCP close for one it already passed on, so the request would hang until its timeout. We report
    such an alert as the close it is (ZeroReturnError), after recording its cause.
    """

    egress: Verification
    # Called once with the connection's session when the origin's first application data arrives (the handshake
    # passed every check and the origin accepted us; TLS 1.3 tickets arrive before that data): tls_sessions.py.
    on_session: Callable[[SSL.Session], None] | None = None

    def recv(self, bufsiz: int, flags: int | None = None) -> bytes:
        try:
            data = super().recv(bufsiz, flags)
        except SSL.Error as e:
            if type(e) is SSL.Error:  # not WantRead/WantWrite/ZeroReturn/SysCall
                log.warning("upstream TLS to %s: %s", self.egress.name, _last_error_text(e))
                self.egress.alert(e)
                if self.get_shutdown() & SSL.RECEIVED_SHUTDOWN:
                    raise SSL.ZeroReturnError() from e
            raise
        if data and not self.egress.received_data:
            self.egress.received_data = True
            if self.egress.on_data is not None:
                self.egress.on_data()
            session = self.get_session() if self.on_session is not None and self.egress.failure is None else None
            if session is not None and self.on_session is not None:
                self.on_session(session)
        return data

    def mark_closed(self) -> None:
        """The connection is over: keep its session resumable unless it ended in a TLS error.

        mitmproxy never sends close_notify upstream, and OpenSSL, freeing a connection that sent none, marks its
        session not resumable, so the session kept for the next connection (tls_sessions.py) would be refused by
        OpenSSL itself. A fatal alert or failed check still invalidates it (OpenSSL does so when the alert passes;
        `egress.failure` covers ours). Called from the server_disconnected hook, after the last read or write.
        """
        if self.on_session is not None and self.egress.failure is None:
            self.set_shutdown(self.get_shutdown() | SSL.SENT_SHUTDOWN)

    def resumed(self) -> bool:
        """Whether the completed handshake resumed an offered session (no certificate was exchanged)."""
        return bool(SSL._lib.SSL_session_reused(self._ssl))


def make_connection(context: SSL.Context, verification: Verification, alpn: list[bytes] | None = None) -> UpstreamConnection:
    """A client connection that verifies `verification.name` (SNI too, unless an IP) with our callback."""
    conn = UpstreamConnection(context)
    release_buffers_when_idle(conn)  # idle SSE and keep-alive connections: no 34 KiB of empty buffers each
    conn.egress = verification
    conn.set_verify(SSL.VERIFY_PEER, verification.callback)
    name = verification.name
    param = SSL._lib.SSL_get0_param(conn._ssl)
    SSL._lib.X509_VERIFY_PARAM_set_hostflags(param, DEFAULT_HOSTFLAGS)
    try:
        ip = ipaddress.ip_address(name).packed
    except ValueError:
        host_name = name.encode("idna")
        conn.set_tlsext_host_name(host_name)
        if not verification.params.subject_alt_names:  # else the SAN check in the callback replaces it
            ok = SSL._lib.X509_VERIFY_PARAM_set1_host(param, host_name, len(host_name))
            SSL._openssl_assert(ok == 1)
    else:
        if not verification.params.subject_alt_names:
            ok = SSL._lib.X509_VERIFY_PARAM_set1_ip(param, ip, len(ip))
            SSL._openssl_assert(ok == 1)
    if alpn:
        conn.set_alpn_protos(alpn)
    conn.set_connect_state()
    return conn


def refusing_connection(settings: TlsSettings, cause: str, name: str, source: str) -> UpstreamConnection:
    """A connection that fails its handshake with `cause` whatever the origin presents (fail closed)."""
    context: SSL.Context = create_ssl_context(
        method=settings.method,
        min_version=settings.min_version,
        max_version=settings.max_version,
        cipher_list=settings.cipher_list,
        ecdh_curve=settings.ecdh_curve,
    )
    verification = Verification(UpstreamTlsParams(source, system_trust=False), name, refuse=cause)
    return make_connection(context, verification)
