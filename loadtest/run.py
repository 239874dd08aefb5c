"""Compare `egressproxy run` with bare `mitmdump` (and squid) in one run: same client, same origin, same machine;
report ratios against mitmdump.

    python loadtest/run.py --duration 10 --concurrency 16 --scenarios plain,intercept,connect-new
    python loadtest/run.py --proxies egressproxy,egressproxy-full,egressproxy-w2,mitmdump,squid \
        --scenarios plain,passthrough,intercept,connect-new

What happens (everything on 127.0.0.1, every loop bounded in time and count):
1. A throwaway origin PKI; the origin (loadtest/origin.py) in its own process, plain HTTP and HTTPS ports.
2. The gateway: `egressproxy ca init`, a generated bench config (EgressGateway with an HTTPS Terminate listener and
   an HTTP listener, one catch-all HTTPRoute, the origin's root CA as upstream trust, ssrfGuard allowing
   127.0.0.1/32), `egressproxy run` on free ports; ready when `GET /ready` answers 200.
3. mitmdump: `--mode regular@127.0.0.1:PORT --set connection_strategy=lazy -q --set confdir=TMP
   --set ssl_verify_upstream_trusted_ca=ORIGIN_CA`; ready when the port accepts and its CA file exists.
4. For each scenario, a preflight request through each proxy, then `--runs` measured runs per proxy, alternating
   (A, B, A, B, ...) to cancel drift; each run is `--client-procs` client processes (loadtest/client.py) sharing
   `--concurrency` connections for `--warmup` + `--duration` seconds. CPU of every side is read from /proc.
5. A table: median requests/s over runs, median p50/p99 latency, errors, accepted connections per request, CPU
   (and CPU ms per 1,000 requests), peak RSS of the proxy's process tree; then every proxy / mitmdump.

Beside `egressproxy` (routing only) and `mitmdump`, `--proxies` takes `egressproxy-nocapture` (`--no-captures`),
`egressproxy-full` (every policy on: loadtest/full_policy.py), `egressproxy-w2` (`--workers 2`) and `squid`
(Debian's squid-openssl, ssl-bump and splice: loadtest/squid.py; skipped with the install command when missing).

Both proxies use the IP literal 127.0.0.1 as the destination, so both dial the same way (mitmdump has no host
aliases). Gateway API route hostnames are names, not IPs, so the gateway's route has no hostnames (a catch-all).
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _ensure_venv() -> None:
    """Re-run under the project's virtualenv when started by another interpreter (`python loadtest/run.py`)."""
    try:
        import cryptography  # noqa: F401
        import mitmproxy  # noqa: F401
    except ImportError:
        venv_python = REPO / ".venv" / "bin" / "python"
        if venv_python.exists() and Path(sys.executable).resolve() != venv_python.resolve():
            os.execv(str(venv_python), [str(venv_python), str(Path(__file__).resolve()), *sys.argv[1:]])
        raise


_ensure_venv()

from pki import write_origin_pki  # noqa: E402  (loadtest/ is sys.path[0] when run as a script)
from proc_stats import PeakRss, cpu_ms_per_1k, descendants, proc_cpu_ticks  # noqa: E402
from squid import find_squid, prepare_squid  # noqa: E402

# `egressproxy-nocapture` is the same gateway run with `--no-captures`: beside `egressproxy` (captures on, the
# default) it measures what the capture store costs, in the same run (docs/captures.md). `egressproxy-full` is the
# gateway with every policy on (loadtest/full_policy.py), `egressproxy-w2` the routing-only gateway with
# `--workers 2`, `squid` Debian's squid-openssl (loadtest/squid.py). Every ratio is against bare mitmdump.
# `egressproxy-untuned` is `egressproxy` with glibc malloc left at its defaults (EGRESSPROXY_MALLOC_TUNING=off,
# egressproxy/runtime/allocator.py): what the start-up tuning costs or saves, in the same run.
PROXIES = ("egressproxy", "mitmdump", "egressproxy-nocapture", "egressproxy-full", "egressproxy-w2", "squid",
           "egressproxy-untuned")
UNTUNED = "-untuned"
BASELINE = "mitmdump"
SCENARIOS = ("plain", "intercept", "passthrough", "connect-new")
# Scenarios where a client keeps its connection: a new accepted connection there is lost keep-alive.
KEEPALIVE = ("plain", "intercept", "passthrough")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- processes and /proc ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def passive_opens() -> int:
    """TCP connections this machine has accepted so far (`Tcp: PassiveOpens` of /proc/net/snmp), both legs of
    every proxy: a keep-alive run that accepts more than a few per hundred requests is losing its connections."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("PassiveOpens")])


class HandshakeCount:
    """Handshakes answered (SYN-ACKs sent) by the given local ports, from a `tcpdump` on loopback: unlike
    PassiveOpens it counts only this run's proxy and origin, whatever else the machine does. None of it when
    tcpdump is missing or may not capture (then `count` returns None and the PassiveOpens delta is used)."""

    def __init__(self, ports: list[int]) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        tcpdump = shutil.which("tcpdump")
        if tcpdump is None or not ports:
            return
        sources = " or ".join(f"src port {p}" for p in ports)
        bpf = f"tcp[tcpflags] & (tcp-syn|tcp-ack) == (tcp-syn|tcp-ack) and ({sources})"
        self.proc = subprocess.Popen([tcpdump, "-i", "lo", "-nn", "-l", "-q", "-tt", bpf],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def count(self, since: float, until: float) -> int | None:
        """Handshakes between the two wall-clock times (the capture is stopped)."""
        if self.proc is None:
            return None
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        if self.proc.returncode not in (0, -signal.SIGTERM):
            return None
        stamps = [float(line.split(None, 1)[0]) for line in out.decode(errors="replace").splitlines() if line[:1].isdigit()]
        return sum(1 for t in stamps if since <= t <= until)


def machine_busy_ticks() -> int:
    """Busy ticks of all CPUs together (for `other`: load on the machine that is none of ours)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values[:8]) - idle


