"""One dialer, two doors: mitmproxy's hooks and the gateway's own httpx client refuse exactly the same upstreams.

The hook path drives the real addons (`DialGuard.server_connect`, then `UpstreamTls.tls_start_server` and a
handshake with the connection it built); the httpx path sends a request through `gateway_client`. Both talk to
real TLS origins on loopback, and each refusal must come out with the same typed reason and cause.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from mitmproxy import connection, tls
from mitmproxy.addons.tlsconfig import TlsConfig
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import taddons
from OpenSSL import SSL

from addons.dial_guard import DialGuard
from addons.upstream_tls import UpstreamTls
from egressproxy.dialer_http import UpstreamFailed, gateway_client
from egressproxy.engine.upstream_ssl import UpstreamConnection
from egressproxy.flowrecord import Verdict
from egressproxy.outcomes import DialOutcome, GatewayFailure
from egressproxy.runtime.state import GatewayState
from egressproxy.snapshot import StaticHost
from egressproxy.upstreams import Upstream
from tests.e2e.test_upstream_tls import crl_of, pin_of, secret
from tests.support.dnsserver import DnsServer
from tests.support.origins import HttpOrigin
from tests.support.pki import TestCA
from tests.unit.test_compiler import compiled

OK = "200"


@dataclass
class World:
    state: GatewayState
    ports: dict[str, int]
    dns: DnsServer
    options: Any  # mitmproxy's options, with TlsConfig's (the hooks read them through ctx)


@pytest.fixture(scope="module")
def mitmproxy_options() -> Iterator[Any]:
    """One mitmproxy test context for the module; the log handlers it installs are removed afterwards."""
    root = logging.getLogger()
    before = list(root.handlers)
    with taddons.context(TlsConfig()) as tctx:
        yield tctx.options
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, mitmproxy_options: Any) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("dialer")
    private_ca, client_ca, crl_ca = TestCA("private"), TestCA("client CA"), TestCA("CA with a CRL")
    (tmp / "client-ca.crt").write_bytes(client_ca.cert_pem)
    pinned, revoked = private_ca.issue("pinned.internal"), crl_ca.issue("revoked.internal")
    leaves = {
        "pinned": (pinned, None),
        "revoked": (revoked, None),
        "mtls": (private_ca.issue("mtls.internal"), tmp / "client-ca.crt"),
        "rev": (private_ca.issue("rev.test"), None),
    }
    origins: list[HttpOrigin] = []
    ports: dict[str, int] = {}
    for name, (issued, client_file) in leaves.items():
        cert, key = issued.write(tmp / name, "leaf")
        origin = HttpOrigin("127.0.0.1", 0, tls=(cert, key), name=name, client_ca=client_file).__enter__()
        origins.append(origin)
        ports[name] = origin.port
    client = client_ca.issue("gateway-client", client=True)
    dns = DnsServer().__enter__()
    dns.add("rev.test", "A", "127.0.0.1")
    dns.add_ptr("127.0.0.1", "elsewhere.example")

    def backend(name: str, host: str, port: int) -> str:
        return f"""
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: {name}}}
spec: {{type: Static, static: {{hosts: [{{host: {host}, port: {port}}}]}}}}
"""

    def policy(name: str, ca: str, hostname: str, extra: str = "") -> str:
        return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: {name}}}
spec:
  targetRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: {name}}}]
  validation:
    caCertificateRefs: [{{name: {ca}}}]
    hostname: {hostname}
{extra}"""

    docs = [
        """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: allow-all
  listeners: [{name: http, protocol: HTTP}]
  ssrfGuard: {allowCIDRs: ["127.0.0.0/8"]}
  upstreamTLS:
    hostAliases:
    - {ip: 127.0.0.1, hostnames: [pinned.internal, revoked.internal, mtls.internal]}
""",
        f"""
apiVersion: policy.egressproxy.io/v1alpha1
kind: DNSPolicy
metadata: {{name: dns}}
spec:
  targetRefs: [{{kind: EgressGateway, group: clrk.apoxy.dev, name: eg}}]
  resolvers: ["{dns.address}"]
  reverseLookup: {{enforce: true}}
""",
        secret("private-ca", ca_crt=private_ca.cert_pem),
        secret("crl-ca", ca_crt=crl_ca.cert_pem),
        secret("crl", ca_crl=crl_of(crl_ca, [x509.load_pem_x509_certificate(revoked.cert_pem)])),
        secret("client-cert", tls_crt=client.cert_pem, tls_key=client.key_pem),
        backend("pin-bad", "pinned.internal", ports["pinned"]),
        policy("pin-bad", "private-ca", "pinned.internal", f'    spkiPins: ["{pin_of(client)}"]\n'),
        backend("pin-ok", "pinned.internal", ports["pinned"]),
        policy("pin-ok", "private-ca", "pinned.internal", f'    spkiPins: ["{pin_of(pinned)}"]\n'),
        backend("revoked", "revoked.internal", ports["revoked"]),
        policy("revoked", "crl-ca", "revoked.internal", "    crlRefs: [{name: crl}]\n"),
        backend("mtls", "mtls.internal", ports["mtls"]),
        policy("mtls", "private-ca", "mtls.internal", "  clientCertificateRef: {name: client-cert}\n"),
        backend("mtls-nocert", "mtls.internal", ports["mtls"]),
        policy("mtls-nocert", "private-ca", "mtls.internal"),
    ]
    snapshot = compiled("---\n".join(textwrap.dedent(d) for d in docs))
    state = GatewayState(Path(tmp / "data"))
    state.swap(snapshot)
    try:
        yield World(state, ports, dns, mitmproxy_options)
    finally:
        dns.__exit__()
        for origin in origins:
            origin.__exit__()


