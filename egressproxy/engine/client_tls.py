"""The client-side TLS connection of an intercepted flow, presenting a certificate from our CertMint.

Mirrors what mitmproxy's TlsConfig.tls_start_client does (same ciphers, ALPN and HTTP/2 handling), with the
certificate taken from the listener's CA instead of mitmproxy's own confdir CA.
"""

from __future__ import annotations

from mitmproxy import ctx, tls
from mitmproxy.addons.tlsconfig import AppData, _default_ciphers, alpn_select_callback  # noqa: PLC2701
from mitmproxy.net import tls as net_tls
from mitmproxy.proxy.layers import modes
from OpenSSL import SSL

from egressproxy.engine.certmint import MintedCert

__all__ = ["start_client_tls"]


def start_client_tls(tls_start: tls.TlsData, entry: MintedCert, dhparams: object) -> None:
    client = tls_start.conn
    server = tls_start.context.server
    min_version = net_tls.Version[ctx.options.tls_version_client_min]
    cipher_list = client.cipher_list or _default_ciphers(min_version)
    ssl_ctx = net_tls.create_client_proxy_context(
        method=net_tls.Method.DTLS_SERVER_METHOD if tls_start.is_dtls else net_tls.Method.TLS_SERVER_METHOD,
        min_version=min_version,
        max_version=net_tls.Version[ctx.options.tls_version_client_max],
        cipher_list=tuple(cipher_list),
        ecdh_curve=net_tls.get_curve(ctx.options.tls_ecdh_curve_client),
        chain_file=None,
        request_client_cert=False,
        alpn_select_callback=alpn_select_callback,
        extra_chain_certs=tuple(entry.chain_certs),
        dhparams=dhparams,
    )
    conn = SSL.Connection(ssl_ctx)
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
