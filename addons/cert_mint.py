"""Interception certificates: minted for the requested host from the intercepting listener's CA.

The leaves are cached per CA (egressproxy/engine/certmint.py), bounded by `cap`: the composition roots set it
from `--cert-cache-size` (run) or the `egress_cert_cache_size` option (mitmweb) through `resize`. Every lookup
is counted as a hit or a mint, so an undersized cache shows as mints that keep growing under steady traffic.
"""

from __future__ import annotations

import logging

from mitmproxy import certs, tls

from egressproxy.engine.certmint import DEFAULT_CAP, CertMint
from egressproxy.engine.client_tls import start_client_tls
from egressproxy.engine.guard import fail_closed
from egressproxy.runtime.state import GatewayState

log = logging.getLogger("egressproxy")


class CertMinting:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.mints: dict[bytes, CertMint] = {}
        self.dhparams: object | None = None
        self.cap = DEFAULT_CAP
        metrics = state.metrics
        self._hits, self._minted = metrics.cert_cache.labels("hit"), metrics.cert_cache.labels("minted")

    def resize(self, cap: int) -> None:
        """Bound every CA's leaf cache to `cap` leaves (those built later too)."""
        self.cap = cap
        for mint in self.mints.values():
            mint.resize(cap)
        self._count_entries()

    def mint_for(self, cert_pem: bytes, key_pem: bytes) -> CertMint:
        mint = self.mints.get(cert_pem)
        if mint is None:
            if self.dhparams is None:
                self.state.data_dir.mkdir(parents=True, exist_ok=True)
                self.dhparams = certs.CertStore.load_dhparam(self.state.data_dir / "dhparam.pem")
            mint = self.mints[cert_pem] = CertMint(cert_pem, key_pem, self.state.data_dir, self.dhparams, self.cap)
            mint.preload()
            self._count_entries()
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
        mint = self.mint_for(listener.ca.cert_pem, listener.ca.key_pem)
        minted, evictions = mint.minted, mint.evictions
        entry = mint.get(host)
        if mint.minted == minted:
            self._hits.inc()
        else:
            self._minted.inc()
            if mint.evictions != evictions:
                self.state.metrics.cert_cache_evictions.inc(mint.evictions - evictions)
            self._count_entries()
        start_client_tls(tls_start, entry, self.dhparams)

    def _count_entries(self) -> None:
        self.state.metrics.cert_cache_entries.set(sum(len(mint) for mint in self.mints.values()))

    def stats(self) -> dict[str, int]:
        """The leaf caches together, for GET /stats."""
        mints = list(self.mints.values())
        return {
            "capacity": self.cap,
            "entries": sum(len(m) for m in mints),
            "hits": sum(m.hits for m in mints),
            "minted": sum(m.minted for m in mints),
            "evictions": sum(m.evictions for m in mints),
        }
