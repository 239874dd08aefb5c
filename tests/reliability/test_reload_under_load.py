"""Reload under load: configuration generations applied while clients send requests without pause.

Each generation tags its answers: a route's ResponseHeaderModifier sets `x-generation: N` on what the origin
answers, and a DirectResponse answers `/direct` with the body `N`. Clients (kept-alive and one connection per
request) send without pause while the test rewrites the route file and calls `POST /reload`, generation after
generation. Asserted:

- no request lost: every request gets a 200 from some generation (no reset, no 5xx);
- per client, monotonic: a client never sees an older generation after a newer one answered it (with two
  workers: per connection; see the comment in the test and docs/reliability.md);
- `POST /reload` means applied: a request *sent* after it returned is answered by that generation or a newer one,
  by whichever worker takes it (with `--workers 2` this needs worker 0 to wait for the others).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.gateway_start import start_bound

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GENERATIONS = int(os.environ.get("EGRESS_RELOAD_GENERATIONS", "30"))
CLIENTS_PER_KIND = 2

GATEWAY = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: http, protocol: HTTP}
  upstreamTLS:
    hostAliases:
    - {ip: 127.0.0.1, hostnames: [gen.example.test]}
"""


def route(generation: int) -> str:
    """Generation N: origin answers carry `x-generation: N`; `/direct` is answered with the body `N`."""
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: gen}}
spec:
  parentRefs: [{{name: eg, sectionName: http}}]
  hostnames: [gen.example.test]
  rules:
  - matches: [{{path: {{type: Exact, value: /direct}}}}]
    filters:
    - type: ExtensionRef
      extensionRef: {{group: gateway.kgateway.dev, kind: DirectResponse, name: gen}}
  - filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{{name: x-generation, value: "{generation}"}}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: DirectResponse
metadata: {{name: gen}}
spec:
  status: 200
  body: "{generation}"
"""


@dataclass
class Answer:
    sent: float  # time.monotonic() before the request was sent
    generation: int


@dataclass
class Client:
    """One client's history; `keepalive` clients reuse one connection, the others open one per request."""

    name: str
    keepalive: bool
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def run(self, proxy: str, port: int, stop: threading.Event) -> None:
        client = httpx.Client(proxy=proxy, timeout=10) if self.keepalive else None
        i = 0
        try:
            while not stop.is_set():
                path = "/direct" if i % 2 else "/origin"
                url = f"http://gen.example.test:{port}{path}"
                sent = time.monotonic()
                try:
                    r = client.get(url) if client is not None else httpx.get(url, proxy=proxy, timeout=10)
                except httpx.HTTPError as e:
                    self.failures.append(f"{path}: {type(e).__name__}: {e}")
                    continue
                tag = r.text if path == "/direct" else r.headers.get("x-generation", "")
                if r.status_code != 200 or not tag.isdigit():
                    self.failures.append(f"{path}: {r.status_code} {r.headers.get('x-egress-error', '')} {r.text[:80]!r}")
                    continue
                self.answers.append(Answer(sent, int(tag)))
                i += 1
        finally:
            if client is not None:
                client.close()

    def went_back(self) -> list[tuple[int, int]]:
        """(newer, older) pairs where an older generation answered after a newer one."""
        out, highest = [], 0
        for a in self.answers:
            if a.generation < highest:
                out.append((highest, a.generation))
            highest = max(highest, a.generation)
        return out


def write_route(path: Path, generation: int) -> None:
    """Atomically: the gateway's file watcher must never read half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(route(generation))
    os.replace(tmp, path)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_generations_applied_under_load_lose_nothing_and_never_go_back(gateway, plain_origin, workers: int) -> None:
    origin = plain_origin()
    gw = start_bound(gateway, GATEWAY, route(1), listeners=workers, extra_args=["--workers", str(workers)])
    route_file = gw.configs[0] / "01.yaml"
    clients = [Client(f"keepalive-{i}", True) for i in range(CLIENTS_PER_KIND)]
    clients += [Client(f"new-connection-{i}", False) for i in range(CLIENTS_PER_KIND)]
    stop = threading.Event()
    threads = [threading.Thread(target=c.run, args=(gw.proxy_url, origin.port, stop), daemon=True) for c in clients]
    for t in threads:
        t.start()
    applied_at: dict[int, float] = {}  # generation -> when POST /reload returned
    started = time.monotonic()
    try:
        for generation in range(2, GENERATIONS + 1):
            write_route(route_file, generation)
            r = gw.admin("/reload", method="POST")
            applied_at[generation] = time.monotonic()
            assert r.status_code == 200 and r.json()["ok"], r.text
            _wait_until_every_client_saw(clients, generation, timeout=20)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
    duration = time.monotonic() - started

    answered = sum(len(c.answers) for c in clients)
    print(f"\nreload under load ({workers} worker(s)): {GENERATIONS - 1} reloads in {duration:.1f}s, {answered} requests"
          f" answered, failures {sum(len(c.failures) for c in clients)}; per client: "
          + ", ".join(f"{c.name}={len(c.answers)}" for c in clients))
    for c in clients:
        assert not c.failures, f"{c.name} lost requests: {c.failures[:5]}"
    # Monotonic per connection always (one process, its snapshot reference only moves forward); per client across
    # connections only with one process: with two, each worker swaps at its own moment, so while a reload is under
    # way (file written, POST /reload not yet returned) a new connection may reach the worker that has not.
    monotonic = clients if workers == 1 else [c for c in clients if c.keepalive]
    for c in monotonic:
        assert not c.went_back(), f"{c.name} saw an older generation after a newer one: {c.went_back()[:5]}"
    print("went back across connections during a reload: "
          + ", ".join(f"{c.name}={len(c.went_back())}" for c in clients if c not in monotonic))
    stale = [
        (c.name, a.generation, g)
        for c in clients
        for a in c.answers
        for g, at in applied_at.items()
        if a.sent > at and a.generation < g
    ]
    assert not stale, f"requests sent after POST /reload returned were answered by an older generation: {stale[:5]}"


def _wait_until_every_client_saw(clients: list[Client], generation: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(c.answers and c.answers[-1].generation >= generation for c in clients):
        assert time.monotonic() < deadline, f"not every client saw generation {generation}: " + ", ".join(
            f"{c.name}: {c.answers[-1].generation if c.answers else None} {c.failures[-1:]}" for c in clients
        )
        time.sleep(0.02)
