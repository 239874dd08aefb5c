"""Transparent UDP through TPROXY: a gateway node between a "pod" and an "origin" network namespace.

pod (10.253.N.2) --veth-- gw (10.253.N.1 | 10.251.N.1) --veth-- origin (10.251.N.2)
In the gw namespace an iptables TPROXY rule steers the pod's UDP to the gateway's transparent port, where
`egressproxy run --mode transparent@0.0.0.0:15001` relays what an EgressL4Route on a UDP listener allows.
Every address is on a veth this test creates; nothing leaves the namespaces.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "iptables")):
    pytestmark.append(pytest.mark.skip(reason="needs root, iproute2 and iptables (TPROXY) to build namespaces"))

ECHO = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], int(sys.argv[2])))
    s.settimeout(60)
    while True:
        data, addr = s.recvfrom(65535)
        s.sendto(b"echo:" + data, addr)
    """
)

CLIENT = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(float(sys.argv[3]))
    s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
    try:
        data, addr = s.recvfrom(65535)
        print(data.decode(), addr[0], addr[1])
    except TimeoutError:
        print("timeout")
    """
)


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {r.stderr}")
    return r


@pytest.fixture
def topology(tmp_path: Path):
    n = random.randrange(1, 250)
    tag = f"{os.getpid() % 10000}{n}"
    pod, gw, origin = f"eu-pod-{tag}", f"eu-gw-{tag}", f"eu-org-{tag}"
    pod_ip, gw_pod_ip = f"10.253.{n}.2", f"10.253.{n}.1"
    origin_ip, gw_origin_ip = f"10.251.{n}.2", f"10.251.{n}.1"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for ns in (pod, gw, origin):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        for a, b, a_ns, b_ns, a_ip, b_ip in (
            (f"eup{tag}", f"eug{tag}", pod, gw, pod_ip, gw_pod_ip),
            (f"euo{tag}", f"euh{tag}", origin, gw, origin_ip, gw_origin_ip),
        ):
            sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            sh("ip", "link", "set", a, "netns", a_ns)
            sh("ip", "link", "set", b, "netns", b_ns)
            sh("ip", "-n", a_ns, "addr", "add", f"{a_ip}/30", "dev", a)
            sh("ip", "-n", b_ns, "addr", "add", f"{b_ip}/30", "dev", b)
            sh("ip", "-n", a_ns, "link", "set", a, "up")
            sh("ip", "-n", b_ns, "link", "set", b, "up")
        sh("ip", "-n", pod, "route", "add", f"10.251.{n}.0/30", "via", gw_pod_ip)
        tproxy = ["ip", "netns", "exec", gw, "iptables", "-t", "mangle", "-A", "PREROUTING", "-i", f"eug{tag}", "-p", "udp",
                  "-j", "TPROXY", "--on-port", "15001", "--tproxy-mark", "0x1/0x1"]
        if sh(*tproxy, check=False).returncode != 0:
            pytest.skip("the TPROXY target is not available in this kernel")
        sh("ip", "-n", gw, "rule", "add", "fwmark", "0x1/0x1", "lookup", "100")
        sh("ip", "-n", gw, "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
        for port in (5300, 5301):
            procs.append(subprocess.Popen(["ip", "netns", "exec", origin, sys.executable, "-c", ECHO, origin_ip, str(port)]))
        yield {"pod": pod, "gw": gw, "origin_ip": origin_ip, "tmp": tmp_path, "procs": procs}
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=5)
        for ns in (pod, gw, origin):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def _config(origin_ip: str) -> str:
    return textwrap.dedent(
        f"""
        apiVersion: clrk.apoxy.dev/v1alpha1
        kind: EgressGateway
        metadata: {{name: eg}}
        spec:
          defaultPolicy: deny-all
          listeners:
          - {{name: udp, protocol: UDP}}
        ---
        apiVersion: clrk.apoxy.dev/v1alpha1
        kind: EgressL4Route
        metadata: {{name: echo}}
        spec:
          parentRefs: [{{name: eg, sectionName: udp}}]
          rules:
          - matches:
            - protocol: UDP
              destinationCIDRs: ["{origin_ip}/32"]
              ports: [{{port: 5300}}]
        """
    )


UDP_ROUTE = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: udp, protocol: UDP, port: 5301}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {name: any-destination}
spec:
  parentRefs: [{name: eg, sectionName: udp}]
  rules: [{}]
"""


def _start_gateway(topo: dict, config: str | None = None) -> subprocess.Popen[bytes]:
    cfg = topo["tmp"] / "cfg.yaml"
    cfg.write_text(config or _config(topo["origin_ip"]))
    log = open(topo["tmp"] / "gw.log", "wb")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", topo["gw"], sys.executable, "-m", "egressproxy", "run", "-c", str(cfg),
         "--mode", "transparent@0.0.0.0:15001", "--data-dir", str(topo["tmp"] / "data")],
        stdout=log, stderr=subprocess.STDOUT,
    )
    topo["procs"].append(proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = (topo["tmp"] / "gw.log").read_text(errors="replace")
        if "transparent-udp listening" in text:
            return proc
        assert proc.poll() is None, text
        time.sleep(0.1)
    raise TimeoutError((topo["tmp"] / "gw.log").read_text())


def _send(topo: dict, port: int, timeout: float = 3.0) -> str:
    out = sh("ip", "netns", "exec", topo["pod"], sys.executable, "-c", CLIENT, topo["origin_ip"], str(port), str(timeout))
    return out.stdout.strip()


def test_allowed_datagram_is_relayed_and_answered_from_the_original_destination(topology):
    _start_gateway(topology)
    reply = _send(topology, 5300)
    assert reply == f"echo:ping {topology['origin_ip']} 5300"


def test_datagram_to_a_destination_no_route_allows_is_dropped(topology):
    gw = _start_gateway(topology)
    assert _send(topology, 5301, timeout=1.5) == "timeout"
    assert gw.poll() is None
    assert _send(topology, 5300) == f"echo:ping {topology['origin_ip']} 5300"


def test_a_udproute_on_a_port_bound_listener_relays_that_port_only(topology):
    _start_gateway(topology, UDP_ROUTE)
    assert _send(topology, 5301) == f"echo:ping {topology['origin_ip']} 5301"
    assert _send(topology, 5300, timeout=1.5) == "timeout"
