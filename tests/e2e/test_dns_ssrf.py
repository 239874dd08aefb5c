"""DNS and the SSRF guard through the real process: a local DNS server, real origins on 127.0.0.0/8 and ::1.

Every test talks only to loopback: the gateway resolves names through `tests/support/dnsserver.py` (a DNSPolicy
names it), origins listen on 127.0.0.x / ::1, and the destinations the SSRF guard must refuse are loopback
forms (an origin listens there, so a guard that let one through would be caught by a 200).
"""

from __future__ import annotations

import json
import re
import ssl
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support.dnsserver import DnsServer
from tests.support.gateway import GatewayProcess
from tests.support.origins import HttpOrigin, TcpEcho
from tests.support.rawproxy import RawResponse, connect, open_socket, read_response

pytestmark = pytest.mark.e2e

GW_POLICY = "EgressGateway/default/eg"


def gateway_doc(
    *,
    policy: str = "allow-all",
    listeners: str = "  - name: http\n    protocol: HTTP",
    family: str | None = None,
    allow: list[str] | None = None,
    deny: list[str] | None = None,
    aliases: dict[str, str] | None = None,
    trust: bool = True,
) -> str:
    lines = [
        "apiVersion: clrk.apoxy.dev/v1alpha1",
        "kind: EgressGateway",
        "metadata: {name: eg}",
        "spec:",
        f"  defaultPolicy: {policy}",
        "  listeners:",
        listeners,
    ]
    if family:
        lines.append(f"  dns: {{lookupFamily: {family}}}")
    if allow or deny:
        lines.append(f"  ssrfGuard: {{allowCIDRs: {json.dumps(allow or [])}, denyCIDRs: {json.dumps(deny or [])}}}")
    lines.append("  upstreamTLS:")
    if trust:
        lines.append("    additionalTrustBundleSecretRef: {name: origin-ca}")
    if aliases:
        lines.append("    hostAliases:")
        for host, ip in aliases.items():
            lines.append(f"    - {{ip: {json.dumps(ip)}, hostnames: [{host}]}}")
    return "\n".join(lines) + "\n"


def dns_policy(server: DnsServer, *, name: str = "dns", target: str = "kind: EgressGateway, group: clrk.apoxy.dev, name: eg", extra: str = "") -> str:
    return f"""
apiVersion: policy.egressproxy.io/v1alpha1
kind: DNSPolicy
metadata: {{name: {name}}}
spec:
  targetRefs: [{{{target}}}]
  resolvers: ["{server.address}"]
{extra}"""


def raw_get(gw: GatewayProcess, host: str, port: int, path: str = "/") -> RawResponse:
    """An absolute-form request with the host spelled exactly as given (clients such as curl normalise it)."""
    authority = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    sock = open_socket(gw.host, gw.port, timeout=20)
    with sock:
        sock.sendall(
            f"GET http://{authority}{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n".encode()
        )
        return read_response(sock)


def get(gw: GatewayProcess, url: str) -> httpx.Response:
    with httpx.Client(proxy=gw.proxy_url, timeout=20) as client:  # a new client: a new connection, a new dial
        return client.get(url)


def metric(gw: GatewayProcess, name: str) -> float:
    """The value of one sample (`name` includes its labels exactly as rendered), 0 when absent."""
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", gw.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


def assert_denied(r: RawResponse | httpx.Response, reason: str = "destination-address-denied", policy: str = GW_POLICY) -> dict:
    status = r.status if isinstance(r, RawResponse) else r.status_code
    assert status == 403, (status, r.headers, getattr(r, "body", None) or getattr(r, "text", None))
    assert r.headers["x-egress-denied"] == reason
    body = r.json()
    assert body["reason"] == reason and body["policy"] == policy, body
    return body


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer("127.0.0.53", ttl=60) as server:
        yield server


def origins_on(*hosts: str, name: str | None = None) -> list[HttpOrigin]:
    """Plain HTTP origins on one port across several loopback addresses (each names itself by its address)."""
    started: list[HttpOrigin] = []
    port = 0
    for host in hosts:
        origin = HttpOrigin(host, port, name=name or host).__enter__()
        port = origin.port
        started.append(origin)
    return started


