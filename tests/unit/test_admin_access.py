"""egressproxy/admin_access.py: loopback always, other sources only from --admin-allow-cidr."""

from __future__ import annotations

import argparse
import ipaddress

import pytest

from egressproxy.admin_access import AdminAccess, parse_cidr


@pytest.mark.parametrize("ip", ["127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "::ffff:127.0.0.1"])
def test_loopback_is_always_allowed(ip: str) -> None:
    assert AdminAccess().allows(ip)


@pytest.mark.parametrize("ip", ["192.0.2.2", "10.0.0.1", "0.0.0.0", "fd00::2", "::ffff:192.0.2.2", "fe80::1%eth0", "", None, "x"])
def test_anything_else_is_refused_by_default(ip: str | None) -> None:
    assert not AdminAccess().allows(ip)


def test_named_networks_are_allowed_and_only_they() -> None:
    access = AdminAccess((ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/64")))
    assert access.allows("10.1.2.3") and access.allows("fd00::2") and access.allows("::ffff:10.0.0.9")
    assert not access.allows("192.0.2.2") and not access.allows("fd01::2")


def test_parse_cidr_accepts_addresses_and_host_bits_and_rejects_the_rest() -> None:
    assert parse_cidr("10.0.0.5/8") == ipaddress.ip_network("10.0.0.0/8")
    assert parse_cidr("192.0.2.2") == ipaddress.ip_network("192.0.2.2/32")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_cidr("not-a-network")
