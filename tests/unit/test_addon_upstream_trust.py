"""addons/upstream_trust.py: the trust file mitmproxy's own TLS (an HTTPS upstream-proxy hop) verifies with.

mitmproxy's `ssl_verify_upstream_trusted_ca` replaces its store, so the addon writes the system store plus the
gateway's `additionalTrustBundleSecretRef` as one file and points the option at it; without extra CAs on a host
with no system store, mitmproxy's default (certifi) stays. What a user observes is the option's value and the
file's contents.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy.test import taddons

from addons import upstream_trust
from addons.upstream_trust import UpstreamTrust, write_bundle
from egressproxy.writable_dirs import private_dir
from egressproxy.system_trust import SystemStore
from tests.support.addon_state import compile_snapshot, state_for
from tests.support.pki import TestCA

GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  listeners: [{name: http, protocol: HTTP}]
"""

WITH_BUNDLE = GATEWAY + """\
  upstreamTLS:
    additionalTrustBundleSecretRef: {name: corp-ca}
---
apiVersion: v1
kind: Secret
metadata: {name: corp-ca}
stringData:
  ca.crt: |
%s
"""

SYSTEM_PEM = b"-----BEGIN CERTIFICATE-----\nc3lzdGVt\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def corp_ca() -> TestCA:
    return TestCA("corp root")


@pytest.fixture
def system(tmp_path: Path, monkeypatch) -> SystemStore:
    cafile = tmp_path / "system.pem"
    cafile.write_bytes(SYSTEM_PEM)
    store = SystemStore(str(cafile), None)
    monkeypatch.setattr(upstream_trust, "system_store", lambda: store)
    return store


def _snapshot(corp_ca: TestCA | None):
    if corp_ca is None:
        return compile_snapshot(GATEWAY)
    pem = "\n".join("    " + line for line in corp_ca.cert_pem.decode().splitlines())
    return compile_snapshot(WITH_BUNDLE % pem)


def test_the_extra_bundle_is_combined_with_the_system_store_and_applied(tmp_path, system, corp_ca) -> None:
    addon = UpstreamTrust(state_for(_snapshot(corp_ca), tmp_path / "data"))
    path = addon.bundle_path()
    assert path is not None
    content = Path(path).read_bytes()
    assert SYSTEM_PEM in content and corp_ca.cert_pem.strip() in content
    with taddons.context(addon) as tctx:
        addon.apply(path)
        assert tctx.options.ssl_verify_upstream_trusted_ca == path


def test_without_extra_cas_the_system_store_alone_is_written(tmp_path, system) -> None:
    path = UpstreamTrust(state_for(_snapshot(None), tmp_path / "data")).bundle_path()
    assert path is not None and Path(path).read_bytes().strip() == SYSTEM_PEM.strip()


def test_without_extra_cas_and_without_a_system_store_certifi_stays(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(upstream_trust, "system_store", lambda: SystemStore("/certifi/cacert.pem", None, certifi=True))
    addon = UpstreamTrust(state_for(_snapshot(None), tmp_path / "data"))
    assert addon.bundle_path() is None
    with taddons.context(addon) as tctx:
        tctx.options.update(ssl_verify_upstream_trusted_ca="/old/bundle.pem")  # a previous generation's
        addon.apply(None)
        assert tctx.options.ssl_verify_upstream_trusted_ca is None


def test_the_file_is_content_addressed_and_rewritten_only_on_change(tmp_path, system, corp_ca) -> None:
    first = write_bundle(tmp_path, corp_ca.cert_pem, system)
    assert write_bundle(tmp_path, corp_ca.cert_pem, system) == first  # same content, same file
    other = write_bundle(tmp_path, TestCA("other").cert_pem, system)
    assert other != first and first.exists()
    assert [p.name for p in tmp_path.glob("*.tmp")] == []  # written atomically


def test_a_reload_that_adds_a_bundle_changes_the_option(tmp_path, system, corp_ca) -> None:
    state = state_for(_snapshot(None), tmp_path / "data")
    addon = UpstreamTrust(state)
    with taddons.context(addon) as tctx:
        addon.apply(addon.bundle_path())
        before = tctx.options.ssl_verify_upstream_trusted_ca
        state.swap(_snapshot(corp_ca))
        addon.apply(addon.bundle_path())
        after = tctx.options.ssl_verify_upstream_trusted_ca
    assert before != after and corp_ca.cert_pem.strip() in Path(after).read_bytes()


def test_a_data_dir_that_cannot_be_written_puts_the_bundle_in_the_private_folder(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("x")  # a file: nothing can be written under it
    path = write_bundle(blocked, TestCA("corp").cert_pem)
    assert path.parent == private_dir() and path.read_bytes().endswith(b"-----END CERTIFICATE-----\n\n")
