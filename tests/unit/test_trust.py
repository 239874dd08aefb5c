"""`egressproxy trust`: the bundle is the system CAs plus the gateway CA (each once), and the printed lines name
the same file for every client family."""

from __future__ import annotations

import contextlib
import io
import os
import ssl
import stat
from pathlib import Path

import pytest

from egressproxy.ca import create_ca, load_or_mint_gateway_ca
from egressproxy.cli import main
from egressproxy.system_trust import SystemStore
from egressproxy.trust_bundle import BundleError, build_bundle, client_env, system_bundle
from tests.support.pki import TestCA


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A system store of one known CA (SSL_CERT_FILE, as OpenSSL reads it; no directory)."""
    ca = TestCA("system root").cert_pem
    (tmp_path / "system.pem").write_bytes(ca)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "system.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))
    return ca


def certificates(path: Path) -> list[bytes]:
    return [b"-----BEGIN CERTIFICATE-----" + p.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----"
            for p in path.read_bytes().split(b"-----BEGIN CERTIFICATE-----")[1:]]


def test_the_bundle_is_the_system_cas_and_the_minted_gateway_ca(tmp_path: Path, system: bytes) -> None:
    minted = load_or_mint_gateway_ca(tmp_path / "data", "default", "gw")
    status, printed, err = cli("trust", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "b.crt"))
    assert status == 0, err
    assert certificates(tmp_path / "b.crt") == [system.strip(), minted.cert_pem.strip()]
    assert stat.S_IMODE((tmp_path / "b.crt").stat().st_mode) == 0o644  # the workload reads it as another uid
    ctx = ssl.create_default_context(cafile=str(tmp_path / "b.crt"))  # OpenSSL accepts it whole
    assert len(ctx.get_ca_certs()) == 2
    assert str(minted.cert_path) in err


def test_every_client_family_gets_the_same_file(tmp_path: Path, system: bytes) -> None:
    ca_cert, _ = create_ca("own")
    (tmp_path / "ca.crt").write_bytes(ca_cert)
    status, printed, _ = cli("trust", "--ca", str(tmp_path / "ca.crt"), "--out", str(tmp_path / "b.crt"))
    assert status == 0
    names = [line.split()[1].split("=")[0] for line in printed.splitlines()]
    assert names == ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
                     "NPM_CONFIG_CAFILE", "PIP_CERT"]
    assert all(f"={tmp_path / 'b.crt'}" in line for line in printed.splitlines())
    assert certificates(tmp_path / "b.crt")[-1] == ca_cert.strip()


def test_mint_creates_the_ca_the_gateway_then_reuses(tmp_path: Path, system: bytes) -> None:
    data = tmp_path / "data"
    status, _, err = cli("trust", "--data-dir", str(data), "--gateway", "ns/gw", "--mint", "--out", str(tmp_path / "b"))
    assert status == 0, err
    again = load_or_mint_gateway_ca(data, "ns", "gw")
    assert not again.minted and certificates(tmp_path / "b")[-1] == again.cert_pem.strip()
    assert stat.S_IMODE((data / "ca" / "ns" / "gw" / "ca.key").stat().st_mode) == 0o600


def test_mint_needs_a_namespaced_gateway(tmp_path: Path, system: bytes) -> None:
    status, _, err = cli("trust", "--data-dir", str(tmp_path), "--gateway", "gw", "--mint", "--out", str(tmp_path / "b"))
    assert status == 1 and "--gateway NAMESPACE/NAME" in err
    assert not (tmp_path / "b").exists()


def test_no_minted_ca_and_several_are_errors(tmp_path: Path, system: bytes) -> None:
    status, _, err = cli("trust", "--data-dir", str(tmp_path), "--out", str(tmp_path / "b"))
    assert status == 1 and "found none" in err
    load_or_mint_gateway_ca(tmp_path, "a", "one")
    load_or_mint_gateway_ca(tmp_path, "b", "two")
    status, _, err = cli("trust", "--data-dir", str(tmp_path), "--out", str(tmp_path / "b"))
    assert status == 1 and "a/one, b/two" in err
    assert cli("trust", "--data-dir", str(tmp_path), "--gateway", "b/two", "--out", str(tmp_path / "b"))[0] == 0


def test_a_ca_file_without_a_certificate_is_refused(tmp_path: Path, system: bytes) -> None:
    (tmp_path / "ca.key").write_text("-----BEGIN PRIVATE KEY-----\nnot-a-cert\n-----END PRIVATE KEY-----\n")
    status, printed, err = cli("trust", "--ca", str(tmp_path / "ca.key"), "--out", str(tmp_path / "b"))
    assert status == 1 and printed == "" and "holds no PEM certificate" in err
    assert "not-a-cert" not in err  # key material never echoed
    with pytest.raises(BundleError):
        build_bundle(b"", b"nothing", "x")


def test_system_certificates_are_listed_once(tmp_path: Path) -> None:
    one, two = TestCA("one").cert_pem, TestCA("two").cert_pem
    (tmp_path / "bundle.pem").write_bytes(one + two)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "one.pem").write_bytes(one)  # Debian: the bundle and /etc/ssl/certs hold the same CAs
    pem, where = system_bundle(SystemStore(str(tmp_path / "bundle.pem"), str(tmp_path / "dir")))
    assert pem.count(b"BEGIN CERTIFICATE") == 2 and str(tmp_path / "bundle.pem") in where


def test_proxy_lines_and_quoting(tmp_path: Path) -> None:
    lines = client_env(tmp_path / "with space" / "b.crt", "http://127.0.0.1:8080")
    assert lines[0].startswith(f"export SSL_CERT_FILE='{tmp_path / 'with space' / 'b.crt'}'")
    assert any(line.startswith("export HTTPS_PROXY=http://127.0.0.1:8080 ") for line in lines)
    assert os.sep in lines[0]