class ProxyUnavailable(RuntimeError):
    """A proxy this machine cannot run (squid not installed, no full-policy config): skipped, not a crash."""


@dataclass
class Managed:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    group: bool = False  # started in its own session: stop signals the whole group (squid and its helpers)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.group:
            self._stop_group(timeout)
            return
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def _stop_group(self, timeout: float) -> None:
        """SIGTERM the process group (its id is the leader's pid), wait for the leader, give the rest 2 s, then
        SIGKILL whatever of the group is left: no helper outlives the run."""
        pgid = self.proc.pid
        if self.proc.poll() is None:
            _signal_group(pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 2.0
        while _signal_group(pgid, 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_group(pgid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(timeout=5)


def _signal_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False when it has no process left."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


# Every long-lived process this run started, in start order: main's `finally` stops them all, even one that was
# still starting when Ctrl-C or SIGTERM came.
LIVE: list[Managed] = []


def start(name: str, cmd: list[str], log: Path, group: bool = False, **kwargs: object) -> Managed:
    handle = open(log, "wb")
    try:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=group,  # type: ignore[call-overload]
                                **kwargs)
    finally:
        handle.close()
    LIVE.append(Managed(name, proc, log, group))
    return LIVE[-1]


def stop_all() -> None:
    while LIVE:
        LIVE.pop().stop()


def wait_until(check, what: str, managed: Managed, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not managed.alive():
            raise RuntimeError(f"{managed.name} exited with {managed.proc.returncode} before {what}:\n{managed.tail()}")
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{managed.name}: no {what} after {timeout:.0f}s:\n{managed.tail()}")


def http_ok(port: int, path: str) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status == 200
    except OSError:
        return False


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# --- the pieces under test ------------------------------------------------------------------------------------


@dataclass
class Origin:
    managed: Managed
    http_port: int
    https_port: int
    passthrough_port: int  # a second TLS port, taken by the gateway's Passthrough listener and mitmdump's ignore_hosts
    ca_cert: Path


def start_origin(work: Path, body_size: int) -> Origin:
    pki = write_origin_pki(work / "origin-pki")
    cmd = [sys.executable, str(HERE / "origin.py"), "--cert", str(pki.leaf_cert), "--key", str(pki.leaf_key),
           "--body-size", str(body_size)]
    log = work / "origin.log"
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(log, "wb"))
    managed = Managed("origin", proc, log)
    LIVE.append(managed)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline() if ready else b""
    if not line:
        managed.stop()
        raise RuntimeError(f"origin did not start:\n{managed.tail()}")
    ports = json.loads(line)
    return Origin(managed, int(ports["http"]), int(ports["https"]), int(ports["passthrough"]), pki.ca_cert)


BENCH_GATEWAY = """\
# Generated by loadtest/run.py. The destination is the IP literal 127.0.0.1 (as for mitmdump), and Gateway API
# route hostnames cannot be IPs, so the one HTTPRoute has no hostnames: it takes any host on both listeners.
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: bench}}
spec:
  defaultPolicy: deny-all
  listeners:
  - name: https
    protocol: HTTPS
    tls: {{mode: Terminate, caCertRef: {{name: egress-ca}}}}
  - name: http
    protocol: HTTP
  - name: tunnel
    protocol: TLS
    port: {passthrough_port}
    tls: {{mode: Passthrough}}
  upstreamTLS:
    additionalTrustBundleSecretRef: {{name: origin-ca}}
  ssrfGuard:
    allowCIDRs: [127.0.0.1/32]
  # The origin answers text/plain: listed so that its bodies are captured too when captures are on.
  otlp:
    captureBody: {{includeContentTypes: [text/plain, application/json]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: origin}}
spec:
  parentRefs:
  - {{name: bench, sectionName: https}}
  - {{name: bench, sectionName: http}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: tunnel}}
spec:
  parentRefs:
  - {{name: bench, sectionName: tunnel}}
"""

CONFIG_NOTE = (
    "gateway config: HTTPS Terminate + HTTP listeners and a TLS Passthrough listener on the origin's second TLS port "
    "(catch-all TLSRoute), one catch-all HTTPRoute (route hostnames cannot be IP "
    "literals), defaultPolicy deny-all, ssrfGuard.allowCIDRs [127.0.0.1/32], origin root CA as upstream trust; "
    "mitmdump: connection_strategy=lazy, ssl_verify_upstream_trusted_ca=<origin root CA>, ignore_hosts for the "
    "passthrough port; squid: ssl-bump (peek, stare, bump; mimicked leaves from a per-run RSA-2048 CA) and splice "
    "for the passthrough port, keep-alive both legs, no cache, no access log. All verify the origin (squid 5 "
    "cannot match an IP SAN: its domain-mismatch error alone is allowed)."
)


@dataclass
class Proxy:
    name: str
    managed: Managed
    port: int
    ca_cert: Path


def egressproxy_cmd() -> list[str]:
    return [sys.executable, "-m", "egressproxy"]


GATEWAY_WORKERS = 1  # set from --gateway-workers


def gateway_ca(work: Path) -> Path:
    """`egressproxy ca init` once per run, shared by every gateway variant; returns its directory."""
    ca_dir = work / "gateway-ca"
    if not (ca_dir / "ca-secret.yaml").exists():
        out = subprocess.run([*egressproxy_cmd(), "ca", "init", "--out", str(ca_dir)], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"egressproxy ca init failed:\n{out.stdout}{out.stderr}")
    return ca_dir


def routing_only_config(work: Path, origin: Origin, ca_dir: Path) -> list[str]:
    """The bench config (BENCH_GATEWAY); returns the `egressproxy run` arguments that load it."""
    config = work / "gateway-config"
    config.mkdir(exist_ok=True)
    (config / "gateway.yaml").write_text(BENCH_GATEWAY.format(passthrough_port=origin.passthrough_port))
    shutil.copy(ca_dir / "ca-secret.yaml", config / "egress-ca.yaml")
    pem = textwrap.indent(origin.ca_cert.read_text(), "    ")
    (config / "origin-ca.yaml").write_text(
        f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: origin-ca\nstringData:\n  ca.crt: |\n{pem}"
    )
    return ["-c", str(config)]


def full_policy_config(work: Path, origin: Origin, ca_dir: Path) -> list[str]:
    """The every-policy-on config of loadtest/full_policy.py (engineer "latency"); its `run` arguments."""
    try:
        from full_policy import write_full_policy_config
    except ImportError as e:
        raise ProxyUnavailable(f"egressproxy-full needs loadtest/full_policy.py (write_full_policy_config): {e}") from e
    full = write_full_policy_config(work, origin_ca=origin.ca_cert, passthrough_port=origin.passthrough_port,
                                    gateway_ca_secret=ca_dir / "ca-secret.yaml")
    return list(full.run_args)


def full_policy_note() -> str:
    try:
        from full_policy import FULL_POLICY_NOTE
    except ImportError:
        return "egressproxy-full: loadtest/full_policy.py is missing, it will be skipped"
    return str(FULL_POLICY_NOTE)


def gateway_workers(name: str) -> int:
    """`egressproxy-w2` runs two workers; every other variant `--gateway-workers` (default 1)."""
    return 2 if name == "egressproxy-w2" else GATEWAY_WORKERS


def start_gateway(work: Path, origin: Origin, profile: Path | None, name: str = "egressproxy") -> Proxy:
    """`name` ending in -untuned: the same gateway with glibc malloc at its defaults (A/B of the tuning)."""
    untuned = name.endswith(UNTUNED)
    ca_dir = gateway_ca(work)
    config_args = (full_policy_config if name == "egressproxy-full" else routing_only_config)(work, origin, ca_dir)
    port, admin, ready, metrics = free_port(), free_port(), free_port(), free_port()
    cmd = [*egressproxy_cmd(), "run", *config_args, "--mode", f"regular@127.0.0.1:{port}",
           "--admin-addr", f"127.0.0.1:{admin}", "--ready-addr", f"127.0.0.1:{ready}",
           "--metrics-addr", f"127.0.0.1:{metrics}", "--data-dir", str(work / f"{name}-data"),
           "--workers", str(gateway_workers(name))]
    if name.removesuffix(UNTUNED) == "egressproxy-nocapture":
        cmd.append("--no-captures")
    if profile is not None:
        cmd = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "egressproxy", *cmd[3:]]
    env = {**os.environ, "EGRESSPROXY_MALLOC_TUNING": "off"} if untuned else None
    managed = start(name, cmd, work / f"{name}.log", cwd=REPO, env=env)
    wait_until(lambda: http_ok(ready, "/ready"), "GET /ready = 200", managed, 60)
    return Proxy(name, managed, port, ca_dir / "ca.crt")


def mitmdump_path() -> str:
    beside = Path(sys.executable).parent / "mitmdump"
    if beside.exists():
        return str(beside)
    found = shutil.which("mitmdump")
    if found is None:
        raise RuntimeError("mitmdump not found beside the interpreter or on PATH")
    return found


def start_mitmdump(work: Path, origin: Origin, profile: Path | None) -> Proxy:
    confdir = work / "mitmdump-conf"
    confdir.mkdir(exist_ok=True)
    port = free_port()
    cmd = [mitmdump_path(), "--mode", f"regular@127.0.0.1:{port}", "--set", "connection_strategy=lazy", "-q",
           "--set", f"confdir={confdir}", "--set", f"ssl_verify_upstream_trusted_ca={origin.ca_cert}",
           "--set", f"ignore_hosts=^127\\.0\\.0\\.1:{origin.passthrough_port}$"]
    if profile is not None:
        cmd = [sys.executable, "-m", "cProfile", "-o", str(profile), *cmd]
    managed = start("mitmdump", cmd, work / "mitmdump.log", cwd=work)
    ca = confdir / "mitmproxy-ca-cert.pem"
    wait_until(lambda: ca.exists() and port_open(port), "listening port and CA", managed, 60)
    return Proxy("mitmdump", managed, port, ca)


def squid_version() -> str:
    """`squid 5.7` (the first line of `squid -v`), or `squid not installed`."""
    binary = find_squid()
    if binary is None:
        return "squid not installed"
    try:
        out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "squid (version unknown)"
    found = re.search(r"Version (\S+)", out)
    return f"squid {found.group(1)}" if found else "squid (version unknown)"


def start_squid(work: Path, origin: Origin) -> Proxy:
    """squid -N with a squid.conf generated for this run (loadtest/squid.py); ProxyUnavailable when not installed."""
    binary = find_squid()
    if binary is None:
        raise ProxyUnavailable("squid: not installed; apt-get update && apt-get install -y squid-openssl")
    port = free_port()
    try:
        layout = prepare_squid(work / "squid", port, origin.passthrough_port, origin.ca_cert)
    except RuntimeError as e:
        raise ProxyUnavailable(f"squid: {e}") from e
    managed = start("squid", [binary, "-N", "-f", str(layout.conf)], work / "squid.log", group=True, cwd=work)
    def listening() -> bool:  # squid's own word that it took the port, not merely something answering there
        log = layout.cache_log.read_text(errors="replace") if layout.cache_log.exists() else ""
        return f"local=127.0.0.1:{port} " in log and port_open(port)

    try:
        wait_until(listening, "listening port", managed, 30)
    except (RuntimeError, TimeoutError) as e:
        managed.stop()
        cache_log = layout.cache_log.read_text(errors="replace")[-2000:] if layout.cache_log.exists() else ""
        raise ProxyUnavailable(f"squid did not start: {e}\nsquid cache.log:\n{cache_log}") from e
    return Proxy("squid", managed, port, layout.ca_cert)


def start_proxy(name: str, work: Path, origin: Origin, profile: Path | None, attempts: int = 3) -> Proxy:
    """Start one proxy; retry on a port that another process took between our probe and its bind."""
    for attempt in range(attempts):
        try:
            if name.startswith("egressproxy"):
                return start_gateway(work, origin, profile, name)
            if name == "squid":
                return start_squid(work, origin)
            return start_mitmdump(work, origin, profile)
        except RuntimeError as e:  # ProxyUnavailable included: squid that lost its port race says so in cache.log
            if "in use" not in str(e) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


# --- measuring ------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    scenario: str
    proxy: str
    index: int
    duration: float
    requests: int = 0
    errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    proxy_cpu: float = 0.0  # percent of one core
    client_cpu: float = 0.0
    origin_cpu: float = 0.0
    other_cpu: float = 0.0  # the rest of the machine's busy time (other processes), percent of one core
    accepted: int = 0  # TCP connections accepted in the window, both legs (HandshakeCount, else passive_opens)
    accepted_source: str = ""
    proxy_cpu_ticks: int = 0  # CPU time of the proxy's process tree over the window, in clock ticks
    peak_rss_kib: int = 0  # the largest sum of VmRSS over the proxy's process tree, sampled every 100 ms
    error_samples: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration

    @property
    def accepted_per_request(self) -> float:
        return self.accepted / self.requests if self.requests else 0.0

    @property
    def cpu_ms_per_1k(self) -> float:
        """Proxy CPU milliseconds per 1,000 requests (the inverse of req/CPU-s, in the unit of issue 16)."""
        return cpu_ms_per_1k(self.proxy_cpu_ticks, CLK_TCK, self.requests)

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_kib / 1024

    @property
    def per_core(self) -> float:
        """Requests per proxy CPU-second: throughput normalised by the CPU the proxy actually got."""
        return self.requests / (self.proxy_cpu / 100 * self.duration) if self.proxy_cpu > 0 else 0.0


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] / 1000.0


