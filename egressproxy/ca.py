"""Creating the interception CA: `egressproxy ca init`.

The CA signs the certificates minted for intercepted hosts, so its key is as sensitive as any credential the
gateway holds: files holding it are created 0600 from the start (never chmod-ed after being written).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

__all__ = ["CAFiles", "create_ca", "write_ca", "secret_manifest"]

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
