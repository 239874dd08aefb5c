"""Transparent sidecar mode with real iptables rules in a network namespace (DESIGN.md section 1).

The "pod" is a fresh network namespace joined to the root namespace by a veth pair on a private /30 that the test
picks (10.254.x.y); nothing else is routed from the pod. Inside the pod:
- `egressproxy iptables --apply` installs the NAT rules;
- `egressproxy run --mode transparent@127.0.0.1:15001` runs as uid 15999 (the uid the rules exempt), through
  `setpriv` (it keeps CAP_DAC_READ_SEARCH only so that it can read the interpreter under a 0700 /root);
- curl, with no proxy settings at all, connects to origins that listen on the root side of the veth.
The gateway decides on the name the client sent (SNI for TLS, Host for plain HTTP) and dials that name, which
`upstreamTLS.hostAliases` maps back to the origin's address.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from egressproxy.sidecar_rules import CHAIN, SidecarRules, chain_rules
from tests.support.gateway import GatewayProcess
from tests.support.origins import HttpOrigin
from tests.support.pki import TestCA

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

PROXY_UID = 15999
CLIENT_UID = 15998
PROXY_PORT = 15001
CMD_TIMEOUT = 20
NAMES = ["api.example.test", "plain.example.test", "pass.example.test", "denied.example.test"]
V6_NAME = "api6.example.test"  # aliased to the origin's IPv6 address


def _skip_reason() -> str | None:
    if sys.platform != "linux":
        return "transparent mode needs Linux netfilter"
    if os.geteuid() != 0:
        return "needs root to create network namespaces and NAT rules"
    missing = [t for t in ("ip", "iptables", "iptables-restore", "ip6tables", "ip6tables-restore", "setpriv", "curl") if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install iproute2 iptables util-linux curl)"
    return None


_REASON = _skip_reason()
if _REASON is not None:
    pytestmark.append(pytest.mark.skip(reason=_REASON))


@pytest.fixture(scope="module")
def netns_works() -> None:
    """Skip (saying why) where namespaces or their nat table cannot be used, e.g. in an unprivileged container."""
    probe = f"egp-probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=CMD_TIMEOUT)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {made.stderr.strip()}")
    try:
        nat = subprocess.run(
            ["ip", "netns", "exec", probe, "iptables", "-t", "nat", "-S"], capture_output=True, text=True, timeout=CMD_TIMEOUT
        )
        if nat.returncode != 0:
            pytest.skip(f"the iptables nat table is unusable in a namespace: {nat.stderr.strip()}")
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=CMD_TIMEOUT)


def sh(*argv: str, check: bool = True, timeout: float = CMD_TIMEOUT, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}{result.stdout}")
    return result


@dataclass
class Pod:
    """A network namespace with a veth to the root namespace: host_ip (root side) <-> pod_ip (pod side).

    host_ip6/pod_ip6: the same on a private IPv6 /126, when this machine has IPv6.
    """

    ns: str
    host_if: str
    host_ip: str
    pod_ip: str
    host_ip6: str | None = None
    pod_ip6: str | None = None

    def exec(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(self, *argv: str, check: bool = True, timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return sh(*self.exec(*argv), check=check, timeout=timeout)

    def egressproxy_iptables(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "egressproxy", "iptables", "--proxy-uid", str(PROXY_UID), *args, check=check)

    def nat_rules(self, family: str = "iptables") -> list[str]:
        return self.run(family, "-t", "nat", "-S").stdout.splitlines()


def _pick_subnet() -> tuple[str, str]:
    """A /30 in 10.254.0.0/16 that no interface here uses yet: (root-side address, pod-side address)."""
    used = sh("ip", "-4", "-o", "addr", "show").stdout
    for _ in range(50):
        third, fourth = random.randrange(256), random.randrange(0, 256, 4)
        if f"10.254.{third}." not in used:
            return f"10.254.{third}.{fourth + 1}", f"10.254.{third}.{fourth + 2}"
    raise RuntimeError("no free 10.254.x.0/24 for the test veth")


@pytest.fixture(scope="module")
def pod(netns_works: None) -> Iterator[Pod]:
    token = secrets.token_hex(3)
    ns, host_if, pod_if = f"egp-{token}-{os.getpid()}", f"egp{token}h", f"egp{token}p"
    host_ip, pod_ip = _pick_subnet()
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", pod_if)
        try:
            sh("ip", "link", "set", pod_if, "netns", ns)
            sh("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
            sh("ip", "link", "set", host_if, "up")
            p = Pod(ns, host_if, host_ip, pod_ip)
            p.run("ip", "link", "set", "lo", "up")
            p.run("ip", "addr", "add", f"{pod_ip}/30", "dev", pod_if)
            if os.path.exists("/proc/net/if_inet6"):
                prefix = "fd" + secrets.token_hex(5)  # a random unique-local /48 (RFC 4193), then a /126 in it
                p.host_ip6 = f"{prefix[:4]}:{prefix[4:8]}:{prefix[8:]}::1"
                p.pod_ip6 = f"{prefix[:4]}:{prefix[4:8]}:{prefix[8:]}::2"
                sh("ip", "-6", "addr", "add", f"{p.host_ip6}/126", "dev", host_if, "nodad")
                p.run("ip", "-6", "addr", "add", f"{p.pod_ip6}/126", "dev", pod_if, "nodad")
            p.run("ip", "link", "set", pod_if, "up")
            yield p
        finally:
            sh("ip", "link", "del", host_if, check=False)  # gone already if the namespace took its peer down
    finally:
        sh("ip", "netns", "del", ns, check=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory, origin_ca: TestCA, gateway_ca: tuple[Path, str]) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("transparent-pki")
    cert, key = origin_ca.issue(*NAMES, V6_NAME).write(d, "origin")
    (d / "origin-ca.crt").write_bytes(origin_ca.cert_pem)
    return {"origin_cert": cert, "origin_key": key, "origin_ca": d / "origin-ca.crt", "gateway_ca": gateway_ca[0]}


@pytest.fixture(scope="module")
def origins(pod: Pod, pki: dict[str, Path]) -> Iterator[tuple[HttpOrigin, HttpOrigin]]:
    """An HTTPS origin (certificate for every test name) and a plain HTTP origin, on the root side of the veth."""
    tls = HttpOrigin(pod.host_ip, 0, tls=(pki["origin_cert"], pki["origin_key"]), name="tls-origin").__enter__()
    plain = HttpOrigin(pod.host_ip, 0, name="plain-origin").__enter__()
    try:
        yield tls, plain
    finally:
        tls.__exit__()
        plain.__exit__()


@pytest.fixture(scope="module")
def origin6(pod: Pod, pki: dict[str, Path]) -> Iterator[HttpOrigin | None]:
    """An HTTPS origin on the root side's IPv6 address (None without IPv6)."""
    if pod.host_ip6 is None:
        yield None
        return
    origin = HttpOrigin(pod.host_ip6, 0, tls=(pki["origin_cert"], pki["origin_key"]), name="tls-origin-v6").__enter__()
    try:
        yield origin
    finally:
        origin.__exit__()


