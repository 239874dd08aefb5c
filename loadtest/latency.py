"""Added latency at a moderate, fixed request rate: intercepted HTTPS through egressproxy with every policy on, against
direct HTTPS to the same origin and against bare mitmdump, in one run.

    python loadtest/latency.py --rate 100 --duration 20 --connections 4

Issue 16's target: at 100 intercepted requests/s with every policy on, the gateway adds under 2 ms at p50 and under
10 ms at p99 over direct. What happens (everything on 127.0.0.1, every loop bounded):

1. The bench origin (loadtest/origin.py, its own process) with its throwaway PKI, as loadtest/run.py starts it.
2. `egressproxy-full`: `egressproxy run` on loadtest/full_policy.py's every-policy-on config (credential injection,
   capture into the store, metrics, access log, local rate limit, GeoIP region, CEL); `mitmdump` as run.py starts
   it; with `--targets ...,egressproxy` also run.py's routing-only gateway.
3. A preflight per target (2 s at 10 req/s, one connection: it must answer, and it warms certificate caches).
4. `--rounds` rounds; in each, every target in turn (alternating, so drift on the shared machine falls on all of
   them) gets loadtest/client.py in open-loop mode (`--rate`): `--connections` keep-alive connections, the
   requests spread evenly over them at the fixed total rate, `--warmup` seconds unmeasured then
   `--duration / --rounds` seconds measured. `direct` is the same client speaking TLS straight to the origin
   (scenario `direct-tls`); a proxy target tunnels with CONNECT and speaks TLS to the proxy (scenario `intercept`).
5. Per target, the latencies of all rounds pooled: p50 / p90 / p99 / max, with the added latency (target minus
   direct at each percentile) and the proxy's CPU per request; then the verdict against the target.

Latency runs from writing the request to having read the whole answer; in open loop a request held back by the
previous answer on its connection counts from its scheduled time (client.py's docstring). `--profile FILE` runs
the full-policy gateway under cProfile, switched on for the measured rounds only (SIGUSR1 on, SIGUSR2 off and
written), so start-up, config compilation and preflight are not in it; it profiles the event-loop thread (slower:
compare shares and call counts, not times), and prints its hotspots.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def _ensure_venv() -> None:
    """Re-run this script under the project's virtualenv when started by another interpreter (run.py would
    re-run itself, not this script)."""
    try:
        import mitmproxy  # noqa: F401
        import mmdb_writer  # noqa: F401
    except ImportError:
        venv_python = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
        if venv_python.exists() and Path(sys.executable).resolve() != venv_python.resolve():
            os.execv(str(venv_python), [str(venv_python), str(Path(__file__).resolve()), *sys.argv[1:]])
        raise


_ensure_venv()

import run  # noqa: E402  (loadtest/ is sys.path[0] when run as a script)
from full_policy import FULL_POLICY_NOTE, FullPolicyConfig, write_full_policy_config  # noqa: E402
from run import HERE, REPO, Managed, Origin, Proxy  # noqa: E402

TARGETS = ("direct", "mitmdump", "egressproxy-full", "egressproxy")
TARGET_P50_MS, TARGET_P99_MS = 2.0, 10.0  # issue 16: added latency over direct at 100 intercepted req/s
PERCENTILES = (0.50, 0.90, 0.99)


# --- the pieces under test ------------------------------------------------------------------------------------


def gateway_ca(work: Path) -> Path:
    """`egressproxy ca init` once per run: the interception CA's Secret manifest (and `ca.crt` beside it)."""
    ca_dir = work / "gateway-ca"
    if not (ca_dir / "ca-secret.yaml").exists():
        out = subprocess.run([*run.egressproxy_cmd(), "ca", "init", "--out", str(ca_dir)], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"egressproxy ca init failed:\n{out.stdout}{out.stderr}")
    return ca_dir / "ca-secret.yaml"


def start_full_gateway(work: Path, origin: Origin, profile: Path | None) -> tuple[Proxy, FullPolicyConfig]:
    """`egressproxy run` on the every-policy-on config, ready once `GET /ready` answers 200."""
    secret = gateway_ca(work)
    config = write_full_policy_config(work, origin_ca=origin.ca_cert, passthrough_port=origin.passthrough_port,
                                      gateway_ca_secret=secret)
    name = "egressproxy-full"
    port, admin, ready, metrics = run.free_port(), run.free_port(), run.free_port(), run.free_port()
    args = ["run", *config.run_args, "--mode", f"regular@127.0.0.1:{port}", "--admin-addr", f"127.0.0.1:{admin}",
            "--ready-addr", f"127.0.0.1:{ready}", "--metrics-addr", f"127.0.0.1:{metrics}",
            "--data-dir", str(work / f"{name}-data")]
    cmd = [*run.egressproxy_cmd(), *args]
    if profile is not None:
        cmd = [sys.executable, str(Path(__file__).resolve()), PROFILED_GATEWAY, str(profile), *args]
    managed = run.start(name, cmd, work / f"{name}.log", cwd=REPO)
    try:
        run.wait_until(lambda: run.http_ok(ready, "/ready"), "GET /ready = 200", managed, 60)
    except Exception:
        managed.stop()
        raise
    return Proxy(name, managed, port, secret.parent / "ca.crt"), config


