"""The CA minted per gateway under --data-dir (DESIGN.md 4.2): minted once, reused, private, never replaced."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from cryptography import x509

from egressproxy.ca import (
    GatewayCAError,
    GatewayCAStore,
    gateway_ca_dir,
    load_or_mint_gateway_ca,
    minted_gateway_cas,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_call_mints_a_ca_certificate_and_key_under_ca_namespace_name(tmp_path: Path) -> None:
    ca = load_or_mint_gateway_ca(tmp_path, "platform", "egress")
    folder = tmp_path / "ca" / "platform" / "egress"
    assert gateway_ca_dir(tmp_path, "platform", "egress") == folder
    assert ca.minted and ca.cert_path == folder / "ca.crt"
    assert (folder / "ca.crt").read_bytes() == ca.cert_pem
    assert (folder / "ca.key").read_bytes() == ca.key_pem
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.subject.rfc4514_string() == "O=egressproxy,CN=egressproxy platform/egress"


def test_key_is_0600_and_every_created_directory_0700(tmp_path: Path) -> None:
    data = tmp_path / "data"
    load_or_mint_gateway_ca(data, "ns", "gw")
    assert mode(data / "ca" / "ns" / "gw" / "ca.key") == 0o600
    for d in (data, data / "ca", data / "ca" / "ns", data / "ca" / "ns" / "gw"):
        assert mode(d) == 0o700, d
    assert sorted(p.name for p in (data / "ca" / "ns" / "gw").iterdir()) == [".lock", "ca.crt", "ca.key"]


def test_later_calls_reuse_the_minted_ca(tmp_path: Path) -> None:
    first = load_or_mint_gateway_ca(tmp_path, "ns", "gw")
    again = load_or_mint_gateway_ca(tmp_path, "ns", "gw")
    assert not again.minted
    assert (again.cert_pem, again.key_pem) == (first.cert_pem, first.key_pem)


def test_each_gateway_gets_its_own_ca(tmp_path: Path) -> None:
    a = load_or_mint_gateway_ca(tmp_path, "ns", "a")
    b = load_or_mint_gateway_ca(tmp_path, "other", "a")
    assert a.cert_pem != b.cert_pem
    assert minted_gateway_cas(tmp_path) == {("ns", "a"): a.cert_path, ("other", "a"): b.cert_path}


def test_a_ca_without_its_certificate_is_incomplete_and_minted_anew(tmp_path: Path) -> None:
    """ca.crt is written last: a key alone is what a crash mid-mint leaves; no client can trust it yet."""
    folder = gateway_ca_dir(tmp_path, "ns", "gw")
    folder.mkdir(parents=True)
    (folder / "ca.key").write_bytes(b"half")
    ca = load_or_mint_gateway_ca(tmp_path, "ns", "gw")
    assert ca.minted and (folder / "ca.key").read_bytes() == ca.key_pem


def test_a_certificate_without_its_key_is_an_error_never_replaced(tmp_path: Path) -> None:
    first = load_or_mint_gateway_ca(tmp_path, "ns", "gw")
    key = first.cert_path.parent / "ca.key"
    key.unlink()
    with pytest.raises(GatewayCAError) as e:
        load_or_mint_gateway_ca(tmp_path, "ns", "gw")
    assert str(e.value).startswith(f"{key}: No such file or directory; the CA is not replaced silently")
    assert first.cert_path.read_bytes() == first.cert_pem


def test_store_logs_the_certificate_path_once_per_process(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "egressproxy")
    store = GatewayCAStore(tmp_path)
    ca = store("ns", "gw")
    assert store("ns", "gw") is ca
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert messages[0].startswith(f"gateway ns/gw: interception CA minted at {ca.cert_path} ")
    caplog.clear()
    GatewayCAStore(tmp_path)("ns", "gw")  # the next start
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        f"gateway ns/gw: interception CA reused at {ca.cert_path}"
    ]