def gateway_config(pod: Pod, origin_ca: TestCA, gateway_secret: str) -> list[str]:
    ca_pem = textwrap.indent(origin_ca.cert_pem.decode(), "    ")
    aliases = ", ".join(NAMES)
    v6_alias = f"\n            - ip: \"{pod.host_ip6}\"\n              hostnames: [{V6_NAME}]" if pod.host_ip6 else ""
    return [
        f"""
        apiVersion: clrk.apoxy.dev/v1alpha1
        kind: EgressGateway
        metadata: {{name: eg}}
        spec:
          defaultPolicy: deny-all
          listeners:
          - name: https
            protocol: HTTPS
            tls: {{mode: Terminate, caCertRef: {{name: egress-ca}}}}
          - name: http
            protocol: HTTP
          - name: passthrough
            protocol: TLS
            tls: {{mode: Passthrough}}
          upstreamTLS:
            additionalTrustBundleSecretRef: {{name: origin-ca}}
            hostAliases:
            - ip: {pod.host_ip}
              hostnames: [{aliases}]{v6_alias}
        """,
        """
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: api}
        spec:
          parentRefs: [{name: eg, sectionName: https}]
          hostnames: [api.example.test, api6.example.test]
          rules:
          - matches: [{path: {type: PathPrefix, value: /v1}}]
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: plain}
        spec:
          parentRefs: [{name: eg, sectionName: http}]
          hostnames: [plain.example.test]
          rules:
          - matches: [{path: {type: PathPrefix, value: /}}]
        ---
        apiVersion: gateway.networking.k8s.io/v1alpha2
        kind: TLSRoute
        metadata: {name: pass}
        spec:
          parentRefs: [{name: eg, sectionName: passthrough}]
          hostnames: [pass.example.test]
          rules:
          - {}
        """,
        gateway_secret,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: origin-ca\nstringData:\n  ca.crt: |\n" + ca_pem,
    ]