@pytest.fixture
def loopback_origins() -> Iterator[Callable[..., list[HttpOrigin]]]:
    started: list[HttpOrigin] = []

    def start(*hosts: str) -> list[HttpOrigin]:
        origins = origins_on(*hosts)
        started.extend(origins)
        return origins

    yield start
    for origin in started:
        origin.__exit__()


# --- the SSRF guard: every form of a denied address, through the real proxy ----------------------------------


@pytest.fixture(scope="module")
def ssrf_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, DnsServer, list[HttpOrigin]]]:
    """allow-all (so only the guard decides), names resolved by our DNS server, origins on every loopback target."""
    origins = origins_on("127.0.0.1", "::1", "127.0.0.2")
    with DnsServer("127.0.0.53", ttl=60) as server:
        server.add("localhost.test", "A", "127.0.0.1")
        server.add("loop2.test", "A", "127.0.0.2")
        server.add("v6loop.test", "AAAA", "::1")
        server.add("mapped.test", "AAAA", "::ffff:127.0.0.1")
        server.add("nat64.test", "AAAA", "64:ff9b::7f00:1")
        server.add("zero.test", "A", "0.0.0.0")
        server.add("many.test", "A", ["127.0.0.1", "127.0.0.2"])
        config = tmp_path_factory.mktemp("ssrf-config")
        (config / "gateway.yaml").write_text(gateway_doc(aliases={"aliased.test": "127.0.0.1"}, trust=False))
        (config / "dns.yaml").write_text(dns_policy(server))
        gw = GatewayProcess(config, tmp_path_factory.mktemp("ssrf-data"))
        gw.start()
        try:
            yield gw, server, origins
        finally:
            gw.stop()
            for origin in origins:
                origin.__exit__()


SSRF_FORMS = [
    # IPv4 loopback in every spelling a client can send (the gateway canonicalises once, early)
    ("127.0.0.1", "loopback"),
    ("127.1", "loopback"),
    ("127.0.1", "loopback"),
    ("0x7f.0.0.1", "loopback"),
    ("0x7F.0x0.0x0.0x1", "loopback"),
    ("0177.0.0.1", "loopback"),
    ("0177.0.0.01", "loopback"),
    ("2130706433", "loopback"),
    ("0x7f000001", "loopback"),
    ("017700000001", "loopback"),
    ("127.0.0.1.", "loopback"),
    ("127.0.0.2", "loopback"),
    # the unspecified address connects to the local host on Linux
    ("0.0.0.0", "unspecified"),
    ("0", "unspecified"),
    # IPv6 loopback and the IPv6 forms that carry 127.0.0.1
    ("::1", "loopback"),
    ("0:0:0:0:0:0:0:1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:7f00:1", "loopback"),
    ("::127.0.0.1", "loopback"),
    ("64:ff9b::127.0.0.1", "loopback"),
    ("2002:7f00:1::1", "loopback"),
    # names that resolve to such addresses (our DNS server), in any case and with a trailing dot
    ("localhost.test", "loopback"),
    ("LocalHost.TEST.", "loopback"),
    ("loop2.test", "loopback"),
    ("v6loop.test", "loopback"),
    ("mapped.test", "loopback"),
    ("nat64.test", "loopback"),
    ("zero.test", "unspecified"),
    ("many.test", "loopback"),
]


@pytest.mark.parametrize("host,label", SSRF_FORMS, ids=[f[0] for f in SSRF_FORMS])
def test_ssrf_form_is_denied_and_never_dialled(ssrf_setup, host: str, label: str) -> None:
    gw, _, origins = ssrf_setup
    seen_before = sum(len(o.requests) for o in origins)
    r = raw_get(gw, host, origins[0].port, "/ssrf")
    body = assert_denied(r)
    assert label in body["error"], body
    assert sum(len(o.requests) for o in origins) == seen_before


def test_ssrf_table_has_twenty_forms() -> None:
    assert len(SSRF_FORMS) >= 20


def test_ssrf_denials_are_counted(ssrf_setup) -> None:
    gw, _, origins = ssrf_setup
    raw_get(gw, "0x7f.1", origins[0].port)
    assert metric(gw, 'egress_ssrf_denials_total{range="loopback"}') >= 1
    assert metric(gw, 'egress_denials_total{reason="destination-address-denied"}') >= 1
    assert metric(gw, 'egress_dns_lookups_total{result="ok"}') >= 1


