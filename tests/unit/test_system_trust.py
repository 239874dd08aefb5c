"""The system trust store as OpenSSL finds it: environment first, then the distribution's, certifi only as a
last resort; and the name of what was trusted."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi

from egressproxy.system_trust import SystemStore, find_system_store
from tests.support.pki import TestCA


def paths(cafile: str | None, capath: str | None) -> ssl.DefaultVerifyPaths:
    return ssl.DefaultVerifyPaths(cafile, capath, "SSL_CERT_FILE", "/none/cert.pem", "SSL_CERT_DIR", "/none/certs")


def test_a_bundle_file_is_the_store_and_is_named(tmp_path: Path) -> None:
    bundle = tmp_path / "corp.pem"
    bundle.write_bytes(TestCA("corp inspection CA").cert_pem)
    store = find_system_store(paths(str(bundle), None))
    assert store == SystemStore(str(bundle), None)
    assert store.describe() == f"the system store {bundle}"
    assert b"BEGIN CERTIFICATE" in store.pem()


def test_a_certificate_directory_counts_only_when_it_holds_certificates(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    full = tmp_path / "certs"
    full.mkdir()
    (full / "a.pem").write_bytes(TestCA("a").cert_pem)
    (full / "README").write_text("not a certificate")
    assert find_system_store(paths(None, str(full))) == SystemStore(None, str(full))
    assert find_system_store(paths(None, str(full))).pem().count(b"BEGIN CERTIFICATE") == 1
    assert find_system_store(paths(None, str(empty))).certifi


def test_without_any_system_store_certifi_is_used_and_said(tmp_path: Path) -> None:
    store = find_system_store(paths(str(tmp_path / "missing.pem"), str(tmp_path / "missing")))
    assert store.certifi and store.cafile == certifi.where()
    assert store.describe().startswith("certifi ") and "no system store" in store.describe()


def test_the_environment_variable_wins_as_openssl_does(tmp_path: Path, monkeypatch) -> None:
    bundle = tmp_path / "env.pem"
    bundle.write_bytes(TestCA("env CA").cert_pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert find_system_store().cafile == str(bundle)