class PodGateway(GatewayProcess):
    """`egressproxy run` inside the pod namespace as PROXY_UID; side ports on the pod's veth address."""

    def __init__(self, pod: Pod, config: Path, data_dir: Path) -> None:
        # REDIRECT sends a pod's own connections to 127.0.0.1 (IPv4) or ::1 (IPv6): listen on both, nothing else.
        modes = [f"transparent@127.0.0.1:{PROXY_PORT}"] + ([f"transparent@::1:{PROXY_PORT}"] if pod.pod_ip6 else [])
        super().__init__(config, data_dir, modes=modes, env={"HOME": str(data_dir)})
        self.pod = pod

    def command(self) -> list[str]:
        cmd = super().command()
        side = {"--admin-addr", "--ready-addr", "--metrics-addr"}
        cmd = [a.replace("127.0.0.1:", f"{self.pod.pod_ip}:") if i and cmd[i - 1] in side else a for i, a in enumerate(cmd)]
        priv = [
            "setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}", "--clear-groups",
            "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
        ]
        return self.pod.exec(*priv, *cmd)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"egressproxy exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"http://{self.pod.pod_ip}:{self.ready_port}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"egressproxy not ready after {timeout}s:\n{self.logs()}")

    def metrics(self) -> str:
        return httpx.get(f"http://{self.pod.pod_ip}:{self.metrics_port}/metrics", timeout=10).text


@pytest.fixture(scope="module")
def sidecar(
    pod: Pod, origins: tuple[HttpOrigin, HttpOrigin], origin6: HttpOrigin | None, origin_ca: TestCA, gateway_ca: tuple[Path, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PodGateway]:
    base = tmp_path_factory.mktemp("transparent-gateway")
    config, data = base / "config", base / "data"
    config.mkdir()
    data.mkdir()
    os.chown(data, PROXY_UID, PROXY_UID)
    for i, doc in enumerate(gateway_config(pod, origin_ca, gateway_ca[1])):
        (config / f"{i:02d}.yaml").write_text(textwrap.dedent(doc))
    gw = PodGateway(pod, config, data)
    try:
        gw.start()
        applied = pod.egressproxy_iptables("--port", str(PROXY_PORT), "--apply")
        assert "OUTPUT jumps to it" in applied.stdout, applied.stderr
        yield gw
    finally:
        try:
            pod.egressproxy_iptables("--clean", check=False)
        finally:
            gw.stop()


@contextlib.contextmanager
def pod_gateway(
    pod: Pod, base: Path, config_yaml: str, *, extra_modes: tuple[str, ...] = (), iptables: tuple[str, ...] = ()
) -> Iterator[PodGateway]:
    """`egressproxy run` in the pod on one YAML config, with `egressproxy iptables --apply` (cleaned after)."""
    config, data = base / "config", base / "data"
    config.mkdir()
    data.mkdir()
    os.chown(data, PROXY_UID, PROXY_UID)
    (config / "gateway.yaml").write_text(textwrap.dedent(config_yaml))
    gw = PodGateway(pod, config, data)
    gw.modes = [*gw.modes, *extra_modes]
    try:
        gw.start()
        pod.egressproxy_iptables("--port", str(PROXY_PORT), *iptables, "--apply")
        yield gw
    finally:
        try:
            pod.egressproxy_iptables("--clean", check=False)
        finally:
            gw.stop()


def curl(pod: Pod, *args: str, uid: int | None = None) -> subprocess.CompletedProcess[str]:
    """curl inside the pod with no proxy settings at all (the client knows nothing of the gateway)."""
    prefix = []
    if uid is not None:  # reading the CA files under pytest's 0700 temp dir needs CAP_DAC_READ_SEARCH
        prefix = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    argv = pod.exec(*prefix, "curl", "-sS", "-v", "--noproxy", "*", "--max-time", "10", *args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})


def url(name: str, port: int, path: str = "/", scheme: str = "https") -> str:
    return f"{scheme}://{name}:{port}{path}"


def resolve(pod: Pod, name: str, port: int) -> list[str]:
    return ["--resolve", f"{name}:{port}:{pod.host_ip}"]


# --- the rules ----------------------------------------------------------------------------------------------


def test_apply_installs_exactly_the_generated_rules_once(pod: Pod, sidecar: PodGateway) -> None:
    spec = SidecarRules(proxy_uid=PROXY_UID, port=PROXY_PORT)
    again = pod.egressproxy_iptables("--port", str(PROXY_PORT), "--apply")  # idempotent: still one set of rules
    assert again.returncode == 0
    for family in ("iptables", "ip6tables"):
        rules = pod.nat_rules(family)
        assert rules.count(f"-A OUTPUT -j {CHAIN}") == 1
        assert [r for r in rules if r.startswith(f"-A {CHAIN} ")] == [" ".join(r[3:]) for r in chain_rules(spec, family)]