def test_host_aliases_are_trusted_even_on_loopback(ssrf_setup) -> None:
    gw, server, origins = ssrf_setup
    r = raw_get(gw, "aliased.test", origins[0].port, "/aliased")
    assert r.status == 200 and r.json()["origin"] == "127.0.0.1"
    assert server.count("aliased.test") == 0  # hostAliases answer before DNS


def test_ssrf_guard_denies_inside_an_intercepted_connect_tunnel(gateway, gateway_ca, trust_secret, tls_origin) -> None:
    origin = tls_origin("127.0.0.1")
    listeners = "  - name: https\n    protocol: HTTPS\n    tls: {mode: Terminate, caCertRef: {name: egress-ca}}"
    gw = gateway(gateway_doc(listeners=listeners), gateway_ca[1], trust_secret)
    verify = ssl.create_default_context(cafile=str(gateway_ca[0]))
    with httpx.Client(proxy=gw.proxy_url, verify=verify, timeout=20) as client:
        r = client.get(f"https://127.0.0.1:{origin.port}/inside-tunnel")
    assert_denied(r)
    assert origin.requests == []


def test_ssrf_guard_refuses_a_tcp_tunnel_at_connect_without_dialling(gateway, trust_secret) -> None:
    with TcpEcho("127.0.0.1") as echo:
        accepted: list[object] = []
        original = echo.server.verify_request
        echo.server.verify_request = lambda req, addr: accepted.append(addr) or original(req, addr)  # type: ignore[method-assign]
        gw = gateway(gateway_doc(listeners="  - name: tcp\n    protocol: TCP"), trust_secret)
        sock, answer = connect(gw.host, gw.port, f"127.0.0.1:{echo.port}")
        with sock:
            # The tunnel could only go to its authority, so the address is checked before any 200.
            assert answer.status == 403
            assert answer.headers["x-egress-denied"] == "destination-address-denied"
            assert answer.json()["reason"] == "destination-address-denied"
        assert accepted == []
        assert metric(gw, 'egress_ssrf_denials_total{range="loopback"}') == 1


def test_allow_cidrs_admit_a_private_destination(gateway, trust_secret, dns_server, loopback_origins) -> None:
    origin, v6 = loopback_origins("127.0.0.1", "::1")
    dns_server.add("internal.test", "A", "127.0.0.1")
    gw = gateway(gateway_doc(allow=["127.0.0.0/8"]), dns_policy(dns_server), trust_secret)
    for host in ("127.0.0.1", "0x7f.0.0.1", "internal.test", "::ffff:127.0.0.1"):
        r = raw_get(gw, host, origin.port, "/allowed")
        assert r.status == 200, (host, r.status, r.body)
        assert r.json()["origin"] == "127.0.0.1"
    assert_denied(raw_get(gw, "::1", origin.port))  # IPv6 loopback is not in the IPv4 allow entry
    assert v6.requests == []


def test_deny_cidrs_add_to_the_builtin_set(gateway, trust_secret, dns_server, loopback_origins) -> None:
    origin, other = loopback_origins("127.0.0.1", "127.0.0.3")
    dns_server.add("three.test", "A", "127.0.0.3")
    gw = gateway(gateway_doc(allow=["127.0.0.0/8"], deny=["127.0.0.3/32"]), dns_policy(dns_server), trust_secret)
    assert raw_get(gw, "127.0.0.1", origin.port).status == 200
    body = assert_denied(raw_get(gw, "three.test", origin.port))
    assert "denyCIDRs" in body["error"]
    assert other.requests == []


# --- lookup families -------------------------------------------------------------------------------------------

