"""Upstream certificate verification for mitmproxy's own TLS (an HTTPS upstream proxy hop): the system store
plus `upstreamTLS.additionalTrustBundleSecretRef`.

mitmproxy's `ssl_verify_upstream_trusted_ca` replaces its trust store (certifi by default), so the system store
as OpenSSL finds it (egressproxy/system_trust.py: `SSL_CERT_FILE`, `SSL_CERT_DIR`, the distribution bundle;
certifi only where there is none) and the Secret's PEM values are written as one combined file under
--data-dir whenever the snapshot's bundle changes. Origins themselves are verified by the dialer
(egressproxy/dialer.py), which reads the same store.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from mitmproxy import ctx

from egressproxy.runtime.state import GatewayState
from egressproxy.system_trust import SystemStore, system_store
from egressproxy.writable_dirs import private_dir

log = logging.getLogger("egressproxy")


def write_bundle(data_dir: Path, extra_pem: bytes, store: SystemStore | None = None) -> Path:
    """The combined PEM file for the system store and `extra_pem` (blocking; content-addressed, so rewriting is
    idempotent).

    A --data-dir that cannot be written (read-only, full) must not stop the gateway: the bundle is public
    material mitmproxy only needs as a file, so it then goes to a private temporary folder of this process.
    """
    system_pem = (store or system_store()).pem()
    digest = hashlib.sha256(system_pem + b"\0" + extra_pem).hexdigest()[:16]
    content = system_pem + b"\n" + extra_pem + b"\n"
    try:
        return _write_once(data_dir / f"upstream-trust-{digest}.pem", content)
    except OSError as e:
        fallback = private_dir()
        log.warning("upstream trust: cannot write under %s (%s); using %s", data_dir, e.strerror or e, fallback)
        return _write_once(fallback / f"upstream-trust-{digest}.pem", content)


def _write_once(path: Path, content: bytes) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(content)
        os.replace(tmp, path)
    return path


class UpstreamTrust:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.applied: bytes | None = None

    def bundle_path(self) -> str | None:
        """The option value for the current snapshot (blocking file write on change: call off the loop)."""
        snapshot = self.state.snapshot
        extra = snapshot.gateway.trust_bundle_pem if snapshot is not None else None
        store = system_store()
        if not extra and store.certifi:
            return None  # mitmproxy's default is certifi already
        return str(write_bundle(self.state.data_dir, extra or b"", store))

    def apply(self, path: str | None) -> None:
        if ctx.options.ssl_verify_upstream_trusted_ca != path:
            ctx.options.update(ssl_verify_upstream_trusted_ca=path)
            log.info("upstream trust: %s%s", system_store().describe(), f" (combined in {path})" if path else "")