def test_clean_removes_every_rule_and_is_idempotent(netns_works: None) -> None:
    token = secrets.token_hex(3)
    ns = f"egp-{token}-clean"
    sh("ip", "netns", "add", ns)
    try:
        p = Pod(ns, "", "", "")
        before = p.nat_rules()
        p.egressproxy_iptables("--dns-port", "15053", "--exclude-cidr", "10.96.0.0/12", "--apply")
        assert f"-A OUTPUT -j {CHAIN}" in p.nat_rules()
        assert "-A EGRESSPROXY_OUTPUT -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053" in p.nat_rules()
        assert p.egressproxy_iptables("--clean").returncode == 0
        assert p.nat_rules() == before
        assert p.nat_rules("ip6tables") == [r for r in p.nat_rules("ip6tables") if CHAIN not in r]
        again = p.egressproxy_iptables("--clean")
        assert "nothing to remove" in again.stdout
    finally:
        sh("ip", "netns", "del", ns, check=False)


# --- traffic through the rules ------------------------------------------------------------------------------


def test_intercepted_https_reaches_an_allowed_origin(pod: Pod, sidecar: PodGateway, origins, pki) -> None:
    tls_origin, _ = origins
    port = tls_origin.port
    out = curl(pod, "--cacert", str(pki["gateway_ca"]), *resolve(pod, "api.example.test", port), url("api.example.test", port, "/v1/items"))
    assert out.returncode == 0, out.stderr + sidecar.logs()
    assert "issuer: CN=egress-ca" in out.stderr  # intercepted: the gateway's minted certificate
    seen = json.loads(out.stdout)
    assert (seen["path"], seen["headers"]["host"], seen["origin"]) == ("/v1/items", f"api.example.test:{port}", "tls-origin")


def test_intercepted_request_outside_the_route_rules_is_403(pod: Pod, sidecar: PodGateway, origins, pki) -> None:
    tls_origin, _ = origins
    port = tls_origin.port
    out = curl(pod, "-i", "--cacert", str(pki["gateway_ca"]), *resolve(pod, "api.example.test", port), url("api.example.test", port, "/admin"))
    assert out.returncode == 0, out.stderr
    assert "HTTP/1.1 403" in out.stdout or "HTTP/2 403" in out.stdout
    assert "x-egress-denied: no-route" in out.stdout
    assert not any(path == "/admin" for _, path, _ in tls_origin.requests)


def test_intercepted_host_header_must_agree_with_sni(pod: Pod, sidecar: PodGateway, origins, pki) -> None:
    tls_origin, _ = origins
    port = tls_origin.port
    out = curl(
        pod, "-i", "--cacert", str(pki["gateway_ca"]), "-H", "Host: denied.example.test",
        *resolve(pod, "api.example.test", port), url("api.example.test", port, "/v1/fronted"),
    )
    assert "x-egress-denied: host-mismatch" in out.stdout, out.stderr
    assert not any(path == "/v1/fronted" for _, path, _ in tls_origin.requests)


def test_tls_passthrough_reaches_the_origin_undecrypted(pod: Pod, sidecar: PodGateway, origins, pki) -> None:
    tls_origin, _ = origins
    port = tls_origin.port
    out = curl(pod, "--cacert", str(pki["origin_ca"]), *resolve(pod, "pass.example.test", port), url("pass.example.test", port, "/p"))
    assert out.returncode == 0, out.stderr + sidecar.logs()
    assert "issuer: CN=egressproxy test origins" in out.stderr  # the origin's own certificate: not intercepted
    assert json.loads(out.stdout)["headers"]["host"] == f"pass.example.test:{port}"


def test_denied_tls_connection_is_closed_without_reaching_the_origin(pod: Pod, sidecar: PodGateway, origins, pki) -> None:
    tls_origin, _ = origins
    port = tls_origin.port
    before = len(tls_origin.requests)
    for cafile in (pki["gateway_ca"], pki["origin_ca"]):
        out = curl(pod, "--cacert", str(cafile), *resolve(pod, "denied.example.test", port), url("denied.example.test", port, "/secret"))
        assert out.returncode != 0, out.stdout  # closed: no certificate, no response
        assert out.returncode != 28, "timed out instead of being closed"
    assert len(tls_origin.requests) == before


def test_tls_without_sni_is_closed(pod: Pod, sidecar: PodGateway, origins, pki) -> None:
    tls_origin, _ = origins
    before = len(tls_origin.requests)
    out = curl(pod, "--insecure", url(pod.host_ip, tls_origin.port, "/by-ip"))
    assert out.returncode != 0 and out.returncode != 28, out.stdout
    assert len(tls_origin.requests) == before