# family -> {name: expected origin or status}, and which record types the DNS server may see for `both.test`
FAMILY_CASES = {
    "V4Preferred": ({"both.test": "127.0.0.1", "v4only.test": "127.0.0.1", "v6only.test": "::1"}, {"A": 1, "AAAA": 0}),
    "V4Only": ({"both.test": "127.0.0.1", "v4only.test": "127.0.0.1", "v6only.test": 502}, {"A": 1, "AAAA": 0}),
    "V6Only": ({"both.test": "::1", "v4only.test": 502, "v6only.test": "::1"}, {"A": 0, "AAAA": 1}),
    "Auto": ({"both.test": "::1", "v4only.test": "127.0.0.1", "v6only.test": "::1"}, {"A": 0, "AAAA": 1}),
    "All": ({"both.test": None, "v4only.test": "127.0.0.1", "v6only.test": "::1"}, {"A": 1, "AAAA": 1}),
}


@pytest.mark.parametrize("family", list(FAMILY_CASES))
def test_lookup_family(gateway, trust_secret, dns_server, loopback_origins, family: str) -> None:
    v4, v6 = loopback_origins("127.0.0.1", "::1")
    dns_server.add("both.test", "A", "127.0.0.1")
    dns_server.add("both.test", "AAAA", "::1")
    dns_server.add("v4only.test", "A", "127.0.0.1")
    dns_server.add("v6only.test", "AAAA", "::1")
    gw = gateway(
        gateway_doc(family=family, allow=["127.0.0.0/8", "::1/128"]), dns_policy(dns_server), trust_secret
    )
    expected, both_queries = FAMILY_CASES[family]
    for name, want in expected.items():
        r = get(gw, f"http://{name}:{v4.port}/family")
        if want == 502:
            assert r.status_code == 502, (name, r.status_code, r.text)
            assert r.headers["x-egress-error"] == "upstream-unreachable"
            assert "no address of the allowed family" in r.json()["error"]
        else:
            assert r.status_code == 200, (name, r.status_code, r.text)
            if want is not None:
                assert r.json()["origin"] == want, name
    assert {t: dns_server.count("both.test", t) for t in ("A", "AAAA")} == both_queries
    if family == "All":  # the union, rotated: both origins are reached over a few new connections
        reached = {get(gw, f"http://both.test:{v4.port}/all").json()["origin"] for _ in range(4)}
        assert reached == {"127.0.0.1", "::1"}


# --- TTLs: the cache, minTTL and maxTTL, observed as re-queries ------------------------------------------------


def test_ttl_clamps_are_observed_as_requeries(gateway, trust_secret, dns_server, loopback_origins) -> None:
    (origin,) = loopback_origins("127.0.0.1")
    dns_server.add("long.test", "A", "127.0.0.1", ttl=300)  # maxTTL 3s caps it
    dns_server.add("short.test", "A", "127.0.0.1", ttl=0)  # minTTL 2s holds it
    gw = gateway(
        gateway_doc(allow=["127.0.0.0/8"]), dns_policy(dns_server, extra="  minTTL: 2s\n  maxTTL: 3s\n"), trust_secret
    )
    url = lambda name: f"http://{name}:{origin.port}/ttl"  # noqa: E731
    # Each name's cache entry is made during its first request: its clock is read right after that answer, so a
    # slow machine only delays the test, never moves an expiry past the moment the test checks it.
    cached_at = {}
    for name in ("long.test", "short.test"):
        assert get(gw, url(name)).status_code == 200
        cached_at[name] = time.monotonic()
        assert get(gw, url(name)).status_code == 200
    assert (dns_server.count("long.test", "A"), dns_server.count("short.test", "A")) == (1, 1)
    assert time.monotonic() - cached_at["long.test"] < 1.9, "the cached phase took too long for this test to mean anything"
    time.sleep(max(0.0, cached_at["short.test"] + 2.2 - time.monotonic()))
    get(gw, url("short.test"))
    get(gw, url("long.test"))
    if time.monotonic() - cached_at["long.test"] < 2.9:  # long.test's entry (maxTTL 3s) must still have been fresh
        assert (dns_server.count("long.test", "A"), dns_server.count("short.test", "A")) == (1, 2)  # minTTL passed
    else:
        assert dns_server.count("short.test", "A") == 2  # minTTL passed (too slow here to check long.test's hit)
    time.sleep(max(0.0, cached_at["long.test"] + 3.2 - time.monotonic()))
    get(gw, url("long.test"))
    assert dns_server.count("long.test", "A") >= 2  # maxTTL passed, long before the record's 300 s
    assert metric(gw, "egress_dns_cache_hits_total") >= 3