def start_target(name: str, work: Path, origin: Origin, profile: Path | None,
                 started: list[Managed]) -> tuple[Proxy | None, FullPolicyConfig | None]:
    if name == "direct":
        return None, None
    if name == "egressproxy-full":
        proxy, config = start_full_gateway(work, origin, profile)
    else:
        gateway_ca(work)  # run.start_gateway reuses the CA it finds there
        proxy, config = run.start_proxy(name, work, origin, None), None
    started.append(proxy.managed)
    return proxy, config


# --- profiling the measured window only -----------------------------------------------------------------------

PROFILED_GATEWAY = "--profiled-gateway"  # `latency.py --profiled-gateway OUT <egressproxy args>`: the gateway itself


def profiled_gateway(out: str, argv: list[str]) -> int:
    """`egressproxy <argv>` in this process with a cProfile of its main (event-loop) thread, on from SIGUSR1 until
    SIGUSR2, which writes the stats to `out`."""
    from egressproxy.cli import main as egressproxy_main

    profiler = cProfile.Profile()

    def stop(*_: object) -> None:
        profiler.disable()
        profiler.dump_stats(out + ".part")
        os.replace(out + ".part", out)  # whole, or not there yet

    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    signal.signal(signal.SIGUSR2, stop)
    return egressproxy_main(argv)


def profile_window(proxy: Proxy | None, path: Path | None, on: bool) -> None:
    """Switch the profiled gateway's profiler on, or off (then wait until its stats are written)."""
    if proxy is None or path is None:
        return
    if on:
        path.unlink(missing_ok=True)
        proxy.managed.proc.send_signal(signal.SIGUSR1)
        return
    proxy.managed.proc.send_signal(signal.SIGUSR2)
    run.wait_until(path.exists, "profile written", proxy.managed, 30)


# --- measuring ------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One measured window of one target."""

    target: str
    requests: int
    errors: int
    latencies_us: list[int]
    proxy_cpu_s: float
    loop_cpu_s: float = 0.0  # the proxy's main thread only: the event loop every request waits on
    other_cpu: float = 0.0  # percent of one core: the machine's busy time that is none of this run's processes
    error_samples: dict[str, int] = field(default_factory=dict)


def client_cmd(target: str, proxy: Proxy | None, origin: Origin, rate: float, connections: int, start_at: float,
               warmup: float, duration: float) -> list[str]:
    cmd = [sys.executable, str(HERE / "client.py"), "--target", f"127.0.0.1:{origin.https_port}",
           "--connections", str(connections), "--rate", f"{rate:g}", "--start-at", f"{start_at:.6f}",
           "--warmup", f"{warmup:g}", "--duration", f"{duration:g}"]
    if proxy is None:
        return [*cmd, "--scenario", "direct-tls", "--ca", str(origin.ca_cert)]
    return [*cmd, "--scenario", "intercept", "--proxy", f"127.0.0.1:{proxy.port}", "--ca", str(proxy.ca_cert)]


