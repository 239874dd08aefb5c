"""The system trust store, as OpenSSL finds it: where the gateway's upstream trust starts (DESIGN.md 4.2).

Behind a TLS-inspecting corporate proxy the inspecting CA is installed in the distribution's store
(`/etc/ssl/certs`, `update-ca-certificates`) or named by `SSL_CERT_FILE` / `SSL_CERT_DIR`; a gateway that
trusted certifi only would answer every intercepted request with 502. So the gateway trust is, in order:
`SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else the distribution bundle and directory the system OpenSSL was
built with (`ssl.get_default_verify_paths()`, which applies the same environment variables), and certifi only
where the system has no store at all. `describe()` names what was trusted, for the 502 and the start-up log.
"""

from __future__ import annotations

import functools
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import certifi

__all__ = ["SystemStore", "system_store", "find_system_store"]


@dataclass(frozen=True, slots=True)
class SystemStore:
    cafile: str | None  # a PEM bundle
    capath: str | None  # a directory of (hashed) PEM certificates
    certifi: bool = False  # no system store: certifi's bundle (then `cafile` is certifi's)

    def describe(self) -> str:
        if self.certifi:
            return f"certifi {self.cafile} (no system store found)"
        where = " + ".join(p for p in (self.cafile, self.capath) if p)
        return f"the system store {where}"

    def pem(self) -> bytes:
        """Every certificate of the store as one PEM (for mitmproxy's single trust-file option)."""
        parts: list[bytes] = []
        if self.cafile:
            parts.append(Path(self.cafile).read_bytes())
        if self.capath:
            for entry in sorted(Path(self.capath).iterdir()):
                try:
                    data = entry.read_bytes() if entry.is_file() else b""
                except OSError:
                    continue
                if b"-----BEGIN CERTIFICATE-----" in data:
                    parts.append(data)
        return b"\n".join(parts)


def find_system_store(paths: ssl.DefaultVerifyPaths | None = None) -> SystemStore:
    """Where OpenSSL would look (environment first), keeping only locations that exist and hold something."""
    paths = paths or ssl.get_default_verify_paths()
    cafile = paths.cafile if paths.cafile and os.path.isfile(paths.cafile) else None
    capath = paths.capath if paths.capath and _has_certificates(paths.capath) else None
    if cafile is None and capath is None:
        return SystemStore(certifi.where(), None, certifi=True)
    return SystemStore(cafile, capath)


def _has_certificates(directory: str) -> bool:
    try:
        with os.scandir(directory) as entries:
            return any(e.is_file() for e in entries)
    except OSError:
        return False


@functools.cache
def system_store() -> SystemStore:
    """The process's system store (the environment does not change under a running gateway)."""
    return find_system_store()