def test_min_ttl_zero_asks_again_for_every_dial(gateway, trust_secret, dns_server, loopback_origins) -> None:
    (origin,) = loopback_origins("127.0.0.1")
    dns_server.add("zero-ttl.test", "A", "127.0.0.1", ttl=0)
    gw = gateway(gateway_doc(allow=["127.0.0.0/8"]), dns_policy(dns_server, extra="  minTTL: 0s\n"), trust_secret)
    for _ in range(3):
        assert get(gw, f"http://zero-ttl.test:{origin.port}/").status_code == 200
    assert dns_server.count("zero-ttl.test", "A") == 3


# --- DNS rebinding: the address checked is the address dialled ------------------------------------------------


def test_dns_rebinding_cannot_reach_the_private_address(gateway, trust_secret, dns_server, loopback_origins) -> None:
    """The answer flips on every query, TTL 0: allowed 127.0.0.2 (allowCIDRs), then denied 127.0.0.1, ...

    A gateway that checked one answer and dialled another (a second lookup at connect time) would hand some
    request to the 127.0.0.1 origin. Here each dial costs exactly one query, each allowed request reached the
    checked address, each other one was denied, and 127.0.0.1 never saw a byte.
    """
    private, public = loopback_origins("127.0.0.1", "127.0.0.2")
    dns_server.answer("rebind.test", "A", lambda n: ["127.0.0.2"] if n % 2 else ["127.0.0.1"], ttl=0)
    gw = gateway(gateway_doc(allow=["127.0.0.2/32"]), dns_policy(dns_server, extra="  minTTL: 0s\n"), trust_secret)
    outcomes = []
    for _ in range(6):
        r = get(gw, f"http://rebind.test:{private.port}/rebind")
        if r.status_code == 200:
            assert r.json()["origin"] == "127.0.0.2"
            outcomes.append("allowed")
        else:
            assert_denied(r)
            assert "127.0.0.1" in r.json()["error"]
            outcomes.append("denied")
    assert outcomes == ["allowed", "denied"] * 3
    assert dns_server.count("rebind.test", "A") == 6  # one lookup per dial, none at connect time
    assert private.requests == []
    assert len(public.requests) == 3


def test_a_tcp_tunnel_dials_the_address_checked_at_connect(gateway, trust_secret, dns_server) -> None:
    """CONNECT checks the address before its 200 and pins it: the dial makes no second lookup, so an answer
    that flips between the check and the dial (TTL 0) cannot reach the denied address."""
    with TcpEcho("127.0.0.2") as allowed, TcpEcho("127.0.0.1", allowed.port) as private:
        reached_private: list[object] = []
        original = private.server.verify_request
        private.server.verify_request = lambda req, addr: reached_private.append(addr) or original(req, addr)  # type: ignore[method-assign]
        dns_server.answer("flip.test", "A", lambda n: ["127.0.0.2"] if n % 2 else ["127.0.0.1"], ttl=0)
        listeners = "  - name: tcp\n    protocol: TCP"
        gw = gateway(gateway_doc(listeners=listeners, allow=["127.0.0.2/32"]), dns_policy(dns_server, extra="  minTTL: 0s\n"), trust_secret)
        results = []
        for _ in range(4):
            sock, answer = connect(gw.host, gw.port, f"flip.test:{allowed.port}")
            with sock:
                if answer.status == 200:
                    sock.sendall(b"ping")
                    results.append(sock.recv(100))
                else:
                    assert answer.headers["x-egress-denied"] == "destination-address-denied"
                    results.append(answer.status)
        assert results == [b"echo:ping", 403, b"echo:ping", 403]
        assert dns_server.count("flip.test", "A") == 4  # one lookup per tunnel: at CONNECT, none at the dial
        assert reached_private == []


