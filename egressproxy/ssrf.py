"""SSRF guard: may the gateway dial this address on a client's behalf? (pure; DESIGN.md 4.1 `spec.ssrfGuard`)

A destination reached by *dynamic forwarding* (the client named it) must not be an address inside the
gateway's own networks: loopback, RFC 1918 and ULA private ranges, link-local (cloud metadata at
169.254.169.254 and fd00:ec2::254), CGNAT, multicast, unspecified, broadcast and the reserved/documentation
ranges. IPv6 forms that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, SIIT `::ffff:0:a.b.c.d`,
IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002:aabb:ccdd::/48`) are judged by the IPv4
address inside them as well, because a dual-stack socket or a translator delivers them there.

`spec.ssrfGuard.allowCIDRs` lets addresses through and `denyCIDRs` adds to the built-in deny set. Between an
allow and a deny entry of the user's, the longer prefix wins (an equal prefix: deny); either beats the built-in
set. Each entry is compared with the address as written and with every IPv4 address embedded in it, so
`allowCIDRs: [127.0.0.0/8]` also admits `::ffff:127.0.0.1`, and `denyCIDRs: [203.0.113.0/24]` also refuses
`64:ff9b::203.0.113.5`.

Addresses from `upstreamTLS.hostAliases` and Static Backends are trusted as configured: the dial guard does not
ask this module about them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["AddressCheck", "SsrfGuard", "BUILTIN_DENY", "embedded_ipv4", "parse_address"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*entries: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(cidr), label) for cidr, label in entries)


# (network, range label). The label names the range in denial messages and in `egress_ssrf_denials_total{range}`.
BUILTIN_DENY: tuple[tuple[IPNetwork, str], ...] = _nets(
    # IPv4
    ("0.0.0.0/8", "unspecified"),  # "this network"; 0.0.0.0 reaches the local host on Linux
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "cgnat"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),  # incl. 169.254.169.254 cloud metadata
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),  # IETF protocol assignments (incl. 192.0.0.192 Oracle metadata)
    ("192.0.2.0/24", "reserved"),  # TEST-NET-1
    ("192.88.99.0/24", "reserved"),  # deprecated 6to4 relay anycast
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved"),  # benchmarking
    ("198.51.100.0/24", "reserved"),  # TEST-NET-2
    ("203.0.113.0/24", "reserved"),  # TEST-NET-3
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),  # before class E, which contains it
    ("240.0.0.0/4", "reserved"),  # class E
    # IPv6
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "reserved"),  # local-use NAT64 (RFC 8215): the embedded address is site-specific
    ("100::/64", "reserved"),  # discard-only
    ("2001::/23", "reserved"),  # IETF protocol assignments: Teredo, benchmarking, ORCHID
    ("2001:db8::/32", "reserved"),  # documentation
    ("3fff::/20", "reserved"),  # documentation (RFC 9637)
    ("5f00::/16", "reserved"),  # SRv6 SIDs
    ("fc00::/7", "private"),  # unique local, incl. fd00:ec2::254 (AWS metadata over IPv6)
    ("fe80::/10", "link-local"),
    ("fec0::/10", "private"),  # deprecated site-local
    ("ff00::/8", "multicast"),
)

_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")
_COMPAT = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIXTOFOUR = ipaddress.ip_network("2002::/16")


def parse_address(value: str | IPAddress) -> IPAddress:
    """An address object from a string (brackets and an IPv6 zone are dropped); ValueError when not an IP."""
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return ipaddress.ip_address(text.split("%", 1)[0])


def embedded_ipv4(address: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """Every IPv4 address an IPv6 address carries (mapped, SIIT, IPv4-compatible, NAT64, 6to4)."""
    if address.version != 6:
        return ()
    assert isinstance(address, ipaddress.IPv6Address)
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _MAPPED or address in _SIIT or address in _NAT64:
        return (low32,)
    if address in _COMPAT and int(address) > 1:  # ::a.b.c.d (not :: and ::1, which are themselves)
        return (low32,)
    if address in _SIXTOFOUR:
        return (ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF),)
    return ()


@dataclass(frozen=True, slots=True)
class AddressCheck:
    """The guard's answer for one address."""

    address: str
    allowed: bool
    range: str = ""  # the deny range's label (loopback, private, ...), "denyCIDRs", or "allowCIDRs" when allowed by it
    via: str = ""  # the embedded IPv4 address that decided, when it was not the address itself

    def describe(self) -> str:
        if self.allowed:
            return f"{self.address} is allowed" + (f" by {self.range}" if self.range else "")
        inner = f" (embeds {self.via})" if self.via else ""
        if self.range == "denyCIDRs":
            return f"{self.address}{inner} is in ssrfGuard.denyCIDRs"
        article = "an" if self.range[:1] in "aeiou" else "a"
        return f"{self.address}{inner} is {article} {self.range} address"


class SsrfGuard:
    """Built-in deny ranges plus a gateway's `ssrfGuard.allowCIDRs` / `denyCIDRs`."""

    __slots__ = ("allow", "deny")

    def __init__(self, allow: Iterable[IPNetwork | str] = (), deny: Iterable[IPNetwork | str] = ()) -> None:
        self.allow = tuple(ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n for n in allow)
        self.deny = tuple(ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n for n in deny)

    def _user_rule(self, address: IPAddress) -> tuple[int, bool] | None:
        """(prefix length, allowed) of the most specific user entry containing `address`; deny wins a tie."""
        best: tuple[int, bool] | None = None
        for net in self.allow:
            if net.version == address.version and address in net:
                if best is None or net.prefixlen > best[0]:
                    best = (net.prefixlen, True)
        for net in self.deny:
            if net.version == address.version and address in net:
                if best is None or net.prefixlen >= best[0]:
                    best = (net.prefixlen, False)
        return best

    def check(self, value: str | IPAddress) -> AddressCheck:
        address = parse_address(value)
        text = str(address)
        forms: tuple[IPAddress, ...] = (address, *embedded_ipv4(address))
        user_allowed = False
        for form in forms:
            rule = self._user_rule(form)
            if rule is None:
                continue
            if not rule[1]:
                return AddressCheck(text, False, "denyCIDRs", str(form) if form is not address else "")
            user_allowed = True
        if user_allowed:
            return AddressCheck(text, True, "allowCIDRs")
        for form in forms:
            for net, label in BUILTIN_DENY:
                if net.version == form.version and form in net:
                    return AddressCheck(text, False, label, str(form) if form is not address else "")
        return AddressCheck(text, True)

    def allows(self, value: str | IPAddress) -> bool:
        return self.check(value).allowed