def client_cmds(args: argparse.Namespace, scenario: str, proxy: Proxy | None, origin: Origin, start_at: float,
                warmup: float, duration: float, connections: int) -> list[list[str]]:
    target_port = target_port_of(scenario, origin)
    if args.client == "hey" and scenario in KEEPALIVE and proxy is not None:
        return [hey_cmd(args, scenario, proxy, target_port, duration, connections)]
    procs = max(1, min(args.client_procs, connections))
    shares = [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]
    cmds = []
    for share in shares:
        cmd = [sys.executable, str(HERE / "client.py"), "--scenario", scenario, "--target", f"127.0.0.1:{target_port}",
               "--connections", str(share), "--start-at", f"{start_at:.6f}", "--warmup", str(warmup),
               "--duration", str(duration)]
        if proxy is not None:
            cmd += ["--proxy", f"127.0.0.1:{proxy.port}"]
            if scenario == "passthrough":
                cmd += ["--ca", str(origin.ca_cert)]  # the tunnel is end to end: the origin's own certificate
            elif scenario != "plain":
                cmd += ["--ca", str(proxy.ca_cert)]
        cmds.append(cmd)
    return cmds


def target_port_of(scenario: str, origin: Origin) -> int:
    if scenario in ("plain", "direct"):
        return origin.http_port
    return origin.passthrough_port if scenario == "passthrough" else origin.https_port


