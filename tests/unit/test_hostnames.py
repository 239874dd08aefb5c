"""Canonical host names and Gateway API wildcard matching (DESIGN.md section 4, ENGINE-NOTES bypasses)."""

from __future__ import annotations

import pytest

from egressproxy.hostnames import InvalidHostname, canonical_host, host_matches, is_ip_literal, wildcard_matches


@pytest.mark.parametrize(
    ("host", "canonical"),
    [
        ("api.example.com", "api.example.com"),
        ("API.Example.COM", "api.example.com"),
        ("api.example.com.", "api.example.com"),
        ("Api.Example.Com.", "api.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example.", "xn--bcher-kva.example"),
        ("faß.de", "xn--fa-hia.de"),  # IDNA 2008, as clients send it; IDNA 2003 would say fass.de
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0X7F.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.000.000.001", "127.0.0.1"),
        ("169.254.169.254.", "169.254.169.254"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[0:0:0:0:0:0:0:1]", "::1"),
        ("[2001:DB8::1]", "2001:db8::1"),
        ("[fe80::1%eth0]", "fe80::1"),
        ("my_service.internal", "my_service.internal"),
        ("localhost", "localhost"),
    ],
)
def test_canonical_host(host: str, canonical: str) -> None:
    assert canonical_host(host) == canonical


@pytest.mark.parametrize(
    "host",
    ["", ".", "a..b", "-a.example.com", "a-.example.com", "a b.example.com", "[::1", "[:::1]", "☃.net", "x" * 64 + ".com", "a/b", "host:443"],
)
def test_invalid_hosts(host: str) -> None:
    with pytest.raises(InvalidHostname):
        canonical_host(host)


def test_names_longer_than_253_characters_are_invalid() -> None:
    with pytest.raises(InvalidHostname):
        canonical_host(".".join(["a" * 60] * 5))


def test_is_ip_literal() -> None:
    assert is_ip_literal("10.0.0.1") and is_ip_literal("::1")
    assert not is_ip_literal("127.1") and not is_ip_literal("example.com")


@pytest.mark.parametrize(
    ("host", "literal"),
    [("::a", True), ("fe80::1", True), ("::ffff:10.0.0.1", True), ("192.0.2.1", True), ("", False),
     ("192.0.2.1.", False), ("host1", False), ("1.2.3.example", False), ("a.b:c", False)],
)
def test_is_ip_literal_answers_names_without_parsing_and_still_finds_every_literal(host: str, literal: bool) -> None:
    """The short cut (no colon and no final digit: a name) agrees with ipaddress on both sides of it."""
    assert is_ip_literal(host) is literal


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "badexample.com", False),
        ("*.example.com", "a.example.com.evil.net", False),
        ("*.example.com", ".example.com", False),
        ("example.com", "example.com", True),
        ("example.com", "a.example.com", False),
        ("api.example.com", "api.example.co", False),
    ],
)
def test_wildcard_matches(pattern: str, host: str, matches: bool) -> None:
    assert wildcard_matches(pattern, host) is matches


def test_matching_after_canonicalisation_ignores_case_and_one_trailing_dot() -> None:
    assert wildcard_matches("*.example.com", canonical_host("A.B.EXAMPLE.COM."))
    assert not wildcard_matches("*.example.com", canonical_host("Example.Com."))


def test_host_matches() -> None:
    assert host_matches((), "anything.example")
    assert host_matches(("a.example.com", "*.example.org"), "x.y.example.org")
    assert not host_matches(("a.example.com", "*.example.org"), "example.org")


def test_canonical_host_is_memoised_and_a_refusal_raises_every_time() -> None:
    """Called several times per request on the same few names: computed once; refusals are never cached."""
    canonical_host.cache_clear()
    assert canonical_host("API.Example.COM.") == canonical_host("API.Example.COM.") == "api.example.com"
    assert canonical_host.cache_info().hits == 1
    for _ in range(2):
        with pytest.raises(InvalidHostname):
            canonical_host("bad_host!")
    assert canonical_host.cache_info().currsize == 1
