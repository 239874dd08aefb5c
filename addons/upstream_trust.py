"""Upstream certificate verification: the system bundle plus `upstreamTLS.additionalTrustBundleSecretRef`.

mitmproxy's `ssl_verify_upstream_trusted_ca` replaces the trust store, so the system bundle (certifi) and the
Secret's PEM values are written as one combined file under --data-dir whenever the snapshot's bundle changes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import certifi
from mitmproxy import ctx

from egressproxy.runtime.state import GatewayState

log = logging.getLogger("egressproxy")


def write_bundle(data_dir: Path, extra_pem: bytes) -> Path:
    """The combined PEM file for `extra_pem` (blocking; content-addressed, so rewriting is idempotent)."""
    digest = hashlib.sha256(extra_pem).hexdigest()[:16]
    path = data_dir / f"upstream-trust-{digest}.pem"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(Path(certifi.where()).read_bytes() + b"\n" + extra_pem + b"\n")
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
        if not extra:
            return None
        return str(write_bundle(self.state.data_dir, extra))

    def apply(self, path: str | None) -> None:
        if ctx.options.ssl_verify_upstream_trusted_ca != path:
            ctx.options.update(ssl_verify_upstream_trusted_ca=path)
            log.info("upstream trust: %s", path or "system bundle")