def hey_cmd(args: argparse.Namespace, scenario: str, proxy: Proxy, target_port: int, duration: float,
            connections: int) -> list[str]:
    """`hey` (Go's HTTP client, keep-alive, HTTP/1.1): what found the lost keep-alive of issue 16. Go's transport
    dials a new connection whenever no idle one is ready, and drops it when the idle pool is full, so a proxy
    that is slow to answer CONNECT or closes connections shows up as accepted connections per request."""
    scheme = "http" if scenario == "plain" else "https"
    return [args.hey, "-z", f"{duration:g}s", "-c", str(connections), "-x", f"http://127.0.0.1:{proxy.port}",
            f"{scheme}://127.0.0.1:{target_port}/"]


def parse_hey(text: str) -> dict[str, object]:
    """The counts and latencies of hey's summary (it prints no per-request latencies: p50/p99 from its table)."""
    ok = sum(int(n) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", text) if code == "200")
    bad = sum(int(n) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", text) if code != "200")
    _, _, failures = text.partition("Error distribution:")
    errors = {m.strip()[:160]: int(n) for n, m in re.findall(r"\[(\d+)\]\t(.+)", failures)}
    pct = {int(q): float(v) * 1e6 for q, v in re.findall(r"(\d+)% in ([\d.]+) secs", text)}
    latencies = [int(pct.get(50, 0))] * 51 + [int(pct.get(99, 0))] * 49  # what `percentile` reads at 0.50 and 0.99
    return {"requests": ok, "errors": bad + sum(errors.values()), "error_samples": errors,
            "latencies_us": sorted(latencies)}


def abandon(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kill the processes of an interrupted run that are still running, and reap them."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def collect(clients: list[subprocess.Popen[bytes]], hey: bool, timeout: float) -> list[dict[str, Any]]:
    """Each client's parsed output (a client that failed or printed nothing raises)."""
    outputs = []
    for c in clients:
        try:
            out, err = c.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            c.kill()
            out, err = c.communicate(timeout=5)
        if c.returncode != 0 or not out.strip():
            raise RuntimeError(f"client failed ({c.returncode}): {err.decode(errors='replace')[-2000:]}")
        outputs.append(parse_hey(out.decode()) if hey else json.loads(out))
    return outputs


def measure(args: argparse.Namespace, scenario: str, proxy: Proxy | None, origin: Origin, index: int,
            warmup: float, duration: float, connections: int) -> RunResult:
    start_at = time.time() + 0.6  # time for the client interpreters to start
    cmds = client_cmds(args, scenario, proxy, origin, start_at, warmup, duration, connections)
    ports = [origin.http_port, origin.https_port, origin.passthrough_port] + ([proxy.port] if proxy is not None else [])
    handshakes = HandshakeCount(ports) if args.handshakes else HandshakeCount([])
    hey = cmds[0][0] == args.hey
    if hey:  # hey has no warm-up and no start time: it is measured over its whole run, from when it starts
        time.sleep(0.3 if handshakes.proc is not None else 0.0)  # tcpdump is capturing by then
        start_at, warmup = time.time(), 0.0
    clients = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in cmds]
    proxy_pids = descendants(proxy.managed.proc.pid) if proxy is not None else []
    rss = PeakRss(proxy.managed.proc.pid).start() if proxy is not None else None
    client_pids = [c.pid for c in clients]

    def sample() -> tuple[int, int, int, int, int]:
        return (sum(proc_cpu_ticks(p) for p in proxy_pids), sum(proc_cpu_ticks(p) for p in client_pids),
                proc_cpu_ticks(origin.managed.proc.pid), machine_busy_ticks(), passive_opens())

    try:
        time.sleep(max(0.0, start_at + warmup - time.time()))
        before, window_start = sample(), time.time()
        t0 = time.monotonic()
        time.sleep(max(0.0, start_at + warmup + duration - time.time()))
        after, window_end = sample(), time.time()
        elapsed = time.monotonic() - t0
        outputs = collect(clients, hey, warmup + duration + 30)
    except BaseException:  # Ctrl-C, SIGTERM, a failed client: no client or tcpdump outlives the run
        abandon([*clients, *([handshakes.proc] if handshakes.proc is not None else [])])
        raise
    finally:
        peak_rss_kib = rss.stop() if rss is not None else 0
    latencies = sorted(lat for o in outputs for lat in o["latencies_us"])
    result = RunResult(scenario, proxy.name if proxy is not None else "direct", index, duration)
    result.requests = sum(int(o["requests"]) for o in outputs)
    result.errors = sum(int(o["errors"]) for o in outputs)
    for o in outputs:
        for k, v in o["error_samples"].items():
            result.error_samples[k] = result.error_samples.get(k, 0) + int(v)
    result.p50_ms, result.p99_ms = percentile(latencies, 0.50), percentile(latencies, 0.99)
    result.proxy_cpu_ticks, result.peak_rss_kib = after[0] - before[0], peak_rss_kib
    counted = handshakes.count(window_start, window_end + (1.0 if hey else 0.0))
    result.accepted = counted if counted is not None else after[4] - before[4]
    result.accepted_source = "tcpdump" if counted is not None else "PassiveOpens"
    pct = [(a - b) / CLK_TCK / elapsed * 100 for a, b in zip(after[:4], before[:4])]
    result.proxy_cpu, result.client_cpu, result.origin_cpu = pct[0], pct[1], pct[2]
    result.other_cpu = max(0.0, pct[3] - pct[0] - pct[1] - pct[2])
    return result


def preflight(args: argparse.Namespace, scenario: str, proxy: Proxy, origin: Origin) -> str | None:
    """One connection for a moment: None when requests pass, else why not (and warms certificate caches).

    A proxy that answers some requests is measured (its errors show in the table); one that answers none is not.
    """
    r = measure(args, scenario, proxy, origin, -1, 0.0, 0.5, 1)
    if r.requests == 0 and r.errors == 0:  # nothing at all: on a busy machine the client may not have started yet
        r = measure(args, scenario, proxy, origin, -1, 0.0, 2.0, 1)
    if r.requests > 0:
        return None
    samples = "; ".join(f"{k} (x{v})" for k, v in r.error_samples.items()) or "no request completed"
    return f"{proxy.name} {scenario} preflight: {r.requests} ok, {r.errors} errors: {samples}"


# --- reporting ------------------------------------------------------------------------------------------------


@dataclass
class Summary:
    scenario: str
    proxy: str
    runs: list[RunResult]

    def med(self, attr: str) -> float:
        values = [getattr(r, attr) for r in self.runs]
        return statistics.median(values) if values else 0.0

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)

    @property
    def peak_rss_mib(self) -> float:
        """The peak over all runs (not a median: the most memory the proxy needed for this scenario)."""
        return max((r.peak_rss_mib for r in self.runs), default=0.0)


def render_table(summaries: list[Summary]) -> str:
    header = ["scenario", "proxy", "req/s", "runs req/s", "p50 ms", "p99 ms", "errors", "accepted/req", "proxy CPU%",
              "CPU ms/1k req", "peak RSS MiB", "client CPU%", "origin CPU%", "other CPU%"]
    rows = []
    for s in summaries:
        proxied = s.proxy != "direct"
        rows.append([
            s.scenario, s.proxy, f"{s.med('rps'):.0f}", "/".join(f"{r.rps:.0f}" for r in s.runs),
            f"{s.med('p50_ms'):.2f}", f"{s.med('p99_ms'):.2f}", str(s.errors),
            f"{s.med('accepted_per_request'):.3f}", f"{s.med('proxy_cpu'):.0f}",
            f"{s.med('cpu_ms_per_1k'):.0f}" if proxied else "-", f"{s.peak_rss_mib:.0f}" if proxied else "-",
            f"{s.med('client_cpu'):.0f}", f"{s.med('origin_cpu'):.0f}", f"{s.med('other_cpu'):.0f}",
        ])
    return _grid(header, rows)


def _ratio(x: float, y: float) -> float | None:
    return x / y if y else None


def ratio_rows(summaries: list[Summary], a_name: str = "egressproxy",
               b_name: str = BASELINE) -> list[dict[str, object]]:
    """`a_name` / `b_name` per scenario: req/s (and per A/B pair), req/CPU-s, CPU per request, p50, p99, peak RSS."""
    by = {(s.scenario, s.proxy): s for s in summaries}
    out: list[dict[str, object]] = []
    for scenario in dict.fromkeys(s.scenario for s in summaries):
        a, b = by.get((scenario, a_name)), by.get((scenario, b_name))
        if a is None or b is None:
            continue
        pairs = [_ratio(x.rps, y.rps) for x, y in zip(a.runs, b.runs)]
        known = [p for p in pairs if p is not None]
        out.append({
            "scenario": scenario,
            "proxy": a_name,
            "baseline": b_name,
            "rps": _ratio(a.med("rps"), b.med("rps")),
            "rps_pairs_median": statistics.median(known) if known else None,
            "per_core": _ratio(a.med("per_core"), b.med("per_core")),
            "cpu_per_request": _ratio(a.med("cpu_ms_per_1k"), b.med("cpu_ms_per_1k")),
            "p50": _ratio(a.med("p50_ms"), b.med("p50_ms")),
            "p99": _ratio(a.med("p99_ms"), b.med("p99_ms")),
            "peak_rss": _ratio(a.peak_rss_mib, b.peak_rss_mib),
            "run_ratios": pairs,
        })
    return out


def baseline_ratio_rows(summaries: list[Summary], proxies: list[str],
                        baseline: str = BASELINE) -> list[dict[str, object]]:
    """Every proxy of the run against the baseline (bare mitmdump), scenario by scenario in run order."""
    rows = [row for name in proxies if name != baseline for row in ratio_rows(summaries, name, baseline)]
    order = {s: i for i, s in enumerate(dict.fromkeys(s.scenario for s in summaries))}
    return sorted(rows, key=lambda r: order[str(r["scenario"])])  # stable: proxies keep --proxies order


RATIO_LEGEND = ("req/s and req/CPU-s ratios above 1.00x: the proxy beats the baseline; CPU/req, p50, p99 and peak "
                "RSS ratios below 1.00x: the proxy beats the baseline")


def render_ratios(ratios: list[dict[str, object]]) -> str:
    def fmt(v: object) -> str:
        return f"{v:.2f}x" if isinstance(v, float) else "n/a"

    header = ["scenario", "proxy", "req/s ratio", "per A/B pair", "median of pairs", "req/CPU-s ratio",
              "CPU/req ratio", "p50 ratio", "p99 ratio", "peak RSS ratio"]
    rows = [[str(r["scenario"]), str(r["proxy"]), fmt(r["rps"]),
             "/".join(fmt(x) for x in r["run_ratios"]),  # type: ignore[attr-defined]
             fmt(r["rps_pairs_median"]), fmt(r["per_core"]), fmt(r["cpu_per_request"]), fmt(r["p50"]),
             fmt(r["p99"]), fmt(r["peak_rss"])] for r in ratios]
    return _grid(header, rows)


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)])