def test_resolution_failures_are_upstream_unreachable(gateway, trust_secret, dns_server, loopback_origins) -> None:
    (origin,) = loopback_origins("127.0.0.1")
    dns_server.drop.add("blackhole.test")
    gw = gateway(gateway_doc(), dns_policy(dns_server), trust_secret)
    r = get(gw, f"http://nowhere.test:{origin.port}/")
    assert (r.status_code, r.headers["x-egress-error"]) == (502, "upstream-unreachable")
    assert "NXDOMAIN" in r.json()["error"]
    started = time.monotonic()
    r = get(gw, f"http://blackhole.test:{origin.port}/")
    assert (r.status_code, r.headers["x-egress-error"]) == (502, "upstream-unreachable")
    assert time.monotonic() - started < 15
    assert metric(gw, 'egress_dns_lookups_total{result="timeout"}') >= 1
    assert metric(gw, 'egress_upstream_errors_total{reason="upstream-unreachable"}') >= 2
    assert origin.requests == []


# --- reverse lookups -------------------------------------------------------------------------------------------


def test_reverse_lookup_enforced(gateway, trust_secret, dns_server, loopback_origins) -> None:
    origins = loopback_origins("127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24")
    port = origins[0].port
    for i, name in enumerate(("good.test", "suffix.test", "bad.test", "noptr.test")):
        dns_server.add(name, "A", f"127.0.0.{21 + i}")
    dns_server.add_ptr("127.0.0.21", "good.test")
    dns_server.add_ptr("127.0.0.22", "edge-1.trusted-ptr.test")
    dns_server.add_ptr("127.0.0.23", "evil.test")
    extra = "  reverseLookup: {enforce: true, allowedSuffixes: [trusted-ptr.test]}\n"
    gw = gateway(gateway_doc(allow=["127.0.0.0/8"]), dns_policy(dns_server, extra=extra), trust_secret)
    assert get(gw, f"http://good.test:{port}/").json()["origin"] == "127.0.0.21"
    assert get(gw, f"http://suffix.test:{port}/").json()["origin"] == "127.0.0.22"
    for name, shown in (("bad.test", "evil.test"), ("noptr.test", "none")):
        body = assert_denied(get(gw, f"http://{name}:{port}/"), "reverse-dns-mismatch", "DNSPolicy/default/dns")
        assert shown in body["error"]
    assert [len(o.requests) for o in origins] == [1, 1, 0, 0]
    assert dns_server.ptr_count("127.0.0.23") == 1
    assert metric(gw, 'egress_denials_total{reason="reverse-dns-mismatch"}') == 2


# --- hostAliases and backends ----------------------------------------------------------------------------------


def test_host_alias_reaches_a_stub_for_api_openai_com_on_443(gateway, gateway_ca, trust_secret, tls_origin, dns_server) -> None:
    try:
        stub = tls_origin("api.openai.com", host="127.0.0.5", port=443, name="openai-stub")
    except OSError as e:  # pragma: no cover - needs root (or CAP_NET_BIND_SERVICE) for port 443
        pytest.skip(f"cannot bind 127.0.0.5:443: {e}")
    listeners = "  - name: https\n    protocol: HTTPS\n    tls: {mode: Terminate, caCertRef: {name: egress-ca}}"
    route = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: openai}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [api.openai.com]
  rules: [{}]
