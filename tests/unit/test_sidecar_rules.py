"""The transparent sidecar's NAT rules (egressproxy.sidecar_rules) and `egressproxy iptables` (no root needed)."""

from __future__ import annotations

import argparse
import io
import subprocess
from collections.abc import Sequence

import pytest

from egressproxy.cli import build_parser, main
from egressproxy.commands import iptables as command
from egressproxy.sidecar_rules import (
    CHAIN,
    SidecarRules,
    chain_rules,
    install_commands,
    remove_commands,
    restore_payload,
    shell_script,
)


def test_ipv4_chain_rules_exactly() -> None:
    spec = SidecarRules(proxy_uid=1337, port=15001, exclude_cidrs=("10.96.0.0/12", "fd00::/8", "169.254.169.254"))
    assert chain_rules(spec, "iptables") == [
        ["iptables", "-t", "nat", "-A", CHAIN, "-m", "owner", "--uid-owner", "1337", "-j", "RETURN"],
        ["iptables", "-t", "nat", "-A", CHAIN, "-d", "127.0.0.0/8", "-j", "RETURN"],
        ["iptables", "-t", "nat", "-A", CHAIN, "-o", "lo", "-j", "RETURN"],
        ["iptables", "-t", "nat", "-A", CHAIN, "-d", "10.96.0.0/12", "-j", "RETURN"],
        ["iptables", "-t", "nat", "-A", CHAIN, "-d", "169.254.169.254/32", "-j", "RETURN"],
        ["iptables", "-t", "nat", "-A", CHAIN, "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001"],
    ]


def test_ipv6_chain_rules_exactly_with_dns() -> None:
    spec = SidecarRules(proxy_uid=1337, port=15001, dns_port=15053, exclude_cidrs=("10.96.0.0/12", "FD00::/8"))
    assert chain_rules(spec, "ip6tables") == [
        ["ip6tables", "-t", "nat", "-A", CHAIN, "-m", "owner", "--uid-owner", "1337", "-j", "RETURN"],
        ["ip6tables", "-t", "nat", "-A", CHAIN, "-d", "::1/128", "-j", "RETURN"],
        ["ip6tables", "-t", "nat", "-A", CHAIN, "-o", "lo", "-j", "RETURN"],
        ["ip6tables", "-t", "nat", "-A", CHAIN, "-d", "fd00::/8", "-j", "RETURN"],
        ["ip6tables", "-t", "nat", "-A", CHAIN, "-p", "udp", "--dport", "53", "-j", "REDIRECT", "--to-ports", "15053"],
        ["ip6tables", "-t", "nat", "-A", CHAIN, "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001"],
    ]


def test_the_redirect_is_last_and_every_exemption_comes_before_it() -> None:
    spec = SidecarRules(proxy_uid=5, dns_port=53, exclude_cidrs=("192.168.0.0/16",))
    for family in ("iptables", "ip6tables"):
        rules = chain_rules(spec, family)
        assert rules[-1][-3:] == ["REDIRECT", "--to-ports", "15001"]
        targets = [r[r.index("-j") + 1] for r in rules]
        assert targets.index("REDIRECT") == len([t for t in targets if t == "RETURN"])


def test_install_and_remove_commands() -> None:
    spec = SidecarRules(proxy_uid=7, port=15001)
    install = install_commands(spec)
    assert install[0] == ["iptables", "-t", "nat", "-N", CHAIN]
    assert ["iptables", "-t", "nat", "-A", "OUTPUT", "-j", CHAIN] in install
    assert ["ip6tables", "-t", "nat", "-A", "OUTPUT", "-j", CHAIN] == install[-1]
    assert len(install) == 2 * (1 + 4 + 1)
    assert remove_commands(("iptables",)) == [
        ["iptables", "-t", "nat", "-D", "OUTPUT", "-j", CHAIN],
        ["iptables", "-t", "nat", "-F", CHAIN],
        ["iptables", "-t", "nat", "-X", CHAIN],
    ]