def versions() -> dict[str, str]:
    import mitmproxy.version

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "mitmproxy": mitmproxy.version.VERSION,
        "machine": f"{platform.system()} {platform.release()} {platform.machine()}",
    }


# --- main -----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per run (default 8)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run (default 1)")
    p.add_argument("--concurrency", type=int, default=16, help="client connections in total (default 16)")
    p.add_argument("--scenarios", default="plain,intercept,connect-new",
                   help=f"comma-separated, of {', '.join(SCENARIOS)} (default all)")
    p.add_argument("--proxies", default="egressproxy,mitmdump",
                   help="comma-separated, of egressproxy (routing only), mitmdump (the baseline of every ratio), "
                        "egressproxy-nocapture (--no-captures: captures on vs off), egressproxy-full (every policy "
                        "on, loadtest/full_policy.py), egressproxy-w2 (--workers 2), egressproxy-untuned (glibc "
                        "malloc not tuned), squid (apt-get install "
                        "squid-openssl; skipped with a message when missing); default egressproxy,mitmdump")
    p.add_argument("--runs", type=int, default=3, help="measured runs per proxy and scenario, alternating (default 3)")
    p.add_argument("--client-procs", type=int, default=1, help="client processes sharing the connections (default 1)")
    p.add_argument("--body-size", type=int, default=64, help="origin response body bytes (default 64)")
    p.add_argument("--no-calibrate", action="store_true",
                   help="skip the short client->origin run that shows the harness's own ceiling")
    p.add_argument("--json", type=Path, help="also write every run's numbers to this file")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="run each proxy under cProfile, write DIR/<proxy>.pstats and print the hotspots "
                        "(slows the proxies: the numbers of such a run are not comparable with normal runs)")
    p.add_argument("--keep", action="store_true", help="keep the working directory (configs, logs)")
    p.add_argument("--client", choices=("python", "hey"), default="python",
                   help="the keep-alive scenarios' client: loadtest/client.py (default) or hey (Go's transport, "
                        "which churns connections when a proxy is slow to answer CONNECT; `apt-get install hey`)")
    p.add_argument("--no-handshakes", dest="handshakes", action="store_false",
                   help="count accepted connections with the machine-wide PassiveOpens only, not with tcpdump "
                        "on loopback for this run's ports (default: tcpdump when it is installed and may capture)")
    p.add_argument("--hey", default="hey", help="the hey binary (default: hey on PATH)")
    p.add_argument("--gateway-workers", type=int, default=1, metavar="N",
                   help="run the gateway with --workers N (default 1: one process, like mitmdump)")
    args = p.parse_args(argv)
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.proxy_list = [s.strip() for s in args.proxies.split(",") if s.strip()]
    bad = [s for s in args.scenario_list if s not in SCENARIOS] + [x for x in args.proxy_list if x not in PROXIES]
    if bad or not args.scenario_list or not args.proxy_list:
        p.error(f"unknown or missing scenario/proxy: {', '.join(bad) or '(none given)'}")
    if not (0 < args.duration <= 600 and 0 <= args.warmup <= 60 and 1 <= args.runs <= 20):
        p.error("--duration must be in (0, 600], --warmup in [0, 60], --runs in [1, 20]")
    if args.client == "hey" and shutil.which(args.hey) is None:
        p.error(f"--client hey: {args.hey} not found (apt-get install hey)")
    if not (1 <= args.concurrency <= 1024 and 1 <= args.client_procs <= 16):
        p.error("--concurrency must be in [1, 1024], --client-procs in [1, 16]")
    return args


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM ends the run like Ctrl-C: through main's `finally`, which stops every process it started."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="egressproxy-loadtest-"))
    info = versions()
    if "squid" in args.proxy_list:
        info["squid"] = squid_version()
    print(f"# egressproxy load test, {info['date']}: nproc {info['nproc']}, Python {info['python']}, "
          f"mitmproxy {info['mitmproxy']}, {info['machine']}" + (f", {info['squid']}" if "squid" in info else ""))
    print(f"# {' '.join(['python', 'loadtest/run.py', *(argv if argv is not None else sys.argv[1:])])}")
    print(f"# {args.duration:g}s measured (+{args.warmup:g}s warm-up) x {args.runs} runs per proxy, alternating; "
          f"{args.concurrency} connections over {args.client_procs} client process(es); body {args.body_size} B")
    print(f"# {CONFIG_NOTE}")
    if "egressproxy-full" in args.proxy_list:
        print(f"# {full_policy_note()}")
    global GATEWAY_WORKERS
    GATEWAY_WORKERS = args.gateway_workers
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        print("# PROFILING: the proxies run under cProfile; their numbers are slower than normal")
    sys.stdout.flush()
    failures: list[str] = []
    results: list[RunResult] = []
    try:
        origin = start_origin(work, args.body_size)
        proxies: list[Proxy] = []
        for name in args.proxy_list:
            profile = (args.profile.resolve() / f"{name}.pstats") if args.profile else None
            try:
                proxy = start_proxy(name, work, origin, profile)
            except ProxyUnavailable as e:
                failures.append(str(e))
                print(f"SKIP {e}", flush=True)
                continue
            proxies.append(proxy)

        if not args.no_calibrate:
            r = measure(args, "direct", None, origin, 0, 0.5, min(args.duration, 3.0), args.concurrency)
            results.append(r)
            print(f"calibration: client -> origin directly, plain keep-alive: {r.rps:.0f} req/s "
                  f"(client CPU {r.client_cpu:.0f}%, origin CPU {r.origin_cpu:.0f}%), the harness's ceiling", flush=True)

        for scenario in args.scenario_list:
            usable = []
            for proxy in proxies:
                why = preflight(args, scenario, proxy, origin)
                if why is None:
                    usable.append(proxy)
                else:
                    failures.append(why)
                    print(f"SKIP {why}", flush=True)
            for i in range(args.runs):
                for proxy in usable:
                    if not proxy.managed.alive():
                        raise RuntimeError(f"{proxy.name} died:\n{proxy.managed.tail()}")
                    r = measure(args, scenario, proxy, origin, i, args.warmup, args.duration, args.concurrency)
                    results.append(r)
                    extra = f"; errors: {r.error_samples}" if r.errors else ""
                    print(f"run {i + 1}/{args.runs} {scenario:<11} {proxy.name:<21} {r.rps:8.0f} req/s  "
                          f"p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:7.2f} ms  errors {r.errors}  "
                          f"accepted/req {r.accepted_per_request:.3f}  proxy CPU "
                          f"{r.proxy_cpu:3.0f}% ({r.cpu_ms_per_1k:.0f} ms/1k req, peak RSS {r.peak_rss_mib:.0f} MiB)  "
                          f"client {r.client_cpu:3.0f}%  origin {r.origin_cpu:3.0f}%  "
                          f"other {r.other_cpu:3.0f}%{extra}", flush=True)
                    time.sleep(0.3)
    except KeyboardInterrupt:
        print("\ninterrupted: every process of the run is stopped; nothing is reported", file=sys.stderr, flush=True)
        return 130
    finally:
        stop_all()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    summaries: list[Summary] = []
    for scenario in ["direct", *args.scenario_list]:
        for proxy_name in (["direct"] if scenario == "direct" else args.proxy_list):
            runs = [r for r in results if r.scenario == scenario and r.proxy == proxy_name]
            if runs:
                summaries.append(Summary(scenario, proxy_name, runs))
    print()
    print(render_table(summaries))
    ratios = baseline_ratio_rows(summaries, args.proxy_list)
    if ratios:
        print()
        print(f"each proxy / bare {BASELINE}, medians over runs ({RATIO_LEGEND})")
        print(render_ratios(ratios))
    capture_ratios = ratio_rows(summaries, "egressproxy", "egressproxy-nocapture")
    if capture_ratios:
        print()
        print("captures on / off: egressproxy / egressproxy-nocapture (1.00x: capture costs nothing; 0.90x: 10% fewer req/s)")
        print(render_ratios(capture_ratios))
    worker_ratios = ratio_rows(summaries, "egressproxy-w2", "egressproxy")
    if worker_ratios:
        print()
        print("two workers / one: egressproxy-w2 / egressproxy (issue 16's target: req/s >= 1.80x)")
        print(render_ratios(worker_ratios))
    busy = [r.other_cpu for r in results if r.proxy != "direct"]
    if busy and statistics.median(busy) > 30:
        print(f"\nNOTE: other work on the machine took a median {statistics.median(busy):.0f}% of a core during the "
              "runs; req/s are depressed and noisy, prefer CPU ms/1k req (and the CPU/req ratio) and re-run when "
              "it is quieter")
    for s in summaries:
        if s.errors:
            print(f"ERRORS {s.scenario} through {s.proxy}: {s.errors} failed requests in the measured windows; "
                  "its row is not a like-for-like figure until they are 0 (the per-run lines show the first kinds)")
    for why in failures:
        print(f"FAILED {why}")
    if args.profile:
        requests = {name: sum(r.requests for r in results if r.proxy == name) for name in args.proxy_list}
        for name in args.proxy_list:
            path = args.profile.resolve() / f"{name}.pstats"
            if path.exists():
                print_profile(name, path, requests[name])
    if args.json:
        args.json.write_text(json.dumps({
            "info": info, "argv": argv if argv is not None else sys.argv[1:], "config_note": CONFIG_NOTE,
            "runs": [{**{k: v for k, v in r.__dict__.items()}, "rps": r.rps, "per_core": r.per_core,
                      "cpu_ms_per_1k": r.cpu_ms_per_1k, "peak_rss_mib": r.peak_rss_mib,
                      "accepted_per_request": r.accepted_per_request} for r in results],
            "ratios": ratios, "capture_ratios": capture_ratios, "worker_ratios": worker_ratios,
        }, indent=2))
    if args.keep:
        print(f"# working directory kept: {work}")
    return 1 if failures else 0


def print_profile(name: str, path: Path, requests: int, limit: int = 25) -> None:
    """Top functions by own and by cumulative time, and the share of the proxy's time in our own code."""
    import io
    import pstats

    stats = pstats.Stats(str(path))
    ours = sum(tt for (fn, _, _), (_, _, tt, _, _) in stats.stats.items()  # type: ignore[attr-defined]
               if fn.startswith((str(REPO / "egressproxy"), str(REPO / "addons"))))
    print(f"\n# {name} profile ({path}): {stats.total_tt:.2f} s profiled, {requests} measured requests; "  # type: ignore[attr-defined]
          f"own time in egressproxy/ and addons/: {ours:.2f} s")
    for order in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(str(path), stream=buf).strip_dirs().sort_stats(order).print_stats(limit)
        lines = [line for line in buf.getvalue().splitlines() if line.strip()]
        start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
        print(f"## top {limit} by {order}")
        print("\n".join(lines[start:]))


if __name__ == "__main__":
    sys.exit(main())