"""
    extra = "  reverseLookup: {enforce: true}\n"  # aliases are not DNS answers: no PTR is asked for them
    gw = gateway(
        gateway_doc(policy="deny-all", listeners=listeners, aliases={"api.openai.com": "127.0.0.5"}),
        route,
        dns_policy(dns_server, extra=extra),
        gateway_ca[1],
        trust_secret,
    )
    verify = ssl.create_default_context(cafile=str(gateway_ca[0]))
    with httpx.Client(proxy=gw.proxy_url, verify=verify, timeout=20) as client:
        first = client.get("https://api.openai.com/v1/models")
        second = client.get("https://api.openai.com/v1/models")
    assert first.status_code == 200 and first.json()["origin"] == "openai-stub"
    assert second.status_code == 200
    assert first.json()["headers"]["host"] == "api.openai.com"
    assert dns_server.count("api.openai.com") == 0  # hostAliases answer before DNS
    assert sum(n for (_, t), n in dns_server.queries.items() if t == "PTR") == 0
    assert len(stub.requests) == 2


def test_static_backend_is_trusted_and_uses_its_own_dns_policy(gateway, trust_secret, dns_server, loopback_origins) -> None:
    (origin,) = loopback_origins("127.0.0.1")
    with DnsServer("127.0.0.54") as backend_dns:
        backend_dns.add("svc.backend.test", "A", "127.0.0.1")
        dns_server.add("svc.backend.test", "A", "127.0.0.99")  # the gateway-level resolver would say otherwise
        route = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: to-backend}}
spec:
  parentRefs: [{{name: eg, sectionName: http}}]
  hostnames: [api.routed.test]
  rules:
  - backendRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: internal}}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: internal}}
spec:
  type: Static
  static:
    hosts: [{{host: svc.backend.test, port: {origin.port}}}]
"""
        gw = gateway(
            gateway_doc(),  # no allowCIDRs: only the Static Backend's trust lets 127.0.0.1 through
            route,
            dns_policy(dns_server),
            dns_policy(backend_dns, name="backend-dns", target="group: gateway.kgateway.dev, kind: Backend, name: internal"),
            trust_secret,
        )
        r = get(gw, "http://api.routed.test/via-backend")
        assert r.status_code == 200, r.text
        assert r.json()["origin"] == "127.0.0.1"
        assert backend_dns.count("svc.backend.test", "A") == 1
        assert dns_server.count("svc.backend.test") == 0
        # The same address named by the client (dynamic forwarding) is still refused.
        assert_denied(get(gw, f"http://127.0.0.1:{origin.port}/direct"))
        assert [p for _, p, _ in origin.requests] == ["/via-backend"]


def test_dynamic_forwarding_to_a_public_name_resolving_private_is_denied_with_dns_counted(
    gateway, trust_secret, dns_server, loopback_origins
) -> None:
    (origin,) = loopback_origins("127.0.0.1")
    dns_server.add("looks-public.test", "A", "127.0.0.1")
    gw = gateway(gateway_doc(), dns_policy(dns_server), trust_secret)
    for _ in range(2):
        body = assert_denied(get(gw, f"http://looks-public.test:{origin.port}/"))
        assert "looks-public.test resolved to 127.0.0.1" in body["error"]
    assert dns_server.count("looks-public.test", "A") == 1  # the second dial used the cached answer
    assert metric(gw, "egress_dns_cache_hits_total") >= 1
    assert origin.requests == []


def test_request_timeout_during_resolution_is_a_504_not_a_hang(gateway, trust_secret, dns_server, loopback_origins) -> None:
    """The request timer cancels the connecting task while the dial guard awaits DNS: the dial must still end."""
    (origin,) = loopback_origins("127.0.0.1")
    dns_server.drop.add("slow-dns.test")
    doc = gateway_doc().replace("  defaultPolicy: allow-all\n", "  defaultPolicy: allow-all\n  requestTimeout: 1s\n")
    gw = gateway(doc, dns_policy(dns_server), trust_secret)
    started = time.monotonic()
    r = get(gw, f"http://slow-dns.test:{origin.port}/")
    elapsed = time.monotonic() - started
    assert (r.status_code, r.headers["x-egress-error"]) == (504, "upstream-timeout"), r.text
    assert elapsed < 4, elapsed
    # the gateway is still healthy: the next request on a name that resolves is served
    assert get(gw, f"http://127.0.0.1:{origin.port}/").status_code == 403  # (the SSRF guard, not a stuck loop)


def test_keep_alive_reuses_the_upstream_connection_opened_by_address(gateway, trust_secret, dns_server, loopback_origins) -> None:
    """The dial went to the checked IP, but the connection is kept under the name: the next request reuses it."""
    (origin,) = loopback_origins("127.0.0.1")
    dns_server.add("reuse.test", "A", "127.0.0.1", ttl=0)
    gw = gateway(gateway_doc(allow=["127.0.0.0/8"]), dns_policy(dns_server, extra="  minTTL: 0s\n"), trust_secret)
    with httpx.Client(proxy=gw.proxy_url, timeout=20) as client:
        for i in range(3):
            assert client.get(f"http://reuse.test:{origin.port}/keep-alive/{i}").status_code == 200
    assert dns_server.count("reuse.test", "A") == 1  # TTL 0 and minTTL 0s: a second dial would have asked again
