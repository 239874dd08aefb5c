"""Creating the interception CA: `egressproxy ca init`, and the CA minted per gateway for a Terminate listener
without `caCertRef` (DESIGN.md 4.2: `DATA_DIR/ca/<namespace>/<name>/ca.crt` and `ca.key`).

The CA signs the certificates minted for intercepted hosts, so its key is as sensitive as any credential the
gateway holds: files holding it are created 0600 from the start (never chmod-ed after being written), and a
gateway's CA directory is 0700. A minted CA is never replaced: clients have been told to trust it.
"""

from __future__ import annotations

import datetime
import fcntl
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

__all__ = [
    "CAFiles",
    "GatewayCA",
    "GatewayCAError",
    "GatewayCAStore",
    "create_ca",
    "gateway_ca_dir",
    "load_or_mint_gateway_ca",
    "minted_gateway_cas",
    "secret_manifest",
    "write_ca",
]

log = logging.getLogger("egressproxy")

CA_VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class CAFiles:
    cert: Path
    key: Path
    secret: Path


def create_ca(name: str = "egress-ca") -> tuple[bytes, bytes]:
    """A self-signed RSA-2048 CA certificate and its PKCS#8 key, both PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "egressproxy")]
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=2))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert_pem, key_pem


def secret_manifest(name: str, cert_pem: bytes, key_pem: bytes, namespace: str = "default") -> str:
    """A v1 Secret with stringData tls.crt and tls.key, as `caCertRef` expects."""

    def block(pem: bytes) -> str:
        return "".join(f"    {line}\n" for line in pem.decode("ascii").strip().splitlines())

    return (
        "apiVersion: v1\n"
        "kind: Secret\n"
        "metadata:\n"
        f"  name: {name}\n"
        f"  namespace: {namespace}\n"
        "type: kubernetes.io/tls\n"
        "stringData:\n"
        "  tls.crt: |\n"
        f"{block(cert_pem)}"
        "  tls.key: |\n"
        f"{block(key_pem)}"
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def write_ca(out_dir: str | os.PathLike[str], name: str = "egress-ca", namespace: str = "default") -> CAFiles:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cert_pem, key_pem = create_ca(name)
    files = CAFiles(out / "ca.crt", out / "ca.key", out / "ca-secret.yaml")
    files.cert.write_bytes(cert_pem)
    _write_private(files.key, key_pem)
    _write_private(files.secret, secret_manifest(name, cert_pem, key_pem, namespace).encode("ascii"))
    return files


# ---------------------------------------------------------------------------------------------------------------
# The CA minted per gateway under --data-dir


class GatewayCAError(Exception):
    """The gateway's minted CA cannot be read, and replacing it would break every client that trusts it."""


@dataclass(frozen=True)
class GatewayCA:
    cert_path: Path
    cert_pem: bytes
    key_pem: bytes
    minted: bool  # True: written just now; False: read from an earlier start


def gateway_ca_dir(data_dir: str | os.PathLike[str], namespace: str, name: str) -> Path:
    return Path(data_dir) / "ca" / namespace / name


def _private_dir(path: Path) -> None:
    """Create `path` and any missing parents 0700 (parents that exist are left as they are)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:  # another process made it in between
            continue
        os.chmod(d, 0o700)  # whatever the umask


def _replace_private(path: Path, data: bytes) -> None:
    """Write whole or not at all: a crash never leaves half a key under the final name."""
    tmp = path.with_name(path.name + ".tmp")
    _write_private(tmp, data)
    os.replace(tmp, path)


def load_or_mint_gateway_ca(data_dir: str | os.PathLike[str], namespace: str, name: str) -> GatewayCA:
    """The gateway's CA from `DATA_DIR/ca/<namespace>/<name>/`, minted there the first time (blocking file work).

    A lock file serialises processes (`--workers`, a second gateway on the same data dir) so exactly one mints.
    `ca.crt` is written last: while it is absent the CA is incomplete and minted anew; once it exists, the pair
    is only ever read.
    """
    folder = gateway_ca_dir(data_dir, namespace, name)
    _private_dir(folder)
    os.chmod(folder, 0o700)
    cert_path, key_path = folder / "ca.crt", folder / "ca.key"
    lock = os.open(folder / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if cert_path.exists():
            try:
                return GatewayCA(cert_path, cert_path.read_bytes(), key_path.read_bytes(), minted=False)
            except OSError as e:
                raise GatewayCAError(
                    f"{e.filename or key_path}: {e.strerror or e}; the CA is not replaced "
                    f"silently (clients trust it): restore it, or remove {folder} to mint a new one"
                ) from None
        cert_pem, key_pem = create_ca(f"egressproxy {namespace}/{name}")
        _replace_private(key_path, key_pem)
        tmp = cert_path.with_name("ca.crt.tmp")
        tmp.write_bytes(cert_pem)
        os.replace(tmp, cert_path)
        return GatewayCA(cert_path, cert_pem, key_pem, minted=True)
    finally:
        os.close(lock)  # releases the lock


class GatewayCAStore:
    """`egressproxy run`'s source of minted gateway CAs: reads or mints each once per process and logs its path.

    Called by the compiler from the thread that loads the configuration (never on the event loop).
    """

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir)
        self._known: dict[tuple[str, str], GatewayCA] = {}
        self._lock = threading.Lock()

    def __call__(self, namespace: str, name: str) -> GatewayCA:
        with self._lock:
            known = self._known.get((namespace, name))
            if known is not None and known.cert_path.exists():
                return known
            ca = load_or_mint_gateway_ca(self.data_dir, namespace, name)
            self._known[(namespace, name)] = ca
        verb = "minted" if ca.minted else "reused"
        log.info(
            "gateway %s/%s: interception CA %s at %s (a Terminate listener without caCertRef; clients trust it: "
            "egressproxy ca show --data-dir %s)",
            namespace,
            name,
            verb,
            ca.cert_path,
            self.data_dir,
        )
        return ca


def minted_gateway_cas(data_dir: str | os.PathLike[str]) -> dict[tuple[str, str], Path]:
    """(namespace, name) -> certificate path of every CA minted under `data_dir`."""
    root = Path(data_dir) / "ca"
    found: dict[tuple[str, str], Path] = {}
    if root.is_dir():
        for cert in sorted(root.glob("*/*/ca.crt")):
            found[(cert.parent.parent.name, cert.parent.name)] = cert
    return found