def candidate(world: World, backend: str | None, host: str, port: int, *, trusted: bool = True) -> Upstream:
    snapshot = world.state.snapshot
    assert snapshot is not None
    found = None
    if backend is not None:
        found = next(b for ref, b in snapshot.backends.items() if ref.name == backend and ref.kind == "Backend")
    return Upstream(host, port, "https", sni=host, backend=found, trusted=trusted)


# --- the two doors ----------------------------------------------------------------------------------------------


def via_hooks(world: World, upstream: Upstream) -> DialOutcome | str:
    """What mitmproxy's hooks do with this candidate: dial guard, then our TLS connection and one request."""
    state = world.state
    client = connection.Client(peername=("127.0.0.1", 50000), sockname=("127.0.0.1", 8080), timestamp_start=0.0)
    record = state.connection(client.id)
    record.upstreams[upstream.key] = upstream
    record.backend = upstream.backend_name
    server = connection.Server(address=upstream.key)
    guard = DialGuard(state)

    async def dial() -> tuple[str, int] | None:
        await guard.server_connect(ServerConnectionHookData(server, client))
        dialled = server.address if not server.error else None
        if dialled is not None:
            guard.server_connected(ServerConnectionHookData(server, client))  # as mitmproxy does once connected
        return dialled

    dialled = asyncio.run(dial())
    outcome = record.dial_outcomes.get(upstream.key)
    if outcome is not None:
        return outcome
    assert dialled is not None and dialled[0] == "127.0.0.1"  # the checked address is what is dialled
    context = Context(client, world.options)
    context.server = server
    data = tls.TlsData(server, context)
    UpstreamTls(state).tls_start_server(data)
    conn = data.ssl_conn
    assert isinstance(conn, UpstreamConnection)
    status = _request_over(conn, dialled)
    verification = conn.egress
    cause = verification.failure
    if cause is None and status is None and verification.certificate_requested and not verification.params.has_client_certificate:
        cause = "client certificate required"
    if cause is not None:
        return GatewayFailure("upstream-tls-invalid", cause)
    return status or "no answer"


def _request_over(conn: SSL.Connection, address: tuple[str, int]) -> str | None:
    """Handshake and one GET over a blocking socket, moving bytes through the connection's memory BIOs."""
    with socket.create_connection(address, timeout=10) as sock:

        def pump() -> bool:
            try:
                out = conn.bio_read(65536)
                sock.sendall(out)
            except SSL.WantReadError:
                pass
            data = sock.recv(65536)
            if not data:
                return False
            conn.bio_write(data)
            return True

        try:
            while True:
                try:
                    conn.do_handshake()
                    break
                except SSL.WantReadError:
                    if not pump():
                        return None
            conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while True:
                try:
                    head = conn.recv(65536)
                    return head.split(b" ", 2)[1].decode()
                except SSL.WantReadError:
                    if not pump():
                        return None
        except (SSL.Error, OSError):
            return None


def via_httpx(world: World, upstream: Upstream) -> DialOutcome | str:
    snapshot = world.state.snapshot
    assert snapshot is not None

    async def go() -> DialOutcome | str:
        async with gateway_client(world.state.dialer, snapshot, upstream, timeout=10) as client:
            try:
                r = await client.get(f"https://{upstream.host}:{upstream.port}/")
            except UpstreamFailed as e:
                return e.outcome
            return str(r.status_code)

    return asyncio.run(go())


