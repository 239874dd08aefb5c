"""Certificates minted for intercepted hosts, signed by the listener's CA (its `caCertRef` Secret).

Each leaf is minted from the requested name alone (SAN = the host, an IP SAN for IP literals), never copied
from the upstream, so one name has one cached certificate whatever address it resolved to. Leaves reuse the
CA's key (as mitmproxy does), so a persisted leaf is only its certificate: `--data-dir/certs/<ca>/<host>.pem`
lets a restart serve the same certificate without minting. The in-memory cache is an LRU bounded by
`egressproxy run --cert-cache-size` (default 4096, `DEFAULT_CAP`): a host evicted from it is minted again
(about 1 ms) the next time it is intercepted, which `evictions` and `minted` count.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import logging
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitmproxy import certs

__all__ = ["CertMint", "MintedCert", "DEFAULT_CAP"]

log = logging.getLogger("egressproxy")

MintedCert = certs.CertStoreEntry
_RENEW_BEFORE = datetime.timedelta(days=2)
DEFAULT_CAP = 4096  # leaves kept in memory per CA: `--cert-cache-size`
_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="certmint-writer")


def _sans(host: str) -> list[x509.GeneralName]:
    try:
        return [x509.IPAddress(ipaddress.ip_address(host))]
    except ValueError:
        return [x509.DNSName(host)]


class CertMint:
    """Mints and caches leaf certificates for one CA."""

    def __init__(self, ca_cert_pem: bytes, ca_key_pem: bytes, data_dir: Path | None, dhparams: object, cap: int = DEFAULT_CAP):
        self.key = serialization.load_pem_private_key(ca_key_pem, None)
        self.ca = certs.Cert(x509.load_pem_x509_certificate(ca_cert_pem))
        self.chain_certs = [self.ca]
        self.dhparams = dhparams
        self.cap = cap
        self.fingerprint = hashlib.sha256(ca_cert_pem).hexdigest()[:16]
        self.dir = (data_dir / "certs" / self.fingerprint) if data_dir is not None else None
        self._cache: OrderedDict[str, MintedCert] = OrderedDict()
        self.minted = 0
        self.hits = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._cache)

    def resize(self, cap: int) -> None:
        """A new bound (the mitmweb option changed): the least recently used leaves beyond it are dropped."""
        self.cap = cap
        self._evict()

    def _evict(self) -> None:
        while len(self._cache) > self.cap:
            self._cache.popitem(last=False)
            self.evictions += 1

    def preload(self) -> int:
        """Read persisted leaves into the cache (blocking: run it in a worker thread before serving)."""
        if self.dir is None or not self.dir.is_dir():
            return 0
        loaded = 0
        with contextlib.suppress(OSError):  # a cache written before it was kept private is tightened on start
            _private_dir(self.dir)
        for path in sorted(self.dir.glob("*.pem"))[: self.cap]:
            try:
                os.chmod(path, 0o600)
                cert = x509.load_pem_x509_certificate(path.read_bytes())
            except (OSError, ValueError):
                continue
            if self._usable(cert):
                self._cache[path.stem] = self._entry(certs.Cert(cert))
                loaded += 1
        return loaded

    def get(self, host: str) -> MintedCert:
        entry = self._cache.get(host)
        if entry is not None and self._usable(entry.cert.to_cryptography()):
            self._cache.move_to_end(host)
            self.hits += 1
            return entry
        cert = certs.dummy_cert(self.key, self.ca.to_cryptography(), host, _sans(host), "egressproxy")  # type: ignore[arg-type]
        entry = self._entry(cert)
        self._cache[host] = entry
        self.minted += 1
        self._evict()
        if self.dir is not None:
            _writer.submit(self._persist, host, cert.to_pem())
        return entry

    def _entry(self, cert: certs.Cert) -> MintedCert:
        return certs.CertStoreEntry(cert=cert, privatekey=self.key, chain_file=None, chain_certs=self.chain_certs)  # type: ignore[arg-type]

    @staticmethod
    def _usable(cert: x509.Certificate) -> bool:
        return cert.not_valid_after_utc - _RENEW_BEFORE > datetime.datetime.now(datetime.timezone.utc)

    def _persist(self, host: str, pem: bytes) -> None:
        assert self.dir is not None
        if "/" in host or host.startswith("."):
            return
        try:
            _private_dir(self.dir)
            tmp = self.dir / f".{host}.pem.tmp"
            _write_private(tmp, pem)
            os.replace(tmp, self.dir / f"{host}.pem")
        except OSError as e:
            log.warning("could not persist minted certificate for %s: %s", host, e)


def _private_dir(path: Path) -> None:
    """The cache folder and its `certs/` parent, 0700 whatever the umask: which hosts a workload reached is
    nobody else's business on a shared machine (issue 14, item 7)."""
    for d in (path.parent, path):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)


def _write_private(path: Path, data: bytes) -> None:
    """Created 0600 from the start (never chmod-ed after being written), as the CA key in egressproxy/ca.py."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)
