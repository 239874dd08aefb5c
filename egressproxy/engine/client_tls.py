"""The client-side TLS connection of an intercepted flow, presenting a certificate from our CertMint.

Mirrors what mitmproxy's TlsConfig.tls_start_client does (same ciphers, ALPN and HTTP/2 handling), with the
certificate taken from the listener's CA instead of mitmproxy's own confdir CA.
"""

from __future__ import annotations

from mitmproxy import ctx, tls
from mitmproxy.addons.tlsconfig import AppData, alpn_select_callback
from mitmproxy.net import tls as net_tls
from mitmproxy.proxy.layers import modes
from OpenSSL import SSL

from egressproxy.engine.certmint import MintedCert
from egressproxy.engine.mitmproxy_boundary import default_ciphers
from egressproxy.engine.tls_buffers import release_buffers_when_idle

__all__ = ["start_client_tls", "prefer_h2_alpn_select"]


def prefer_h2_alpn_select(conn: SSL.Connection, options: list[bytes]) -> object:
    """mitmproxy's ALPN choice, except that a client offering h2 gets h2 while no upstream has fixed the protocol.

    mitmproxy picks the client's first offer; servers pick by their own preference (h2 first), and clients are
    written for that: httpx with `http2=True` offers `[http/1.1, h2]` and expects h2 from an HTTP/2 server (with
    `http1=False` it speaks h2 whatever was negotiated). Our upstream is not dialled yet when the client
    handshakes (lazy), so we choose like a server; mitmproxy translates h2 to an HTTP/1.1 upstream when needed.
    """
    app_data = conn.get_app_data()
    if app_data["client_alpn"] is None and app_data["server_alpn"] is None and app_data["http2"] and b"h2" in options:
        return b"h2"
    return alpn_select_callback(conn, options)


def start_client_tls(tls_start: tls.TlsData, entry: MintedCert, dhparams: object) -> None:
    client = tls_start.conn
    server = tls_start.context.server
    min_version = net_tls.Version[ctx.options.tls_version_client_min]
    cipher_list = client.cipher_list or default_ciphers(min_version)
    ssl_ctx = net_tls.create_client_proxy_context(
        method=net_tls.Method.DTLS_SERVER_METHOD if tls_start.is_dtls else net_tls.Method.TLS_SERVER_METHOD,
        min_version=min_version,
        max_version=net_tls.Version[ctx.options.tls_version_client_max],
        cipher_list=tuple(cipher_list),
        ecdh_curve=net_tls.get_curve(ctx.options.tls_ecdh_curve_client),
        chain_file=None,
        request_client_cert=False,
        alpn_select_callback=prefer_h2_alpn_select,
        extra_chain_certs=tuple(entry.chain_certs),
        dhparams=dhparams,
    )
    conn = SSL.Connection(ssl_ctx)
    release_buffers_when_idle(conn)  # idle SSE and keep-alive connections: no 34 KiB of empty buffers each
    conn.use_certificate(entry.cert.to_cryptography())
    conn.use_privatekey(entry.privatekey)
    # Secure web proxies (TLS to the proxy itself) stay on HTTP/1, as in mitmproxy.
    if len(tls_start.context.layers) == 2 and isinstance(tls_start.context.layers[0], modes.HttpProxy):
        client_alpn: bytes | None = b"http/1.1"
    else:
        client_alpn = client.alpn
    conn.set_app_data(AppData(client_alpn=client_alpn, server_alpn=server.alpn, http2=ctx.options.http2))
    conn.set_accept_state()
    tls_start.ssl_conn = conn