def loop_cpu_seconds(proxy: Proxy | None) -> float:
    """CPU of the proxy's main thread (its event loop; writer threads excluded), in seconds."""
    if proxy is None:
        return 0.0
    pid = proxy.managed.proc.pid
    try:
        with open(f"/proc/{pid}/task/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / run.CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def proxy_cpu_seconds(proxy: Proxy | None) -> float:
    if proxy is None:
        return 0.0
    return sum(run.proc_cpu_ticks(p) for p in run.descendants(proxy.managed.proc.pid)) / run.CLK_TCK


def measure(target: str, proxy: Proxy | None, origin: Origin, rate: float, connections: int, warmup: float,
            duration: float) -> Sample:
    """One client process for one window; the proxy's CPU over the whole client run (warm-up included)."""
    start_at = time.time() + 0.3
    cmd = client_cmd(target, proxy, origin, rate, connections, start_at, warmup, duration)
    cpu_before, origin_before = proxy_cpu_seconds(proxy), run.proc_cpu_ticks(origin.managed.proc.pid)
    loop_before = loop_cpu_seconds(proxy)
    busy_before, began = run.machine_busy_ticks(), time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=warmup + duration + 30)
    elapsed = time.monotonic() - began
    cpu = proxy_cpu_seconds(proxy) - cpu_before
    loop = loop_cpu_seconds(proxy) - loop_before
    busy = (run.machine_busy_ticks() - busy_before) / run.CLK_TCK
    origin_cpu = (run.proc_cpu_ticks(origin.managed.proc.pid) - origin_before) / run.CLK_TCK
    if out.returncode != 0:
        raise RuntimeError(f"client for {target} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout)
    other = max(0.0, busy - cpu - origin_cpu - float(result["cpu_seconds"])) / elapsed * 100
    # The CPU was spent over warm-up and window alike: scale it to the window's share of the requests sent.
    share = duration / (warmup + duration) if warmup + duration else 1.0
    return Sample(target, int(result["requests"]), int(result["errors"]), list(result["latencies_us"]), cpu * share,
                  loop * share, other, dict(result["error_samples"]))


def preflight(target: str, proxy: Proxy | None, origin: Origin) -> str | None:
    s = measure(target, proxy, origin, 10, 1, 0.0, 2.0)  # the first CONNECT mints a certificate: give it time
    if s.requests > 0 and s.errors == 0:
        return None
    return f"{target} preflight: {s.requests} ok, {s.errors} errors: {s.error_samples or 'no request completed'}"


# --- reporting ------------------------------------------------------------------------------------------------


def pct(sorted_us: list[int], q: float) -> float:
    """The q-quantile in milliseconds (nearest rank)."""
    return run.percentile(sorted_us, q)


@dataclass
class Summary:
    target: str
    samples: list[Sample]

    @property
    def latencies(self) -> list[int]:
        return sorted(v for s in self.samples for v in s.latencies_us)

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.samples)

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.samples)

    def quantiles(self) -> dict[float, float]:
        values = self.latencies
        return {q: pct(values, q) for q in PERCENTILES} | {1.0: values[-1] / 1000 if values else 0.0}

    def cpu_ms_per_request(self, loop_only: bool = False) -> float:
        spent = sum(s.loop_cpu_s if loop_only else s.proxy_cpu_s for s in self.samples)
        return 1000 * spent / self.requests if self.requests else 0.0


def render(summaries: list[Summary], rate: float, seconds: float) -> str:
    direct = next((s.quantiles() for s in summaries if s.target == "direct"), None)
    header = ["target", "requests", "errors", "achieved req/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
              "added p50", "added p90", "added p99", "proxy CPU ms/req", "loop thread ms/req"]
    rows = []
    for s in summaries:
        q = s.quantiles()
        added = [f"{q[p] - direct[p]:+.2f}" if direct and s.target != "direct" else "-" for p in PERCENTILES]
        rows.append([s.target, str(s.requests), str(s.errors), f"{s.requests / seconds:.1f}",
                     *(f"{q[p]:.2f}" for p in (*PERCENTILES, 1.0)), *added,
                     *((f"{s.cpu_ms_per_request():.2f}", f"{s.cpu_ms_per_request(True):.2f}") if s.target != "direct"
                       else ("-", "-"))])
    return run._grid(header, rows) + f"\n(target rate {rate:g} req/s; added = target minus direct, ms)"


def verdict(summaries: list[Summary]) -> str | None:
    by = {s.target: s.quantiles() for s in summaries}
    if "direct" not in by or "egressproxy-full" not in by:
        return None
    p50 = by["egressproxy-full"][0.50] - by["direct"][0.50]
    p99 = by["egressproxy-full"][0.99] - by["direct"][0.99]
    ok = p50 < TARGET_P50_MS and p99 < TARGET_P99_MS
    return (f"{'MEETS' if ok else 'MISSES'} issue 16's target: egressproxy-full adds {p50:.2f} ms at p50 "
            f"(target < {TARGET_P50_MS:g}) and {p99:.2f} ms at p99 (target < {TARGET_P99_MS:g}) over direct")


def policy_evidence(config: FullPolicyConfig | None) -> str | None:
    """The access-log lines the full gateway wrote: evidence that its policies ran on the measured requests."""
    if config is None:
        return None
    try:
        lines = sum(1 for _ in config.access_log.open())
    except OSError:
        lines = 0
    return f"egressproxy-full wrote {lines} access-log lines ({config.access_log.name})"