def test_plain_http_is_routed_by_its_host_header(pod: Pod, sidecar: PodGateway, origins) -> None:
    _, plain = origins
    port = plain.port
    out = curl(pod, *resolve(pod, "plain.example.test", port), url("plain.example.test", port, "/hello", scheme="http"))
    assert out.returncode == 0, out.stderr + sidecar.logs()
    seen = json.loads(out.stdout)
    assert (seen["path"], seen["headers"]["host"], seen["origin"]) == ("/hello", f"plain.example.test:{port}", "plain-origin")


def test_plain_http_to_a_denied_host_gets_403(pod: Pod, sidecar: PodGateway, origins) -> None:
    _, plain = origins
    port = plain.port
    before = len(plain.requests)
    out = curl(pod, "-i", *resolve(pod, "denied.example.test", port), url("denied.example.test", port, "/nope", scheme="http"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("HTTP/1.1 403"), out.stdout
    assert "x-egress-denied: no-route" in out.stdout
    body = json.loads(out.stdout.split("\n\n", 1)[1])  # text mode turned CRLF into LF
    assert body["reason"] == "no-route" and body["policy"] == "EgressGateway/default/eg"
    assert len(plain.requests) == before


def test_the_proxy_uid_is_exempt_and_other_uids_are_not(pod: Pod, sidecar: PodGateway, origins, pki) -> None:
    """The owner match exempts only the proxy's uid: any other user of the pod is redirected too."""
    tls_origin, _ = origins
    port = tls_origin.port
    args = ["--cacert", str(pki["origin_ca"]), *resolve(pod, "denied.example.test", port), url("denied.example.test", port, "/direct")]
    direct = curl(pod, *args, uid=PROXY_UID)
    assert direct.returncode == 0, direct.stderr  # not redirected: the proxy's own dials go out as they are
    other = curl(pod, *args, uid=CLIENT_UID)
    assert other.returncode not in (0, 28), other.stdout  # redirected, and denied


def test_non_http_tcp_is_closed_without_reaching_the_origin(pod: Pod, sidecar: PodGateway, origins) -> None:
    """Bytes that are neither TLS nor HTTP have no listener here (no TCP listener): closed, nothing relayed."""
    _, plain = origins
    before = len(plain.requests)
    probe = (
        "import socket; s = socket.create_connection((%r, %d), timeout=5); s.sendall(b'\\x00\\x01 not http\\r\\n\\r\\n'); "
        "s.settimeout(5); print(repr(s.recv(100)))" % (pod.host_ip, plain.port)
    )
    out = pod.run(sys.executable, "-c", probe, check=False)
    assert out.stdout.strip() == "b''" or "ConnectionResetError" in out.stderr, out.stdout + out.stderr
    assert len(plain.requests) == before


def test_ipv6_connections_are_redirected_too(pod: Pod, sidecar: PodGateway, origin6: HttpOrigin | None, pki) -> None:
    """ip6tables rules: an IPv6 client is intercepted exactly like an IPv4 one, and denials hold."""
    if origin6 is None:
        pytest.skip("no IPv6 on this machine")
    port = origin6.port
    resolve6 = ["--resolve", f"{V6_NAME}:{port}:[{pod.host_ip6}]"]
    out = curl(pod, "-6", "--cacert", str(pki["gateway_ca"]), *resolve6, url(V6_NAME, port, "/v1/six"))
    assert out.returncode == 0, out.stderr + sidecar.logs()
    assert "issuer: CN=egress-ca" in out.stderr
    assert json.loads(out.stdout)["origin"] == "tls-origin-v6"
    denied = curl(pod, "-6", "--cacert", str(pki["origin_ca"]), "--resolve", f"denied.example.test:{port}:[{pod.host_ip6}]", url("denied.example.test", port, "/v6-denied"))
    assert denied.returncode not in (0, 28), denied.stdout
    assert not any(path == "/v6-denied" for _, path, _ in origin6.requests)


def test_the_pods_own_addresses_are_not_redirected(pod: Pod, sidecar: PodGateway) -> None:
    """Loopback and the pod's own IP (routed over `lo`) stay local: the gateway's readiness port answers itself."""
    out = curl(pod, "-i", f"http://{pod.pod_ip}:{sidecar.ready_port}/ready")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("HTTP/1.1 200"), out.stdout  # redirected, it would have been a 403 no-route
    assert "x-egress-denied" not in out.stdout
