"""Who may talk to the admin port: loopback clients always, others only from CIDRs the operator named.

The admin port dumps the running configuration and reloads it (`/config_dump`, `/reload`). Binding it to
0.0.0.0 (a container whose port is published, a pod reached by a sidecar) must not open it to the network by
accident, so the source address of each request is checked, not only the bind address. "Loopback" means a
source in 127.0.0.0/8 or ::1 (an IPv4-mapped ::ffff:127.x counts too); anything else needs
`--admin-allow-cidr`.
"""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass

__all__ = ["AdminAccess", "parse_cidr"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_cidr(text: str) -> Network:
    """argparse type for --admin-allow-cidr: an address or a network, host bits allowed (10.0.0.5/8)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not an IP network: {text!r}") from e


@dataclass(frozen=True)
class AdminAccess:
    """The networks allowed besides loopback; empty means loopback only."""

    allowed: tuple[Network, ...] = ()

    def allows(self, remote_ip: str | None) -> bool:
        """True when a client at `remote_ip` may use the admin port; an unparsable address is refused."""
        if not remote_ip:
            return False
        try:
            address = ipaddress.ip_address(remote_ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.is_loopback:
            return True
        return any(address.version == net.version and address in net for net in self.allowed)