def test_restore_payload_replaces_the_chain_in_one_transaction() -> None:
    spec = SidecarRules(proxy_uid=7, port=15001)
    assert restore_payload(spec, "iptables") == (
        "*nat\n"
        f":{CHAIN} - [0:0]\n"
        f"-A {CHAIN} -m owner --uid-owner 7 -j RETURN\n"
        f"-A {CHAIN} -d 127.0.0.0/8 -j RETURN\n"
        f"-A {CHAIN} -o lo -j RETURN\n"
        f"-A {CHAIN} -p tcp -j REDIRECT --to-ports 15001\n"
        "COMMIT\n"
    )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"proxy_uid": -1}, "--proxy-uid"),
        ({"proxy_uid": 1, "port": 0}, "--port must be 1-65535"),
        ({"proxy_uid": 1, "port": 70000}, "--port must be 1-65535"),
        ({"proxy_uid": 1, "dns_port": 0}, "--dns-port must be 1-65535"),
        ({"proxy_uid": 1, "exclude_cidrs": ("10.0.0.1/8",)}, "host bits set"),
        ({"proxy_uid": 1, "exclude_cidrs": ("not-a-network",)}, "--exclude-cidr 'not-a-network'"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SidecarRules(**kwargs)


# --- the command ----------------------------------------------------------------------------------------------


def test_print_is_the_default_and_prints_an_idempotent_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["iptables", "--proxy-uid", "1337", "--exclude-cidr", "10.96.0.0/12"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "# egressproxy transparent sidecar: redirect this network namespace's outbound TCP to port 15001",
        "# except connections of uid 1337 (the proxy), loopback and excluded networks. Run as root.",
        "set -e",
        f"iptables -t nat -N {CHAIN} 2>/dev/null || iptables -t nat -F {CHAIN}",
        f"iptables -t nat -A {CHAIN} -m owner --uid-owner 1337 -j RETURN",
        f"iptables -t nat -A {CHAIN} -d 127.0.0.0/8 -j RETURN",
        f"iptables -t nat -A {CHAIN} -o lo -j RETURN",
        f"iptables -t nat -A {CHAIN} -d 10.96.0.0/12 -j RETURN",
        f"iptables -t nat -A {CHAIN} -p tcp -j REDIRECT --to-ports 15001",
        f"iptables -t nat -C OUTPUT -j {CHAIN} 2>/dev/null || iptables -t nat -A OUTPUT -j {CHAIN}",
        f"ip6tables -t nat -N {CHAIN} 2>/dev/null || ip6tables -t nat -F {CHAIN}",
        f"ip6tables -t nat -A {CHAIN} -m owner --uid-owner 1337 -j RETURN",
        f"ip6tables -t nat -A {CHAIN} -d ::1/128 -j RETURN",
        f"ip6tables -t nat -A {CHAIN} -o lo -j RETURN",
        f"ip6tables -t nat -A {CHAIN} -p tcp -j REDIRECT --to-ports 15001",
        f"ip6tables -t nat -C OUTPUT -j {CHAIN} 2>/dev/null || ip6tables -t nat -A OUTPUT -j {CHAIN}",
    ]
    assert main(["iptables", "--proxy-uid", "1337", "--exclude-cidr", "10.96.0.0/12", "--print"]) == 0
    assert capsys.readouterr().out == out


def test_print_with_port_and_dns_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["iptables", "--proxy-uid", "1", "--port", "15006", "--dns-port", "15053"]) == 0
    out = capsys.readouterr().out
    assert "outbound TCP to port 15006 and UDP/53 to port 15053" in out
    assert f"iptables -t nat -A {CHAIN} -p udp --dport 53 -j REDIRECT --to-ports 15053\n" in out
    assert f"ip6tables -t nat -A {CHAIN} -p tcp -j REDIRECT --to-ports 15006\n" in out


def test_print_script_matches_the_rules() -> None:
    spec = SidecarRules(proxy_uid=3, dns_port=5353)
    script = shell_script(spec)
    for family in ("iptables", "ip6tables"):
        for rule in chain_rules(spec, family):
            assert " ".join(rule) + "\n" in script


def test_bad_arguments_exit_2_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["iptables", "--proxy-uid", "1", "--exclude-cidr", "10.1.2.3/8"]) == 2
    assert "error: --exclude-cidr '10.1.2.3/8'" in capsys.readouterr().err


def test_proxy_uid_is_required() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["iptables"])


def test_modes_are_mutually_exclusive() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["iptables", "--proxy-uid", "1", "--apply", "--clean"])


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["iptables", *argv])


