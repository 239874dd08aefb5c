"""Fuzzing the hostname canonicaliser (egressproxy/hostnames.py, issue 14 item 8): any text gives a canonical
name or `InvalidHostname`, never another exception; canonicalising twice changes nothing; names that are equal
(case, one trailing dot, brackets, every IPv4 spelling inet_aton accepts) canonicalise to one name."""

from __future__ import annotations

import ipaddress
import socket

from hypothesis import example, given, settings
from hypothesis import strategies as st

from egressproxy.hostnames import InvalidHostname, canonical_host, wildcard_matches

FUZZ = settings(max_examples=500, deadline=None)

_LABELS = st.one_of(
    st.sampled_from(["a", "api", "example", "com", "xn--bcher-kva", "b\u00fccher", "FA\u00df", "0x7f", "127", "1",
                     "07", "-", "_x", "\uff11", "\uff10x7f", "\u0663", ""]),
    st.text(st.characters(codec="utf-8"), max_size=6),
)
NAMES = st.one_of(
    st.lists(_LABELS, min_size=1, max_size=5).map(".".join),
    st.text(max_size=40),
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)


def canonical_or_none(name: str) -> str | None:
    try:
        return canonical_host(name)
    except InvalidHostname:
        return None


@FUZZ
@given(NAMES)
# Fullwidth digits: IDNA maps them to ASCII digits, and the result must still be read as the IPv4 address it
# then spells (a client resolving it reaches 127.0.0.1), not kept as a name that bypasses IP-literal rules.
@example("\uff11\uff12\uff17.\uff10.\uff10.\uff11")
@example("\uff10x7f.1")
@example("\uff11")  # found by hypothesis: "1" after IDNA, kept as a name where "1" is 0.0.0.1
@example("\uff12\uff11\uff13\uff10\uff17\uff10\uff16\uff14\uff13\uff13")
def test_canonical_host_is_idempotent_and_raises_only_invalid_hostname(name: str) -> None:
    canonical = canonical_or_none(name)
    if canonical is None:
        return
    assert canonical_host(canonical) == canonical
    assert canonical == canonical.lower() and canonical.isascii() and not canonical.endswith(".")


@FUZZ
@given(NAMES)
def test_case_and_one_trailing_dot_do_not_make_another_host(name: str) -> None:
    canonical = canonical_or_none(name)
    if canonical is None or not name.isascii():  # Unicode case mapping is IDNA's business (faß is not FASS)
        return
    assert canonical_or_none(name.upper()) == canonical
    if not name.endswith(".") and ":" not in name:
        assert canonical_or_none(name + ".") == canonical


@FUZZ
@given(st.integers(0, 2**32 - 1), st.sampled_from(["dotted", "hex", "octal", "integer", "short"]))
def test_every_ipv4_spelling_is_the_dotted_decimal_address(value: int, spelling: str) -> None:
    octets = list(ipaddress.IPv4Address(value).packed)
    text = {
        "dotted": ".".join(map(str, octets)),
        "hex": ".".join(hex(o) for o in octets),
        "octal": ".".join("0" + oct(o)[2:] for o in octets),
        "integer": str(value),
        "short": f"{octets[0]}.{value & 0xFFFFFF}",
    }[spelling]
    assert socket.inet_aton(text) == bytes(octets)  # the spelling is one a client's resolver accepts
    assert canonical_host(text) == str(ipaddress.IPv4Address(value))


@FUZZ
@given(st.ip_addresses(v=6))
def test_ipv6_in_brackets_or_not_and_in_any_case_is_one_name(address: ipaddress.IPv6Address) -> None:
    text = address.exploded
    assert canonical_host(text) == canonical_host(f"[{text.upper()}]") == str(address)


@FUZZ
@given(st.lists(st.sampled_from(["a", "b", "example", "com"]), min_size=1, max_size=4).map(".".join),
       st.lists(st.sampled_from(["a", "b", "example", "com"]), min_size=1, max_size=4).map(".".join))
def test_a_wildcard_matches_strict_subdomains_only(suffix: str, host: str) -> None:
    """Gateway API: `*.example.com` matches any name ending in `.example.com` (one label or more), never
    `example.com` itself nor a name that merely ends with the same characters (`badexample.com`)."""
    matched = wildcard_matches(f"*.{suffix}", host)
    assert matched == (host.endswith("." + suffix))
    assert wildcard_matches(host, host) and not wildcard_matches(host, host + ".x")
