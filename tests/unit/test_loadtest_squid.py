"""loadtest/squid.py: the squid.conf the load test generates for squid beside egressproxy and mitmdump (issue 16).

squid must forward plain HTTP with keep-alive on both legs, splice the passthrough port, bump every other CONNECT
while verifying the origin against its root, and keep everything it writes inside the run's own directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

LOADTEST = Path(__file__).resolve().parents[2] / "loadtest"
if str(LOADTEST) not in sys.path:
    sys.path.append(str(LOADTEST))  # loadtest/ holds scripts, not a package

import squid  # noqa: E402

CERTGEN = "/usr/lib/squid/security_file_certgen"


def directives(conf: str) -> list[str]:
    return [line for line in conf.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def render(tmp_path: Path, user: str | None = None) -> tuple[squid.SquidLayout, str]:
    layout = squid.SquidLayout(tmp_path / "squid")
    return layout, squid.render_squid_conf(layout, 3128, 4443, CERTGEN, user)


def test_listens_on_loopback_only_with_ssl_bump_and_the_run_ca(tmp_path: Path) -> None:
    layout, conf = render(tmp_path)
    ports = [d for d in directives(conf) if d.startswith(("http_port", "https_port"))]
    assert ports == [f"http_port 127.0.0.1:3128 ssl-bump generate-host-certificates=on "
                     f"dynamic_cert_mem_cache_size=16MB tls-cert={layout.ca_cert} tls-key={layout.ca_key}"]
    assert f"sslcrtd_program {CERTGEN} -s {layout.ssl_db} -M 16MB" in directives(conf)


def test_passthrough_port_is_spliced_before_anything_is_bumped(tmp_path: Path) -> None:
    _, conf = render(tmp_path)
    rules = [d for d in directives(conf) if d.startswith("ssl_bump ")]
    assert "acl passthrough_port port 4443" in directives(conf)
    assert rules == ["ssl_bump splice passthrough_port", "ssl_bump peek step1", "ssl_bump stare step2",
                     "ssl_bump bump all"]


def test_origin_is_verified_against_its_root_and_only_the_ip_literal_mismatch_is_allowed(tmp_path: Path) -> None:
    layout, conf = render(tmp_path)
    d = directives(conf)
    assert f"tls_outgoing_options cafile={layout.origin_ca}" in d
    assert "acl ip_literal_mismatch ssl_error SQUID_X509_V_ERR_DOMAIN_MISMATCH" in d
    errors = [x for x in d if x.startswith("sslproxy_cert_error")]
    assert errors == ["sslproxy_cert_error allow ip_literal_mismatch", "sslproxy_cert_error deny all"]
    assert not any("DONT_VERIFY" in x or "sslflags" in x for x in d)


def test_keep_alive_one_worker_no_cache_no_access_log(tmp_path: Path) -> None:
    _, conf = render(tmp_path)
    d = directives(conf)
    for line in ("workers 1", "server_persistent_connections on", "client_persistent_connections on",
                 "access_log none", "cache_store_log none", "cache deny all", "shutdown_lifetime 0 seconds"):
        assert line in d, line
    assert not any(x.startswith("cache_dir") for x in d)


def test_everything_squid_writes_stays_in_its_directory(tmp_path: Path) -> None:
    layout, conf = render(tmp_path)
    for key in ("pid_filename", "cache_log", "coredump_dir"):
        (value,) = [d.split(None, 1)[1] for d in directives(conf) if d.startswith(key + " ")]
        assert Path(value).is_relative_to(layout.root), (key, value)
    paths = [tok.split("=", 1)[-1] for d in directives(conf) for tok in d.split() if "/" in tok]
    assert all(Path(p).is_relative_to(layout.root) or p == CERTGEN for p in paths), paths


def test_effective_user_only_when_given(tmp_path: Path) -> None:
    _, as_us = render(tmp_path)
    _, as_root = render(tmp_path, "proxy")
    assert not any(d.startswith("cache_effective_user") for d in directives(as_us))
    assert "cache_effective_user proxy" in directives(as_root)


def test_missing_squid_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(squid, "find_squid", lambda: None)
    with pytest.raises(RuntimeError, match="apt-get install -y squid-openssl"):
        squid.prepare_squid(tmp_path / "squid", 3128, 4443, tmp_path / "origin-ca.crt")
    assert not (tmp_path / "squid").exists()


@pytest.mark.skipif(squid.find_squid() is None or squid.find_certgen() is None, reason=squid.INSTALL_HINT)
def test_generated_conf_parses_with_the_installed_squid(tmp_path: Path) -> None:
    """The real squid -k parse accepts what prepare_squid writes (CA, certgen database, conf)."""
    import pki

    origin_ca = pki.write_origin_pki(tmp_path / "origin-pki").ca_cert
    workdir = Path(tempfile.mkdtemp(prefix="egressproxy-loadtest-test-"))  # like run.py's: right under /tmp
    try:
        layout = squid.prepare_squid(workdir / "squid", 3128, 4443, origin_ca)
        assert layout.ssl_db.is_dir() and layout.ca_cert.exists() and layout.conf.exists()
        out = subprocess.run([str(squid.find_squid()), "-k", "parse", "-f", str(layout.conf)], capture_output=True,
                             text=True, timeout=30)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FATAL" not in out.stdout + out.stderr


@pytest.mark.skipif(os.geteuid() != 0 or squid.find_squid() is None or squid.find_certgen() is None,
                    reason="only root hands squid's directory to the proxy user")
def test_a_directory_squid_cannot_reach_is_named(tmp_path: Path) -> None:
    """pytest's tmp_path sits under root-only directories: squid (dropped to `proxy`) could not open its files there,
    which would show only as a crashing certgen helper; prepare_squid says so up front instead."""
    tmp_path.chmod(0o700)
    origin_ca = tmp_path / "origin-ca.crt"
    origin_ca.write_text("not read before the check\n")
    with pytest.raises(RuntimeError, match=f"cannot traverse {tmp_path}"):
        squid.prepare_squid(tmp_path / "run" / "squid", 3128, 4443, origin_ca)