class FakeIptables:
    """Records commands and plays iptables: a nat table per family holding our chain and OUTPUT's rules."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.chains: dict[str, list[str] | None] = {"iptables": None, "ip6tables": None}
        self.jumps: dict[str, int] = {"iptables": 0, "ip6tables": 0}

    def __call__(self, argv: Sequence[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append((argv, stdin))
        family = argv[0].removesuffix("-restore")
        ok = subprocess.CompletedProcess(argv, 0, "", "")
        fail = subprocess.CompletedProcess(argv, 1, "", "iptables: Bad rule (does a matching rule exist in that chain?).\n")
        if argv[0].endswith("-restore"):
            assert argv[1:] == ["--noflush"] and stdin is not None
            self.chains[family] = [line for line in stdin.splitlines() if line.startswith("-A ")]
            return ok
        flag = argv[3]
        if flag == "-S":
            lines = ["-P OUTPUT ACCEPT"]
            if self.chains[family] is not None:
                lines.append(f"-N {CHAIN}")
            lines += [f"-A OUTPUT -j {CHAIN}"] * self.jumps[family]
            return subprocess.CompletedProcess(argv, 0, "\n".join(lines) + "\n", "")
        if flag == "-C":
            return ok if self.jumps[family] else fail
        if flag == "-A":
            self.jumps[family] += 1
            return ok
        if flag == "-D":
            if not self.jumps[family]:
                return fail
            self.jumps[family] -= 1
            return ok
        if flag == "-F":
            self.chains[family] = []
            return ok
        if flag == "-X":
            assert not self.jumps[family], "a referenced chain cannot be deleted"
            self.chains[family] = None
            return ok
        raise AssertionError(argv)


@pytest.fixture
def privileged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(command.os, "geteuid", lambda: 0)
    monkeypatch.setattr(command, "_available_families", lambda: ("iptables", "ip6tables"))


def test_apply_twice_leaves_one_set_of_rules(privileged: None) -> None:
    fake, out, err = FakeIptables(), io.StringIO(), io.StringIO()
    for _ in range(2):
        assert command.iptables(_args("--proxy-uid", "1337", "--apply"), out, err, runner=fake) == 0
    assert fake.jumps == {"iptables": 1, "ip6tables": 1}
    assert fake.chains["iptables"] == [" ".join(r[3:]) for r in chain_rules(SidecarRules(proxy_uid=1337), "iptables")]
    assert "OUTPUT jumps to it" in out.getvalue() and err.getvalue() == ""


def test_clean_removes_the_jump_then_the_chain_and_tolerates_nothing_to_remove(privileged: None) -> None:
    fake, out = FakeIptables(), io.StringIO()
    assert command.iptables(_args("--proxy-uid", "1", "--apply"), out, io.StringIO(), runner=fake) == 0
    fake.jumps["iptables"] += 1  # someone added the jump a second time by hand
    assert command.iptables(_args("--proxy-uid", "1", "--clean"), out, io.StringIO(), runner=fake) == 0
    assert fake.jumps == {"iptables": 0, "ip6tables": 0}
    assert fake.chains == {"iptables": None, "ip6tables": None}
    out = io.StringIO()
    assert command.iptables(_args("--proxy-uid", "1", "--clean"), out, io.StringIO(), runner=fake) == 0
    assert out.getvalue().count("nothing to remove") == 2


def test_apply_reports_a_failing_command(privileged: None) -> None:
    def runner(argv: Sequence[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(list(argv), 4, "", "iptables-restore v1.8.9 (nf_tables): Permission denied\n")

    err = io.StringIO()
    assert command.iptables(_args("--proxy-uid", "1", "--apply"), io.StringIO(), err, runner=runner) == 1
    assert "error: `iptables-restore --noflush` failed with exit 4" in err.getvalue()
    assert "needs root or CAP_NET_ADMIN" in err.getvalue()


def test_apply_without_iptables_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no iptables anywhere
    err = io.StringIO()
    assert command.iptables(_args("--proxy-uid", "1", "--apply"), io.StringIO(), err, runner=FakeIptables()) == 1
    assert "iptables" in err.getvalue() and "not found on PATH" in err.getvalue()
    assert "apt-get install iptables" in err.getvalue()


def test_apply_as_non_root_is_refused_before_running_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(command, "_available_families", lambda: ("iptables", "ip6tables"))
    monkeypatch.setattr(command.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(command, "_has_cap_net_admin", lambda: False)
    fake, err = FakeIptables(), io.StringIO()
    assert command.iptables(_args("--proxy-uid", "1", "--clean"), io.StringIO(), err, runner=fake) == 1
    assert "needs root (or CAP_NET_ADMIN)" in err.getvalue()
    assert fake.calls == []


def test_proxy_uid_zero_is_allowed_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["iptables", "--proxy-uid", "0"]) == 0
    assert "warning: --proxy-uid 0 exempts every root process" in capsys.readouterr().err
