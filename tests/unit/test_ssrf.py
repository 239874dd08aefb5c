"""SSRF guard: built-in deny ranges, embedded IPv4 forms, allowCIDRs/denyCIDRs, every spelling of a host."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from egressproxy.hostnames import canonical_host
from egressproxy.resolver import DnsSettings, Resolver
from egressproxy.ssrf import SsrfGuard, embedded_ipv4
from tests.support.dnsserver import DnsServer

GUARD = SsrfGuard()

# (host as a client may spell it, denied?, range label when denied)
SPELLINGS = [
    # loopback, in every IPv4 spelling inet_aton accepts, and with a trailing dot
    ("127.0.0.1", True, "loopback"),
    ("127.1", True, "loopback"),
    ("127.0.1", True, "loopback"),
    ("0x7f.0.0.1", True, "loopback"),
    ("0x7F.1", True, "loopback"),
    ("0177.0.0.1", True, "loopback"),
    ("0177.1", True, "loopback"),
    ("2130706433", True, "loopback"),
    ("0x7f000001", True, "loopback"),
    ("017700000001", True, "loopback"),
    ("127.0.0.1.", True, "loopback"),
    ("127.255.255.254", True, "loopback"),
    ("[::1]", True, "loopback"),
    ("0:0:0:0:0:0:0:1", True, "loopback"),
    # unspecified: 0.0.0.0 connects to the local host on Linux
    ("0.0.0.0", True, "unspecified"),
    ("0", True, "unspecified"),
    ("[::]", True, "unspecified"),
    # private, CGNAT, link-local and cloud metadata
    ("10.0.0.1", True, "private"),
    ("012.0.0.1", True, "private"),  # octal 10.0.0.1
    ("172.16.0.1", True, "private"),
    ("172.31.255.255", True, "private"),
    ("192.168.1.1", True, "private"),
    ("0xc0a80101", True, "private"),  # hex 192.168.1.1
    ("3232235777", True, "private"),  # decimal 192.168.1.1
    ("100.64.0.1", True, "cgnat"),
    ("100.127.255.254", True, "cgnat"),
    ("169.254.169.254", True, "link-local"),
    ("0xa9fea9fe", True, "link-local"),  # hex 169.254.169.254
    ("2852039166", True, "link-local"),  # decimal 169.254.169.254
    ("[fd00:ec2::254]", True, "private"),  # AWS metadata over IPv6 (ULA)
    ("fc00::1", True, "private"),
    ("fe80::1", True, "link-local"),
    ("[fe80::1%eth0]", True, "link-local"),
    ("fec0::1", True, "private"),
    # multicast, broadcast, reserved
    ("224.0.0.1", True, "multicast"),
    ("239.255.255.250", True, "multicast"),
    ("ff02::1", True, "multicast"),
    ("255.255.255.255", True, "broadcast"),
    ("240.0.0.1", True, "reserved"),
    ("192.0.2.10", True, "reserved"),
    ("198.18.0.1", True, "reserved"),
    ("192.0.0.192", True, "reserved"),
    ("2001:db8::1", True, "reserved"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", True, "reserved"),  # Teredo
    # IPv6 forms that carry a denied IPv4 address
    ("::ffff:127.0.0.1", True, "loopback"),  # IPv4-mapped
    ("[::ffff:7f00:1]", True, "loopback"),
    ("::ffff:169.254.169.254", True, "link-local"),
    ("::ffff:10.1.2.3", True, "private"),
    ("::ffff:0:127.0.0.1", True, "loopback"),  # SIIT
    ("::127.0.0.1", True, "loopback"),  # IPv4-compatible
    ("::10.0.0.1", True, "private"),
    ("64:ff9b::127.0.0.1", True, "loopback"),  # NAT64
    ("64:ff9b::a9fe:a9fe", True, "link-local"),
    ("64:ff9b:1::1", True, "reserved"),  # local-use NAT64
    ("2002:7f00:1::1", True, "loopback"),  # 6to4 of 127.0.0.1
    ("2002:c0a8:101::1", True, "private"),  # 6to4 of 192.168.1.1
    ("2002:a9fe:a9fe::", True, "link-local"),
    # public: allowed
    ("93.184.216.34", False, ""),
    ("8.8.8.8", False, ""),
    ("1.1.1.1", False, ""),
    ("100.128.0.1", False, ""),  # just past CGNAT
    ("172.32.0.1", False, ""),  # just past 172.16/12
    ("169.253.255.255", False, ""),
    ("2606:4700:4700::1111", False, ""),
    ("::ffff:8.8.8.8", False, ""),  # mapped public
    ("64:ff9b::8.8.8.8", False, ""),  # NAT64 of a public address
    ("2002:808:808::1", False, ""),  # 6to4 of a public address
]


@pytest.mark.parametrize("spelling,denied,label", SPELLINGS, ids=[s[0] for s in SPELLINGS])
def test_builtin_ranges_deny_every_spelling(spelling: str, denied: bool, label: str) -> None:
    check = GUARD.check(canonical_host(spelling))
    assert check.allowed is (not denied), check
    assert check.range == label
    if denied:
        assert label in check.describe()


def test_at_least_twenty_forms_are_denied() -> None:
    assert sum(1 for _, denied, _ in SPELLINGS if denied) >= 20


@pytest.mark.parametrize(
    "address,embedded",
    [
        ("::ffff:1.2.3.4", ["1.2.3.4"]),
        ("::ffff:0:1.2.3.4", ["1.2.3.4"]),
        ("::1.2.3.4", ["1.2.3.4"]),
        ("64:ff9b::1.2.3.4", ["1.2.3.4"]),
        ("2002:102:304::5", ["1.2.3.4"]),
        ("::1", []),
        ("::", []),
        ("2606:4700::1", []),
        ("1.2.3.4", []),
    ],
)
def test_embedded_ipv4(address: str, embedded: list[str]) -> None:
    assert [str(a) for a in embedded_ipv4(ipaddress.ip_address(address))] == embedded


def test_allow_cidrs_admit_private_addresses_and_their_mapped_forms() -> None:
    guard = SsrfGuard(allow=["127.0.0.0/8", "10.1.0.0/16"])
    assert guard.check("127.0.0.1").allowed and guard.check("127.0.0.1").range == "allowCIDRs"
    assert guard.allows("::ffff:127.0.0.5")
    assert guard.allows("10.1.2.3")
    assert not guard.allows("10.2.0.1")
    assert not guard.allows("::1")  # IPv6 loopback is not in an IPv4 allow entry
    assert not guard.allows("169.254.169.254")


def test_deny_cidrs_add_to_the_builtin_set_and_the_longer_prefix_wins() -> None:
    guard = SsrfGuard(allow=["10.0.0.0/8"], deny=["10.0.5.0/24", "93.184.216.0/24"])
    assert guard.allows("10.0.4.1")
    check = guard.check("10.0.5.1")
    assert not check.allowed and check.range == "denyCIDRs"
    assert not guard.allows("93.184.216.34")
    assert not guard.allows("64:ff9b::93.184.216.34")  # NAT64 of a denied address
    narrow_allow = SsrfGuard(allow=["10.0.5.7/32"], deny=["10.0.5.0/24"])
    assert narrow_allow.allows("10.0.5.7") and not narrow_allow.allows("10.0.5.8")
    tie = SsrfGuard(allow=["10.0.5.0/24"], deny=["10.0.5.0/24"])
    assert not tie.allows("10.0.5.1")  # an equal prefix: deny


# Names that resolve to denied addresses are judged by their addresses (through the real resolver).
NAMES = [
    ("localhost.test", "A", "127.0.0.1", "loopback"),
    ("LocalHost.Test.", "A", "127.0.0.1", "loopback"),
    ("metadata.test", "A", "169.254.169.254", "link-local"),
    ("internal.test", "A", "10.0.0.8", "private"),
    ("cgnat.test", "A", "100.64.1.1", "cgnat"),
    ("v6local.test", "AAAA", "::1", "loopback"),
    ("ula.test", "AAAA", "fd00:ec2::254", "private"),
    ("mapped.test", "AAAA", "::ffff:127.0.0.1", "loopback"),
    ("nat64.test", "AAAA", "64:ff9b::a00:1", "private"),
    ("public.test", "A", "93.184.216.34", ""),
]


@pytest.mark.parametrize("name,rdtype,address,label", NAMES, ids=[n[0] for n in NAMES])
def test_names_are_judged_by_the_addresses_they_resolve_to(name: str, rdtype: str, address: str, label: str) -> None:
    with DnsServer("127.0.0.1") as server:
        server.add(name, rdtype, address)
        settings = DnsSettings(resolvers=(("127.0.0.1", server.port),))
        family = "V4Only" if rdtype == "A" else "V6Only"
        addresses = asyncio.run(Resolver(timeout=2).resolve(canonical_host(name), family, settings))
    assert addresses == (str(ipaddress.ip_address(address)),)
    check = GUARD.check(addresses[0])
    assert check.allowed is (label == "")
    assert check.range == label