def both(world: World, upstream: Upstream) -> tuple[DialOutcome | str, DialOutcome | str]:
    return via_hooks(world, upstream), via_httpx(world, upstream)


def reason(outcome: DialOutcome | str) -> str:
    return outcome if isinstance(outcome, str) else outcome.reason


def text(outcome: DialOutcome | str) -> str:
    if isinstance(outcome, Verdict):
        return outcome.message
    return outcome.detail if isinstance(outcome, GatewayFailure) else outcome


# --- the same refusals ------------------------------------------------------------------------------------------


def test_ssrf_guard_refuses_both_doors_with_a_denial(world: World) -> None:
    hooks, client = both(world, candidate(world, None, "169.254.169.254", 80, trusted=False))
    for outcome in (hooks, client):
        assert isinstance(outcome, Verdict) and outcome.reason == "destination-address-denied", outcome
        assert outcome.policy == "EgressGateway/default/eg" and "169.254.169.254" in outcome.message


def test_reverse_dns_mismatch_refuses_both_doors(world: World) -> None:
    hooks, client = both(world, candidate(world, None, "rev.test", world.ports["rev"], trusted=False))
    for outcome in (hooks, client):
        assert isinstance(outcome, Verdict) and outcome.reason == "reverse-dns-mismatch", outcome
        assert "elsewhere.example" in outcome.message and outcome.policy == "DNSPolicy/default/dns"


def test_spki_pin_mismatch_refuses_both_doors_and_a_matching_pin_passes_both(world: World) -> None:
    bad = candidate(world, "pin-bad", "pinned.internal", world.ports["pinned"])
    for outcome in both(world, bad):
        assert reason(outcome) == "upstream-tls-invalid" and "SPKI pin mismatch" in text(outcome), outcome
    assert both(world, candidate(world, "pin-ok", "pinned.internal", world.ports["pinned"])) == (OK, OK)


def test_revoked_certificate_refuses_both_doors(world: World) -> None:
    for outcome in both(world, candidate(world, "revoked", "revoked.internal", world.ports["revoked"])):
        assert reason(outcome) == "upstream-tls-invalid" and "certificate revoked" in text(outcome), outcome


def test_client_certificate_is_presented_through_both_doors(world: World) -> None:
    """The mTLS origin answers only a client presenting a certificate of its client CA."""
    assert both(world, candidate(world, "mtls", "mtls.internal", world.ports["mtls"])) == (OK, OK)
    for outcome in both(world, candidate(world, "mtls-nocert", "mtls.internal", world.ports["mtls"])):
        assert reason(outcome) == "upstream-tls-invalid" and "client certificate required" in text(outcome), outcome


def test_the_httpx_door_reaches_only_its_candidate(world: World) -> None:
    snapshot = world.state.snapshot
    assert snapshot is not None
    upstream = candidate(world, "pin-ok", "pinned.internal", world.ports["pinned"])

    async def go() -> UpstreamFailed:
        async with gateway_client(world.state.dialer, snapshot, upstream, timeout=10) as client:
            with pytest.raises(UpstreamFailed) as refused:
                await client.get(f"https://revoked.internal:{world.ports['revoked']}/")
            return refused.value

    refused = asyncio.run(go())
    assert isinstance(refused.outcome, Verdict) and refused.outcome.reason == "dial-not-allowed"


def test_a_closed_port_is_unreachable_naming_the_destination(world: World) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outcome = via_httpx(world, candidate(world, None, "mtls.internal", port))
    assert isinstance(outcome, GatewayFailure) and outcome.reason == "upstream-unreachable", outcome
    assert f"mtls.internal:{port} (127.0.0.1)" in outcome.detail



def test_a_candidate_behind_a_parent_proxy_is_refused_not_dialled_directly(world: World) -> None:
    """The parent applies its own policy; a client that went around it would skip that policy."""
    direct = candidate(world, "pin-ok", "pinned.internal", world.ports["pinned"])
    behind = Upstream(direct.host, direct.port, "https", sni=direct.sni, backend=direct.backend, trusted=True,
                      parent=StaticHost("parent.internal", 3128))
    outcome = via_httpx(world, behind)
    assert isinstance(outcome, GatewayFailure) and outcome.reason == "upstream-unreachable", outcome
    assert "parent proxy parent.internal:3128" in outcome.detail
