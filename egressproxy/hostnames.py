"""Hostname canonicalisation and Gateway API hostname matching.

Every decision keys on a canonical name, computed once and early: lower case, one trailing dot removed, IDNA
(Unicode labels to their ASCII `xn--` form), and IPv4 in every spelling `inet_aton` accepts (`127.1`,
`0x7f.0.0.1`, `2130706433`, octal `0177.0.0.1`) rewritten to dotted decimal. IPv6 literals lose their brackets and
are compressed. A name that is none of these is invalid and must be denied, never passed through.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket

__all__ = [
    "authority_host",
    "canonical_host",
    "InvalidHostname",
    "is_ip_literal",
    "wildcard_matches",
    "host_matches",
]

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NUMERIC_V4 = re.compile(r"^[0-9a-fx.]+$")


class InvalidHostname(ValueError):
    """A host that cannot be canonicalised (empty, bad IDNA, illegal characters)."""


def _canonical_ipv4(host: str) -> str | None:
    if not _NUMERIC_V4.match(host) or not any(ch.isdigit() for ch in host):
        return None
    if host.endswith(".") or ".." in host:
        return None
    try:
        packed = socket.inet_aton(host)
    except OSError:
        return None
    return socket.inet_ntoa(packed)


def _idna_ascii(name: str, original: str) -> str:
    """Unicode labels to `xn--` form the way clients do it today (IDNA 2008 with UTS 46 mapping: `faß.de` is
    `xn--fa-hia.de`, where Python's IDNA 2003 codec would say `fass.de`, another host)."""
    try:
        import idna as idna_2008
    except ImportError:  # pragma: no cover - idna ships with httpx
        idna_2008 = None  # type: ignore[assignment]
    try:
        if idna_2008 is not None:
            return str(idna_2008.encode(name, uts46=True).decode("ascii"))
        return name.encode("idna").decode("ascii")
    except (UnicodeError, ValueError) as e:  # idna.IDNAError is a UnicodeError
        raise InvalidHostname(f"invalid internationalised host {original!r}") from e


@functools.lru_cache(maxsize=4096)
def canonical_host(host: str) -> str:
    """Return the canonical spelling of a host name or IP literal (see the module docstring).

    Memoised (a pure function of its argument, called several times per request and per new connection on the
    same few names); a host that is refused raises again each time, refusals are not cached."""
    if not host:
        raise InvalidHostname("empty host")
    h = host.strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if ":" in h:
        try:
            return str(ipaddress.IPv6Address(h.split("%", 1)[0]))
        except ValueError as e:
            raise InvalidHostname(f"invalid IPv6 address {host!r}") from e
    if h.endswith("."):
        h = h[:-1]
    if not h:
        raise InvalidHostname(f"invalid host {host!r}")
    h = h.lower()
    v4 = _canonical_ipv4(h)
    if v4 is not None:
        return v4
    if not h.isascii():
        h = _idna_ascii(h, host)
        # IDNA maps fullwidth digits and dots to ASCII ("１２７.１" is "127.1"): the result is read as an IPv4
        # spelling again, as a client's resolver would, so it cannot pass for a name (found by fuzzing).
        v4 = _canonical_ipv4(h)
        if v4 is not None:
            return v4
    labels = h.split(".")
    for label in labels:
        if not _LABEL.match(label):
            raise InvalidHostname(f"invalid host {host!r}")
    if len(h) > 253:
        raise InvalidHostname(f"host name longer than 253 characters: {host[:40]!r}...")
    return h


def is_ip_literal(host: str) -> bool:
    # Names are the common case, and ipaddress rejects them by raising (~5 us): an IPv4 literal ends in a digit
    # and an IPv6 one holds a colon, so anything else is answered without it.
    if ":" not in host and not host[-1:].isdigit():
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def wildcard_matches(pattern: str, host: str) -> bool:
    """Gateway API hostname matching on canonical names.

    `*.example.com` matches any depth of subdomain (`a.example.com`, `a.b.example.com`) and never
    `example.com` itself; any other pattern matches exactly.
    """
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return host.endswith(suffix) and len(host) > len(suffix)
    return pattern == host


def host_matches(patterns: tuple[str, ...], host: str) -> bool:
    """True when `patterns` is empty (a route without hostnames takes any host) or any pattern matches."""
    return not patterns or any(wildcard_matches(p, host) for p in patterns)


def authority_host(authority: str) -> str:
    """The host part of a Host header or `:authority` (`[v6]:port`, `name:port` or a bare host), as sent."""
    if authority.startswith("["):
        return authority[1 : authority.index("]")] if "]" in authority else authority
    host, sep, port = authority.rpartition(":")
    return host if sep and port.isdigit() else authority
