"""Interception certificates: minted for the requested host from the intercepting listener's CA."""

from __future__ import annotations

import logging

from mitmproxy import certs, tls

from egressproxy.engine.certmint import CertMint
from egressproxy.engine.client_tls import start_client_tls
from egressproxy.engine.guard import fail_closed
from egressproxy.runtime.state import GatewayState

log = logging.getLogger("egressproxy")


class CertMinting:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.mints: dict[bytes, CertMint] = {}
        self.dhparams: object | None = None

    def mint_for(self, cert_pem: bytes, key_pem: bytes) -> CertMint:
        mint = self.mints.get(cert_pem)
        if mint is None:
            if self.dhparams is None:
                self.state.data_dir.mkdir(parents=True, exist_ok=True)
                self.dhparams = certs.CertStore.load_dhparam(self.state.data_dir / "dhparam.pem")
            mint = self.mints[cert_pem] = CertMint(cert_pem, key_pem, self.state.data_dir, self.dhparams)
            mint.preload()
        return mint

    def prepare(self) -> None:
        """Build the mints of every intercepting listener (blocking file reads: call before serving)."""
        snapshot = self.state.snapshot
        if snapshot is None:
            return
        for listener in snapshot.gateway.listeners:
            if listener.ca is not None:
                self.mint_for(listener.ca.cert_pem, listener.ca.key_pem)

    @fail_closed
    def tls_start_client(self, tls_start: tls.TlsData) -> None:
        if tls_start.ssl_conn is not None:
            return
        snapshot = self.state.snapshot
        record = self.state.connections.get(tls_start.context.client.id)
        if snapshot is None or record is None or not record.intercept or record.listener is None:
            return
        listener = next((l for l in snapshot.gateway.listeners if l.name == record.listener), None)
        if listener is None or listener.ca is None:
            return
        host = record.sni or record.host or record.connect_host
        if not host:
            return
        entry = self.mint_for(listener.ca.cert_pem, listener.ca.key_pem).get(host)
        start_client_tls(tls_start, entry, self.dhparams)
