"""The transparent sidecar's NAT rules (DESIGN.md section 1, "Transparent sidecar"), as pure data.

Every outbound TCP connection of the pod's network namespace is redirected to the gateway's transparent
listener, except:
- connections made by the proxy itself (`-m owner --uid-owner UID`): it must dial out, and redirecting its own
  dials back to itself would loop;
- loopback destinations (127.0.0.0/8 and ::1, and anything routed over `lo`, such as the pod's own address):
  local traffic never leaves the pod, and the proxy's own admin/ready/metrics ports live there;
- `--exclude-cidr` destinations (for example the Kubernetes API server or a node-local agent).

Optionally UDP port 53 goes to the gateway's DNS listener, so names resolve through its policy.

The rules live in one dedicated chain of the nat table, `EGRESSPROXY_OUTPUT`, reached by a single jump from
`OUTPUT`; installing means (re)creating that chain and adding the jump once, removing means deleting the jump and
the chain. Nothing else in the tables is touched. Functions here only build argument lists; running them is
`egressproxy.commands.iptables`.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass

__all__ = [
    "CHAIN",
    "FAMILIES",
    "SidecarRules",
    "parse_cidr",
    "chain_rules",
    "jump_rule",
    "install_commands",
    "remove_commands",
    "restore_payload",
    "shell_script",
]

CHAIN = "EGRESSPROXY_OUTPUT"
TABLE = "nat"
FAMILIES = ("iptables", "ip6tables")
_LOOPBACK = {"iptables": "127.0.0.0/8", "ip6tables": "::1/128"}


def parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or CIDR; host bits are an error (`10.0.0.1/8` is ambiguous: say `10.0.0.0/8`)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        raise ValueError(f"--exclude-cidr {text!r}: {e}") from None


@dataclass(frozen=True, slots=True)
class SidecarRules:
    proxy_uid: int
    port: int = 15001
    dns_port: int | None = None
    exclude_cidrs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.proxy_uid < 0:
            raise ValueError(f"--proxy-uid must be >= 0, got {self.proxy_uid}")
        for name, value in (("--port", self.port), ("--dns-port", self.dns_port)):
            if value is not None and not 1 <= value <= 65535:
                raise ValueError(f"{name} must be 1-65535, got {value}")
        for cidr in self.exclude_cidrs:
            parse_cidr(cidr)

    def cidrs(self, family: str) -> list[str]:
        """The excluded networks of one family, canonical (`10.0.0.0/8`, `fd00::/8`), in the order given."""
        version = 4 if family == "iptables" else 6
        out: list[str] = []
        for text in self.exclude_cidrs:
            net = parse_cidr(text)
            if net.version == version and str(net) not in out:
                out.append(str(net))
        return out


def chain_rules(spec: SidecarRules, family: str) -> list[list[str]]:
    """The rules appended to the (empty) chain, in order, each a full argument list starting with `family`."""
    base = [family, "-t", TABLE, "-A", CHAIN]
    rules = [
        [*base, "-m", "owner", "--uid-owner", str(spec.proxy_uid), "-j", "RETURN"],
        [*base, "-d", _LOOPBACK[family], "-j", "RETURN"],
        [*base, "-o", "lo", "-j", "RETURN"],
    ]
    rules += [[*base, "-d", cidr, "-j", "RETURN"] for cidr in spec.cidrs(family)]
    if spec.dns_port is not None:
        rules.append([*base, "-p", "udp", "--dport", "53", "-j", "REDIRECT", "--to-ports", str(spec.dns_port)])
    rules.append([*base, "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(spec.port)])
    return rules


def jump_rule(family: str) -> list[str]:
    """The rule in OUTPUT that sends every locally generated packet's first packet through the chain.

    Without the command flag: callers add `-A` (append), `-C` (check) or `-D` (delete) after the table.
    """
    return ["OUTPUT", "-j", CHAIN]


def _cmd(family: str, flag: str, *rest: str) -> list[str]:
    return [family, "-t", TABLE, flag, *rest]


def install_commands(spec: SidecarRules, families: tuple[str, ...] = FAMILIES) -> list[list[str]]:
    """What installs the rules on a namespace that has none: create the chain, fill it, jump to it."""
    out: list[list[str]] = []
    for family in families:
        out.append(_cmd(family, "-N", CHAIN))
        out += chain_rules(spec, family)
        out.append(_cmd(family, "-A", *jump_rule(family)))
    return out


def restore_payload(spec: SidecarRules, family: str) -> str:
    """`iptables-restore --noflush` input that (re)creates the chain with its rules in one transaction.

    Declaring an existing user chain under --noflush empties it first, atomically with the new rules, so
    re-applying on a live pod never leaves a moment in which connections go out unredirected.
    """
    lines = [f"*{TABLE}", f":{CHAIN} - [0:0]"]
    lines += [shlex.join(rule[3:]) for rule in chain_rules(spec, family)]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def remove_commands(families: tuple[str, ...] = FAMILIES) -> list[list[str]]:
    """What removes them: the jump first (so nothing is half-redirected), then the chain's rules and the chain."""
    out: list[list[str]] = []
    for family in families:
        out.append(_cmd(family, "-D", *jump_rule(family)))
        out.append(_cmd(family, "-F", CHAIN))
        out.append(_cmd(family, "-X", CHAIN))
    return out


def shell_script(spec: SidecarRules, families: tuple[str, ...] = FAMILIES) -> str:
    """`--print`: an idempotent POSIX shell script doing what `--apply` does (for an init container)."""
    lines = [
        "# egressproxy transparent sidecar: redirect this network namespace's outbound TCP to port "
        f"{spec.port}" + (f" and UDP/53 to port {spec.dns_port}" if spec.dns_port is not None else ""),
        f"# except connections of uid {spec.proxy_uid} (the proxy), loopback and excluded networks. Run as root.",
        "set -e",
    ]
    for family in families:
        new = shlex.join(_cmd(family, "-N", CHAIN))
        flush = shlex.join(_cmd(family, "-F", CHAIN))
        lines.append(f"{new} 2>/dev/null || {flush}")
        lines += [shlex.join(rule) for rule in chain_rules(spec, family)]
        check = shlex.join(_cmd(family, "-C", *jump_rule(family)))
        add = shlex.join(_cmd(family, "-A", *jump_rule(family)))
        lines.append(f"{check} 2>/dev/null || {add}")
    return "\n".join(lines) + "\n"
