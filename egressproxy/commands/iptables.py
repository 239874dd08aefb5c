"""`egressproxy iptables`: print, apply or remove the transparent sidecar's NAT rules (egressproxy.sidecar_rules).

`--print` (the default) writes an idempotent shell script and needs nothing. `--apply` (re)creates the
`EGRESSPROXY_OUTPUT` chain in one `iptables-restore --noflush` transaction per family, then adds the jump from
`OUTPUT` unless it is already there: running it twice leaves exactly one set of rules. `--clean` removes the jump
and the chain, and succeeds when there is nothing to remove. Both act on the network namespace they run in (run
them in the pod's: an init container, or `ip netns exec NS ...`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from egressproxy.sidecar_rules import (
    CHAIN,
    FAMILIES,
    TABLE,
    SidecarRules,
    chain_rules,
    jump_rule,
    restore_payload,
    shell_script,
)

__all__ = ["iptables", "IptablesError"]

_TIMEOUT = 30.0
_CAP_NET_ADMIN = 12


class IptablesError(Exception):
    pass


Runner = Callable[[Sequence[str], str | None], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise IptablesError(f"`{' '.join(argv)}` did not finish within {_TIMEOUT:.0f}s (xtables lock held?)") from None
    except OSError as e:
        raise IptablesError(f"could not run {argv[0]}: {e}") from None


def iptables(args: argparse.Namespace, out: TextIO, err: TextIO | None = None, runner: Runner = _run) -> int:
    err = err if err is not None else sys.stderr
    try:
        spec = SidecarRules(
            proxy_uid=args.proxy_uid, port=args.port, dns_port=args.dns_port, exclude_cidrs=tuple(args.exclude_cidr)
        )
    except ValueError as e:
        err.write(f"error: {e}\n")
        return 2
    if spec.proxy_uid == 0:
        err.write("warning: --proxy-uid 0 exempts every root process in the namespace from the gateway\n")
    if not (args.apply or args.clean):
        out.write(shell_script(spec))
        return 0
    try:
        families = _available_families()
        _check_privileges()
        if args.apply:
            _apply(spec, families, runner, out)
        else:
            _clean(families, runner, out)
    except IptablesError as e:
        err.write(f"error: {e}\n")
        return 1
    return 0


def _available_families() -> tuple[str, ...]:
    """iptables always; ip6tables too unless this namespace has no IPv6 at all (else v6 would bypass the proxy)."""
    missing = [f for f in (*FAMILIES, *(f"{f}-restore" for f in FAMILIES)) if shutil.which(f) is None]
    ipv6 = os.path.exists("/proc/net/if_inet6")
    needed = [m for m in missing if ipv6 or not m.startswith("ip6tables")]
    if needed:
        raise IptablesError(
            f"{', '.join(needed)} not found on PATH; install the iptables package "
            "(Debian/Ubuntu: apt-get install iptables; Alpine: apk add iptables ip6tables)"
        )
    return FAMILIES if ipv6 else ("iptables",)


def _check_privileges() -> None:
    if os.geteuid() == 0 or _has_cap_net_admin():
        return
    raise IptablesError("changing NAT rules needs root (or CAP_NET_ADMIN); run as root, e.g. in an init container")


def _has_cap_net_admin() -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_NET_ADMIN & 1)
    except (OSError, ValueError):
        pass
    return False


def _explain(argv: Sequence[str], result: subprocess.CompletedProcess[str]) -> IptablesError:
    detail = (result.stderr or result.stdout).strip()
    hint = ""
    if "Permission denied" in detail or "you must be root" in detail:
        hint = " (needs root or CAP_NET_ADMIN)"
    elif "Table does not exist" in detail or "can't initialize" in detail:
        hint = " (the kernel lacks the nat table for this family: load iptable_nat / ip6table_nat)"
    return IptablesError(f"`{' '.join(argv)}` failed with exit {result.returncode}: {detail}{hint}")


def _apply(spec: SidecarRules, families: tuple[str, ...], runner: Runner, out: TextIO) -> None:
    for family in families:
        restore = [f"{family}-restore", "--noflush"]
        result = runner(restore, restore_payload(spec, family))
        if result.returncode != 0:
            raise _explain(restore, result)
        check = [family, "-t", TABLE, "-C", *jump_rule(family)]
        if runner(check, None).returncode != 0:
            add = [family, "-t", TABLE, "-A", *jump_rule(family)]
            result = runner(add, None)
            if result.returncode != 0:
                raise _explain(add, result)
        out.write(f"{family}: {TABLE}/{CHAIN} holds {len(chain_rules(spec, family))} rules; OUTPUT jumps to it\n")
    out.write(
        f"outbound TCP now goes to port {spec.port}"
        + (f", UDP/53 to port {spec.dns_port}" if spec.dns_port is not None else "")
        + f"; uid {spec.proxy_uid} dials out directly\n"
    )


def _clean(families: tuple[str, ...], runner: Runner, out: TextIO) -> None:
    for family in families:
        listing = [family, "-t", TABLE, "-S"]  # the whole table: `-S CHAIN` errors differ between backends
        result = runner(listing, None)
        if result.returncode != 0:
            raise _explain(listing, result)
        if f"-N {CHAIN}" not in result.stdout.splitlines():
            out.write(f"{family}: no {TABLE}/{CHAIN} chain; nothing to remove\n")
            continue
        check = [family, "-t", TABLE, "-C", *jump_rule(family)]
        delete = [family, "-t", TABLE, "-D", *jump_rule(family)]
        for _ in range(64):  # one jump normally; more if someone added it by hand
            if runner(check, None).returncode != 0:
                break
            result = runner(delete, None)
            if result.returncode != 0:
                raise _explain(delete, result)
        for flag in ("-F", "-X"):
            argv = [family, "-t", TABLE, flag, CHAIN]
            result = runner(argv, None)
            if result.returncode != 0:
                raise _explain(argv, result)
        out.write(f"{family}: removed the OUTPUT jump and the {TABLE}/{CHAIN} chain\n")
