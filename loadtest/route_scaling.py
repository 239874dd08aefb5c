"""Route scaling: what 10, 1,000 and 10,000 HTTPRoutes cost the gateway (issue 16, Build item 6).

    .venv/bin/python loadtest/route_scaling.py                     # in-process figures only (~1 min)
    .venv/bin/python loadtest/route_scaling.py --e2e --duration 5  # plus req/s through a real gateway, 10 vs 10,000
    .venv/bin/python loadtest/route_scaling.py --no-inprocess --startup [--baseline-tree DIR]  # validate/ready/RSS

In process, for each route count: the config's compile time (load + compile, median of `--compiles`), the memory
the compiled snapshot holds (tracemalloc, retained after compile), and per-request microseconds of the lookup
(`match_http`) and of the whole routing decision (`decide_request`) for a hit on the first route, a hit on the last
route, a hit through a wildcard hostname, a header-matched rule, and a miss (a host no route names). `--e2e` then
runs loadtest/run.py's `plain` scenario through two real gateways (the 10-route and the 10,000-route config, the
same catch-all route carrying the traffic in both), alternating A, B, A, B in one run: the ratio is the cost of the
extra routes end to end.

The generated routes are realistic rather than uniform: each has its own hostname (`svc-N.team-M.example.com`),
every 10th adds a wildcard (`*.zone-N.example.net`), every route has a PathPrefix rule and a catch-all rule, every
7th an Exact path rule and every 25th a rule matching a header (`x-tenant`). They attach to an HTTPS Terminate and
an HTTP listener; `defaultPolicy: deny-all`, so a miss is denied `no-route`.
"""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

COUNTS = (10, 1_000, 10_000)


def route_yaml(i: int, backend: str | None = None) -> str:
    """The i-th generated HTTPRoute (see the module docstring for its shape); every rule sends to `backend`
    (a Backend's name) when given, else to the requested destination."""
    hostnames = [f"svc-{i}.team-{i % 97}.example.com"]
    if i % 10 == 0:
        hostnames.append(f"*.zone-{i}.example.net")
    rules = [f"matches: [{{path: {{type: PathPrefix, value: /api/v{i % 3}}}}}]"]
    if i % 7 == 0:
        rules.append("matches: [{path: {type: Exact, value: /healthz}}]")
    if i % 25 == 0:
        rules.append(f"matches: [{{headers: [{{name: x-tenant, value: tenant-{i}}}]}}]")
    rules.append("")
    refs = f"backendRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: {backend}}}]" if backend else ""
    lines = ["  - {" + ", ".join(part for part in (rule, refs) if part) + "}" for rule in rules]
    return (
        f"---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r{i:05d}}}\nspec:\n"
        f"  parentRefs:\n  - {{name: bench, sectionName: https}}\n  - {{name: bench, sectionName: http}}\n"
        f"  hostnames: [{', '.join(repr(h) for h in hostnames)}]\n  rules:\n" + "\n".join(lines) + "\n"
    )


GATEWAY = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: bench}
spec:
  defaultPolicy: deny-all
  listeners:
  - name: https
    protocol: HTTPS
    tls: {mode: Terminate, caCertRef: {name: egress-ca}}
  - name: http
    protocol: HTTP
