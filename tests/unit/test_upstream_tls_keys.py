"""egressproxy/upstream_tls.py `load_private_key`: only keys an OpenSSL context can use for a client certificate.

cryptography parses more key types than TLS client authentication takes (X25519 is for key exchange only;
cryptography 50 adds ML-DSA). Such a key is a problem at load time, named, not a failure inside the handshake.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from OpenSSL import SSL

from egressproxy.upstream_tls import PemError, load_private_key


def _pem(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize(
    "key",
    [rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP256R1()), ed25519.Ed25519PrivateKey.generate()],
    ids=["rsa", "ecdsa", "ed25519"],
)
def test_tls_key_types_load_and_openssl_takes_them(key: object) -> None:
    loaded = load_private_key(_pem(key))
    SSL.Context(SSL.TLS_CLIENT_METHOD).use_privatekey(loaded)


def test_a_key_tls_cannot_use_is_refused_by_name() -> None:
    with pytest.raises(PemError, match="X25519PrivateKey, which TLS cannot use"):
        load_private_key(_pem(x25519.X25519PrivateKey.generate()))
