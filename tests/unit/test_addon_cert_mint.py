"""addons/cert_mint.py: an intercepted client gets a certificate for the decided host, issued by the listener's CA.

`tls_start_client` is driven with mitmproxy's TlsData over a test context; the certificate the resulting OpenSSL
connection would present is what the client verifies, so that is what is checked.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from mitmproxy import tls
from mitmproxy.addons import proxyserver, tlsconfig
from mitmproxy.proxy import context
from mitmproxy.test import taddons, tflow
from OpenSSL import SSL

from addons.cert_mint import CertMinting
from tests.support.addon_state import compile_snapshot, counter, state_for

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  listeners:
  - {name: https, protocol: HTTPS, tls: {mode: Terminate, caCertRef: {name: ca}}}
  - {name: pass, protocol: TLS, tls: {mode: Passthrough}}
"""


@pytest.fixture(scope="module")
def snapshot():
    return compile_snapshot(CONFIG, ca="ca")


@pytest.fixture
def addon(snapshot, tmp_path: Path) -> CertMinting:
    return CertMinting(state_for(snapshot, tmp_path))


def _start(addon: CertMinting, *, intercept: bool = True, listener: str = "https", sni: str | None = "api.example.com",
           connect_host: str | None = None) -> tls.TlsData:
    client = tflow.tclient_conn()
    with taddons.context(proxyserver.Proxyserver(), tlsconfig.TlsConfig(), addon) as tctx:
        ctx = context.Context(client, tctx.options)
        record = addon.state.connection(client.id)
        record.intercept, record.listener, record.sni, record.connect_host = intercept, listener, sni, connect_host
        data = tls.TlsData(client, ctx)
        addon.tls_start_client(data)
    return data


def _presented(data: tls.TlsData) -> x509.Certificate:
    assert isinstance(data.ssl_conn, SSL.Connection)
    cert = data.ssl_conn.get_certificate()
    assert cert is not None
    return cert.to_cryptography()


def _ca_cert(addon: CertMinting) -> x509.Certificate:
    listener = addon.state.snapshot.gateway.listener("https")  # type: ignore[union-attr]
    return x509.load_pem_x509_certificate(listener.ca.cert_pem)


def test_an_intercepted_client_gets_a_certificate_for_its_sni_from_the_listener_ca(addon) -> None:
    cert = _presented(_start(addon, sni="api.example.com"))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["api.example.com"]
    assert cert.issuer == _ca_cert(addon).subject


def test_without_sni_the_connect_authority_names_the_certificate(addon) -> None:
    cert = _presented(_start(addon, sni=None, connect_host="tunnel.example.com"))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["tunnel.example.com"]


def test_the_same_host_reuses_its_minted_certificate(addon) -> None:
    first, second = _presented(_start(addon)), _presented(_start(addon))
    assert first.serial_number == second.serial_number


@pytest.mark.parametrize(
    "case",
    [dict(intercept=False), dict(listener="pass"), dict(listener="gone"), dict(sni=None, connect_host=None)],
    ids=["not-intercepted", "listener-without-ca", "unknown-listener", "no-name"],
)
def test_connections_it_does_not_intercept_are_left_to_mitmproxy(addon, case) -> None:
    assert _start(addon, **case).ssl_conn is None


def test_a_connection_another_addon_already_set_up_is_left_alone(addon) -> None:
    client = tflow.tclient_conn()
    with taddons.context(proxyserver.Proxyserver(), tlsconfig.TlsConfig(), addon) as tctx:
        record = addon.state.connection(client.id)
        record.intercept, record.listener, record.sni = True, "https", "api.example.com"
        existing = SSL.Connection(SSL.Context(SSL.TLS_METHOD))
        data = tls.TlsData(client, context.Context(client, tctx.options), ssl_conn=existing)
        addon.tls_start_client(data)
    assert data.ssl_conn is existing


def test_lookups_are_counted_and_a_bound_below_the_hosts_in_use_mints_again(addon) -> None:
    """Every lookup is a hit or a mint; a host evicted by the bound (`--cert-cache-size`) is minted again."""
    addon.resize(2)
    for host in ("a.example.com", "b.example.com", "a.example.com", "c.example.com", "b.example.com"):
        _start(addon, sni=host)
    assert counter(addon.state, "egress_cert_cache_total", result="hit") == 1
    assert counter(addon.state, "egress_cert_cache_total", result="minted") == 4  # b was evicted by c
    assert counter(addon.state, "egress_cert_cache_evictions_total") == 2
    assert addon.state.metrics.registry.get_sample_value("egress_cert_cache_entries") == 2
    assert addon.stats() == {"capacity": 2, "entries": 2, "hits": 1, "minted": 4, "evictions": 2}


def test_shrinking_the_bound_drops_the_least_recently_used_leaves(addon) -> None:
    for host in ("a.example.com", "b.example.com", "c.example.com"):
        _start(addon, sni=host)
    _start(addon, sni="a.example.com")  # a is now the most recently used
    addon.resize(1)
    assert addon.stats()["entries"] == 1 and addon.stats()["evictions"] == 2
    _start(addon, sni="a.example.com")
    assert addon.stats()["hits"] == 2


def test_the_client_leg_gives_back_its_openssl_buffers_while_idle(addon) -> None:
    """~34 KiB per idle intercepted connection (docs/streams-memory.md): a regression shows in loadtest/streams.py."""
    from egressproxy.engine.tls_buffers import releases_buffers

    data = _start(addon)
    assert isinstance(data.ssl_conn, SSL.Connection)
    assert releases_buffers(data.ssl_conn)