"""


def routes_yaml(count: int, backend: str | None = None) -> str:
    return "".join(route_yaml(i, backend) for i in range(count))


@functools.cache
def ca_yaml() -> str:
    from egressproxy.ca import create_ca, secret_manifest

    cert, key = create_ca("route-scaling")
    return secret_manifest("egress-ca", cert, key)


def compile_text(text: str):  # type: ignore[no-untyped-def]
    from egressproxy.compiler import compile_config
    from egressproxy.config.loader import load_text

    loaded = load_text(text, "routes.yaml")
    if loaded.problems:
        raise SystemExit(f"generated config does not load: {loaded.problems[:3]}")
    result = compile_config(loaded.resources)
    if not result.ok:
        raise SystemExit(f"generated config does not compile: {result.problems[:3]}")
    return result.snapshot


@dataclass
class Lookup:
    name: str
    host: str
    path: str
    headers: dict[str, str]
    expect_route: str | None  # `namespace/name` the decision must name (None: a miss)


def lookups(count: int) -> list[Lookup]:
    last = count - 1
    wild = (count - 1) // 10 * 10  # the last route with a wildcard
    tenant = (count - 1) // 25 * 25  # the last route with a header rule
    return [
        Lookup("first route", "svc-0.team-0.example.com", "/api/v0/items", {}, "default/r00000"),
        Lookup("last route", f"svc-{last}.team-{last % 97}.example.com", "/api/v1/items", {}, f"default/r{last:05d}"),
        Lookup("wildcard", f"a.b.zone-{wild}.example.net", "/api/v0/x", {}, f"default/r{wild:05d}"),
        Lookup("header rule", f"svc-{tenant}.team-{tenant % 97}.example.com", "/other", {"x-tenant": f"tenant-{tenant}"},
               f"default/r{tenant:05d}"),
        Lookup("miss", "unknown.example.org", "/", {}, None),
    ]


def per_call_us(run: Callable[[], object], budget_s: float = 0.3) -> float:
    """Median microseconds per call over 5 batches sized to fill about `budget_s` in all."""
    start = time.perf_counter()
    calls = 0
    while time.perf_counter() - start < 0.02:
        run()
        calls += 1
    per = (time.perf_counter() - start) / calls
    batch = max(1, int(budget_s / 5 / per))
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(batch):
            run()
        samples.append((time.perf_counter() - t0) / batch * 1e6)
    return statistics.median(samples)


@dataclass
class Figures:
    count: int
    compile_s: float
    memory_mib: float
    match_us: dict[str, float]
    decide_us: dict[str, float]


def measure_count(count: int, compiles: int) -> Figures:
    from egressproxy.decisions import RequestView, decide_request
    from egressproxy.matching import match_http

    text = GATEWAY + "---\n" + ca_yaml() + routes_yaml(count)
    times = []
    snapshot = None
    for _ in range(compiles):
        snapshot = None
        gc.collect()
        t0 = time.perf_counter()
        snapshot = compile_text(text)
        times.append(time.perf_counter() - t0)
    snapshot = None
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    snapshot = compile_text(text)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    listener = snapshot.gateway.listener("https")
    assert listener is not None
    match_us: dict[str, float] = {}
    decide_us: dict[str, float] = {}
    for case in lookups(count):
        view = RequestView(case.host, 443, "GET", case.path, case.headers, {}, "https")
        decision = decide_request(snapshot, listener, view, connection_host=case.host)
        got = f"{decision.route.ref.namespace}/{decision.route.ref.name}" if decision.route is not None else None
        if got != case.expect_route:
            raise SystemExit(f"{count} routes, {case.name}: decided {got}, expected {case.expect_route}")
        match_us[case.name] = per_call_us(lambda: match_http(listener, view.host, view.method, view.path, view.headers, view.query))
        decide_us[case.name] = per_call_us(lambda: decide_request(snapshot, listener, view, connection_host=view.host))
    return Figures(count, statistics.median(times), held / 2**20, match_us, decide_us)


def render(figures: list[Figures]) -> str:
    cases = list(figures[0].match_us)
    header = ["routes", "compile s", "snapshot MiB", *(f"match {c} us" for c in cases), *(f"decide {c} us" for c in cases)]
    rows = [
        [f"{f.count:,}", f"{f.compile_s:.2f}", f"{f.memory_mib:.1f}", *(f"{f.match_us[c]:.1f}" for c in cases),
         *(f"{f.decide_us[c]:.1f}" for c in cases)]
        for f in figures
    ]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# --- end to end -------------------------------------------------------------------------------------------------

ORIGIN_BACKEND = """---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: origin}}
spec: {{type: Static, static: {{hosts: [{{host: 127.0.0.1, port: {port}}}]}}}}
"""


def e2e_host(count: int) -> str:
    """The host the end-to-end client asks for: that of the last route with a header rule, so every request
    walks the index and is decided anew (a header match rules out reusing the connection's decision)."""
    i = (count - 1) // 25 * 25
    return f"svc-{i}.team-{i % 97}.example.com"


def e2e(args: argparse.Namespace) -> str:
    """`plain` through a 10-route and a 10,000-route gateway, alternating, in one run (loadtest/run.py's pieces)."""
    import shutil
    import tempfile

    import run

    work = Path(tempfile.mkdtemp(prefix="egressproxy-routes-"))
    started: list[run.Managed] = []
    original = run.BENCH_GATEWAY
    wait_until = run.wait_until
    # 10,000 routes take tens of seconds to load (YAML parsing): wait longer than run.py's 60 s for /ready.
    run.wait_until = lambda check, what, managed, timeout: wait_until(check, what, managed, max(timeout, 600))
    rss: dict[str, int] = {}
    client_cmds = run.client_cmds
    results: dict[str, list[run.RunResult]] = {}
    try:
        origin = run.start_origin(work, 64)
        started.append(origin.managed)
        proxies = []
        backend = ORIGIN_BACKEND.format(port=origin.http_port)
        for count in (COUNTS[0], COUNTS[-1]):
            # The bench config plus `count` named routes on the same listeners, each rule sending to the origin.
            added = backend + routes_yaml(count, "origin")
            run.BENCH_GATEWAY = original + added.replace("{", "{{").replace("}", "}}")
            t0 = time.monotonic()
            proxy = run.start_proxy(f"egressproxy-{count}", work, origin, None)
            started.append(proxy.managed)
            proxies.append(proxy)
            rss[proxy.name] = rss_kib(proxy.managed.proc.pid)
            print(f"{proxy.name}: ready in {time.monotonic() - t0:.1f} s, RSS {rss[proxy.name] / 1024:.0f} MiB", flush=True)
        run.BENCH_GATEWAY = original
        ns = argparse.Namespace(client="loadtest", client_procs=1, handshakes=False, hey="hey")
        targets = {p.name: f"{e2e_host(c)}:{origin.http_port}" for p, c in zip(proxies, (COUNTS[0], COUNTS[-1]))}

        def named_target(args: argparse.Namespace, scenario: str, proxy: run.Proxy | None, *rest: object) -> list[list[str]]:
            """run.py's client commands, asking for the route's host instead of 127.0.0.1 (via the proxy)."""
            cmds = client_cmds(args, scenario, proxy, *rest)  # type: ignore[arg-type]
            if proxy is not None:
                for cmd in cmds:
                    cmd[cmd.index("--target") + 1] = targets[proxy.name]
            return cmds

        run.client_cmds = named_target
        for proxy in proxies:
            why = run.preflight(ns, "plain", proxy, origin)
            if why is not None:
                raise SystemExit(why)
        for i in range(args.runs):
            for proxy in proxies:
                r = run.measure(ns, "plain", proxy, origin, i, 1.0, args.duration, args.concurrency)
                results.setdefault(proxy.name, []).append(r)
                print(f"run {i + 1}/{args.runs} {proxy.name:<18} {r.rps:7.0f} req/s  {r.per_core:7.0f} req/CPU-s  "
                      f"p50 {r.p50_ms:5.2f} ms  p99 {r.p99_ms:6.2f} ms  errors {r.errors}  other CPU {r.other_cpu:3.0f}%",
                      flush=True)
    finally:
        run.BENCH_GATEWAY = original
        run.wait_until = wait_until
        run.client_cmds = client_cmds
        for managed in reversed(started):
            managed.stop()
        shutil.rmtree(work, ignore_errors=True)
    small, large = (results[p.name] for p in proxies)
    pairs = [b.rps / a.rps for a, b in zip(small, large) if a.rps]
    cpu_pairs = [b.per_core / a.per_core for a, b in zip(small, large) if a.per_core]
    return (f"plain to {e2e_host(COUNTS[-1])} (10,000) / {e2e_host(COUNTS[0])} (10), {args.concurrency} connections, {args.runs} x {args.duration:g}s per gateway, alternating: "
            f"req/s {statistics.median(r.rps for r in small):.0f} (10 routes) vs "
            f"{statistics.median(r.rps for r in large):.0f} (10,000 routes), median of pairs "
            f"{statistics.median(pairs):.3f}x; req/CPU-s median of pairs {statistics.median(cpu_pairs):.3f}x")


# --- start-up: validate time, ready time, RSS ---------------------------------------------------------------------


@dataclass
class Startup:
    tree: str
    count: int
    validate_s: float  # wall time of `egressproxy validate -c`
    validate_cpu_s: float  # its CPU time (user + system): less noisy than wall time on a shared machine
    validate_peak_mib: float  # its peak RSS
    ready_s: float  # `egressproxy run` started -> GET /ready = 200
    rss_mib: float  # the gateway's RSS once ready


def validate_once(tree: Path, config: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of `egressproxy validate -c config` run from `tree`."""
    import os
    import subprocess

    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "egressproxy", "validate", "-c", str(config)], cwd=tree,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"validate of {config} failed in {tree} (exit {proc.returncode})")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def startup(args: argparse.Namespace) -> str:
    """For each route count, and each source tree alternating (this one, then `--baseline-tree` if given):
    `egressproxy validate` time and peak RSS, then `egressproxy run` time to ready and RSS once ready."""
    import shutil
    import tempfile

    import run

    trees = [("this", run.REPO)] + ([("baseline", Path(args.baseline_tree).resolve())] if args.baseline_tree else [])
    work = Path(tempfile.mkdtemp(prefix="egressproxy-startup-"))
    original, repo, wait_until = run.BENCH_GATEWAY, run.REPO, run.wait_until
    run.wait_until = lambda check, what, managed, timeout: wait_until(check, what, managed, max(timeout, 600))
    rows: list[Startup] = []
    try:
        origin = run.start_origin(work, 4)
        try:
            backend = ORIGIN_BACKEND.format(port=origin.http_port)
            for count in (int(c) for c in args.counts.split(",")):
                config = work / f"validate-{count}"
                config.mkdir()
                (config / "routes.yaml").write_text(GATEWAY + "---\n" + ca_yaml() + routes_yaml(count))
                for label, tree in trees:
                    wall, cpu, peak = validate_once(tree, config)
                    run.BENCH_GATEWAY = original + (backend + routes_yaml(count, "origin")).replace("{", "{{").replace("}", "}}")
                    run.REPO = tree
                    t0 = time.monotonic()
                    proxy = run.start_proxy(f"egressproxy-{label}-{count}", work, origin, None)
                    ready = time.monotonic() - t0
                    rss = rss_kib(proxy.managed.proc.pid) / 1024
                    proxy.managed.stop()
                    rows.append(Startup(label, count, wall, cpu, peak, ready, rss))
                    print(f"{label} {count:>6} routes: validate {wall:.1f} s ({cpu:.1f} CPU-s, peak {peak:.0f} MiB), "
                          f"ready {ready:.1f} s, RSS {rss:.0f} MiB", flush=True)
        finally:
            origin.managed.stop()
    finally:
        run.BENCH_GATEWAY, run.REPO, run.wait_until = original, repo, wait_until
        shutil.rmtree(work, ignore_errors=True)
    header = ["tree", "routes", "validate s", "validate CPU-s", "validate peak MiB", "ready s", "RSS when ready MiB"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += [f"| {r.tree} | {r.count:,} | {r.validate_s:.1f} | {r.validate_cpu_s:.1f} | {r.validate_peak_mib:.0f} | "
              f"{r.ready_s:.1f} | {r.rss_mib:.0f} |" for r in rows]
    return "\n".join(lines)


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS, KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", default=",".join(str(c) for c in COUNTS), help="route counts (comma-separated)")
    parser.add_argument("--compiles", type=int, default=3, help="compiles per count (the median is reported)")
    parser.add_argument("--e2e", action="store_true", help="also req/s through a real gateway, 10 vs 10,000 routes")
    parser.add_argument("--duration", type=float, default=5.0, help="--e2e: measured seconds per run")
    parser.add_argument("--runs", type=int, default=3, help="--e2e: runs per gateway, alternating")
    parser.add_argument("--concurrency", type=int, default=16, help="--e2e: keep-alive connections")
    parser.add_argument("--no-inprocess", action="store_true", help="skip the in-process figures")
    parser.add_argument("--startup", action="store_true",
                        help="validate time and peak RSS, gateway ready time and RSS, per count (subprocesses)")
    parser.add_argument("--baseline-tree", help="--startup: also run these from another source tree, alternating "
                        "(e.g. `git archive <commit> | tar -x -C DIR`)")
    args = parser.parse_args(argv)
    print(f"# python loadtest/route_scaling.py {' '.join(argv if argv is not None else sys.argv[1:])}", flush=True)
    if not args.no_inprocess:
        figures = [measure_count(int(c), args.compiles) for c in args.counts.split(",")]
        print(render(figures), flush=True)
    if args.startup:
        print(startup(args), flush=True)
    if args.e2e:
        print(e2e(args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