# --- main -----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=100.0, help="requests per second, in total (default 100)")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per target, over all rounds "
                                                                "(default 20)")
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds the duration is split into (default 4)")
    p.add_argument("--connections", type=int, default=4, help="keep-alive connections per target (default 4)")
    p.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each window (default 0.5)")
    p.add_argument("--targets", default="direct,mitmdump,egressproxy-full",
                   help=f"comma-separated, of {', '.join(TARGETS)} (default direct,mitmdump,egressproxy-full; "
                        "egressproxy is run.py's routing-only gateway)")
    p.add_argument("--body-size", type=int, default=64, help="origin response body bytes (default 64)")
    p.add_argument("--profile", type=Path, metavar="FILE",
                   help="run egressproxy-full under cProfile, write its stats to FILE and print the hotspots")
    p.add_argument("--json", type=Path, help="also write every window's figures (latencies included) to this file")
    p.add_argument("--keep", action="store_true", help="keep the working directory (configs, logs, access log)")
    args = p.parse_args(argv)
    args.target_list = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = [t for t in args.target_list if t not in TARGETS]
    if bad or not args.target_list:
        p.error(f"unknown or missing target: {', '.join(bad) or '(none given)'}")
    if not (0 < args.rate <= 5000 and 0 < args.duration <= 300 and 1 <= args.rounds <= 50
            and 1 <= args.connections <= 256 and 0 <= args.warmup <= 10):
        p.error("--rate in (0, 5000], --duration in (0, 300], --rounds in [1, 50], --connections in [1, 256], "
                "--warmup in [0, 10]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="egressproxy-latency-"))
    info = run.versions()
    window = args.duration / args.rounds
    print(f"# egressproxy added latency, {info['date']}: nproc {info['nproc']}, Python {info['python']}, "
          f"mitmproxy {info['mitmproxy']}, {info['machine']}")
    print(f"# {' '.join(['python', 'loadtest/latency.py', *(argv if argv is not None else sys.argv[1:])])}")
    print(f"# open loop, {args.rate:g} req/s over {args.connections} keep-alive connections; {args.rounds} rounds x "
          f"{window:g} s measured (+{args.warmup:g} s warm-up) per target, alternating; body {args.body_size} B")
    print(f"# {FULL_POLICY_NOTE}")
    if args.profile:
        print("# PROFILING: egressproxy-full runs under cProfile; its latencies are not comparable")
    sys.stdout.flush()
    started: list[Managed] = []
    samples: list[Sample] = []
    failures: list[str] = []
    full_config: FullPolicyConfig | None = None
    try:
        origin = run.start_origin(work, args.body_size)
        started.append(origin.managed)
        proxies: dict[str, Proxy | None] = {}
        for name in args.target_list:
            profile = args.profile.resolve() if args.profile and name == "egressproxy-full" else None
            proxies[name], config = start_target(name, work, origin, profile, started)
            full_config = full_config or config
        usable = []
        for name, proxy in proxies.items():
            why = preflight(name, proxy, origin)
            if why is None:
                usable.append(name)
            else:
                failures.append(why)
                print(f"SKIP {why}", flush=True)
        profiled = proxies.get("egressproxy-full") if args.profile else None
        profile_path = args.profile.resolve() if args.profile else None
        profile_window(profiled, profile_path, on=True)
        for i in range(args.rounds):
            for name in usable:
                proxy = proxies[name]
                if proxy is not None and not proxy.managed.alive():
                    raise RuntimeError(f"{name} died:\n{proxy.managed.tail()}")
                s = measure(name, proxy, origin, args.rate, args.connections, args.warmup, window)
                samples.append(s)
                q = sorted(s.latencies_us)
                extra = f"  errors: {s.error_samples}" if s.errors else ""
                print(f"round {i + 1}/{args.rounds} {name:<17} {s.requests:6d} req  p50 {pct(q, 0.5):6.2f} ms  "
                      f"p99 {pct(q, 0.99):7.2f} ms  errors {s.errors}  other CPU {s.other_cpu:3.0f}%{extra}",
                      flush=True)
        profile_window(profiled, profile_path, on=False)
    finally:
        for managed in reversed(started):
            managed.stop()

    summaries = [Summary(n, [s for s in samples if s.target == n]) for n in args.target_list]
    summaries = [s for s in summaries if s.samples]
    print()
    print(render(summaries, args.rate, args.duration))
    others = sorted(s.other_cpu for s in samples)
    busy = others[len(others) // 2] if others else 0.0
    note = (f"NOTE: other work on the machine took a median {busy:.0f}% of a core during the windows: a process "
            "waiting for a core shows as latency here; re-run on a quiet machine" if busy > 30 else None)
    for line in (verdict(summaries), policy_evidence(full_config), note, *(f"FAILED {f}" for f in failures)):
        if line:
            print(line)
    if args.profile and args.profile.exists():
        run.print_profile("egressproxy-full", args.profile.resolve(),
                          sum(s.requests for s in samples if s.target == "egressproxy-full"))
    if args.json:
        args.json.write_text(json.dumps({"info": info, "argv": argv if argv is not None else sys.argv[1:],
                                         "samples": [s.__dict__ for s in samples]}))
    if args.keep:
        print(f"# working directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures or any(s.errors for s in summaries) else 0


if __name__ == "__main__":
    if sys.argv[1:2] == [PROFILED_GATEWAY]:
        sys.exit(profiled_gateway(sys.argv[2], sys.argv[3:]))
    sys.exit(main())
