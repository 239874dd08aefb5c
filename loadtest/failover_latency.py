"""The added latency of one failover hop, against a direct answer: loopback only, bounded, sequential.

    .venv/bin/python loadtest/failover_latency.py --requests 300

Two bench origins (loadtest/origin.py, own processes, HTTPS on 127.0.0.1): one answers 200, the other 503 with
`Retry-After: 0` (so the gateway never cools it down and every request fails over). One gateway serves three
routes, each to an AI Backend whose providers are those origins (hostOverride):

- `direct`: one provider (the 200 origin): the request goes straight to it, no hop;
- `hop`: two providers, the first answers 200: the request goes through the failover hop, no failover;
- `failover`: two providers, the first answers 503: through the hop, one failover to the second.

One client (httpx, keep-alive, through the explicit proxy) sends `--requests` POSTs to each, interleaved
(direct, hop, failover, direct, ...) so drift on the machine falls on all three, after `--warmup` unmeasured
rounds. Printed: median and p99 per route, and the hop's and the failover's added latency over `direct`.
"""

from __future__ import annotations

import argparse
import json
import select
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from pki import OriginPKI, write_origin_pki  # noqa: E402
from run import free_port, http_ok  # noqa: E402

import httpx  # noqa: E402

ROUTES = ("direct", "hop", "failover")


def start_origin(work: Path, name: str, pki: OriginPKI, status: str, headers: tuple[str, ...]) -> tuple[subprocess.Popen[bytes], int]:
    cmd = [sys.executable, str(HERE / "origin.py"), "--cert", str(pki.leaf_cert), "--key", str(pki.leaf_key), "--status", status]
    for h in headers:
        cmd += ["--header", h]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(work / f"{name}.log", "wb"))
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline() if ready else b""
    if not line:
        proc.kill()
        raise RuntimeError(f"origin {name} did not start")
    return proc, int(json.loads(line)["https"])


def _provider(name: str, port: int) -> str:
    return f"""      - name: {name}
        openai:
          authToken: {{kind: Inline, inline: bench-key}}
          hostOverride: {{host: 127.0.0.1, port: {port}}}"""


def _backend(route: str, ports: list[int]) -> str:
    groups = "".join(f"\n    - providers:\n{_provider(f'p{i}', port)}" for i, port in enumerate(ports))
    return f"""apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: {route}}}
spec:
  type: AI
  ai:
    priorityGroups:{groups}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {route}}}
spec:
  parentRefs: [{{name: bench, sectionName: https}}]
  hostnames: [{route}.bench.test]
  rules:
  - backendRefs: [{{group: gateway.kgateway.dev, kind: Backend, name: {route}}}]
"""


def write_config(config: Path, ca_secret: Path, origin_ca: Path, ok: int, busy: int) -> None:
    config.mkdir()
    shutil.copy(ca_secret, config / "egress-ca.yaml")
    pem = textwrap.indent(origin_ca.read_text(), "    ")
    (config / "origin-ca.yaml").write_text(f"apiVersion: v1\nkind: Secret\nmetadata: {{name: origin-ca}}\nstringData:\n  ca.crt: |\n{pem}")
    (config / "gateway.yaml").write_text(f"""apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: bench}}
spec:
  defaultPolicy: deny-all
  listeners:
  - {{name: https, protocol: HTTPS, tls: {{mode: Terminate, caCertRef: {{name: egress-ca}}}}}}
  upstreamTLS:
    additionalTrustBundleSecretRef: {{name: origin-ca}}
    hostAliases:
    - {{ip: 127.0.0.1, hostnames: [{", ".join(f"{r}.bench.test" for r in ROUTES)}]}}
""")
    (config / "routes.yaml").write_text("---\n".join([_backend("direct", [ok]), _backend("hop", [ok, busy]),
                                                     _backend("failover", [busy, ok])]))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=300, help="measured requests per route (max 5000)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    requests = max(1, min(args.requests, 5000))
    work = Path(tempfile.mkdtemp(prefix="egress-failover-latency-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pki = write_origin_pki(work / "pki")
        origin_ca = pki.ca_cert
        ok_proc, ok_port = start_origin(work, "ok", pki, "200 OK", ())
        busy_proc, busy_port = start_origin(work, "busy", pki, "503 Service Unavailable", ("Retry-After: 0",))
        procs += [ok_proc, busy_proc]
        ca_dir = work / "gateway-ca"
        subprocess.run([sys.executable, "-m", "egressproxy", "ca", "init", "--out", str(ca_dir)], cwd=REPO, check=True,
                       capture_output=True, timeout=60)
        write_config(work / "config", ca_dir / "ca-secret.yaml", origin_ca, ok_port, busy_port)
        port, ready = free_port(), free_port()
        cmd = [sys.executable, "-m", "egressproxy", "run", "-c", str(work / "config"), "--mode", f"regular@127.0.0.1:{port}",
               "--admin-addr", f"127.0.0.1:{free_port()}", "--ready-addr", f"127.0.0.1:{ready}",
               "--metrics-addr", f"127.0.0.1:{free_port()}", "--data-dir", str(work / "data")]
        gateway = subprocess.Popen(cmd, cwd=REPO, stdout=open(work / "gateway.log", "wb"), stderr=subprocess.STDOUT)
        procs.append(gateway)
        deadline = time.monotonic() + 60
        while not http_ok(ready, "/ready"):
            if time.monotonic() > deadline or gateway.poll() is not None:
                raise RuntimeError(f"the gateway did not become ready:\n{(work / 'gateway.log').read_text()[-3000:]}")
            time.sleep(0.1)
        verify = ssl.create_default_context(cafile=str(ca_dir / "ca.crt"))
        samples: dict[str, list[float]] = {r: [] for r in ROUTES}
        payload = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
        with httpx.Client(proxy=f"http://127.0.0.1:{port}", verify=verify, timeout=30) as client:
            for i in range(args.warmup + requests):
                for route in ROUTES:
                    started = time.perf_counter()
                    response = client.post(f"https://{route}.bench.test/v1/chat/completions", content=payload)
                    elapsed = time.perf_counter() - started
                    if response.status_code != 200:
                        raise RuntimeError(f"{route}: {response.status_code} {response.text[:200]}")
                    if i >= args.warmup:
                        samples[route].append(elapsed * 1000)
        print(f"{requests} sequential requests per route, keep-alive, loopback (ms)")
        print(f"{'route':<10} {'median':>8} {'p99':>8}")
        for route in ROUTES:
            print(f"{route:<10} {statistics.median(samples[route]):8.2f} {percentile(samples[route], 0.99):8.2f}")
        base_med, base_p99 = statistics.median(samples["direct"]), percentile(samples["direct"], 0.99)
        for route in ("hop", "failover"):
            med, p99 = statistics.median(samples[route]), percentile(samples[route], 0.99)
            print(f"added by {route:<9} median {med - base_med:+.2f} ms, p99 {p99 - base_p99:+.2f} ms")
        return 0
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
