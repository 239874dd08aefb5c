"""The three side ports of the kgateway conventions: admin (19000), readiness (8082), Prometheus (9091).

Served by tornado (already a mitmproxy dependency) on the proxy's own event loop; every handler only reads
in-memory state, so none of them blocks the loop.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import tornado.httpserver
import tornado.log
import tornado.netutil
import tornado.web

from egressproxy.admin_access import AdminAccess
from egressproxy.runtime.fleet_readiness import WorkerReadiness
from egressproxy.runtime.state import GatewayState

__all__ = ["SidePortUnavailable", "start_side_servers"]

log = logging.getLogger("egressproxy")

ReloadFn = Callable[[], Awaitable[Any]]
# With --workers: workers 1..N-1 judged for worker 0's /ready (runtime/fleet_readiness.py)
FleetFn = Callable[[], Awaitable[Sequence[WorkerReadiness]]]


class _Base(tornado.web.RequestHandler):
    def initialize(
        self,
        state: GatewayState,
        reload: ReloadFn | None = None,
        access: AdminAccess | None = None,
        fleet: FleetFn | None = None,
    ) -> None:
        self.state = state
        self.reload = reload
        self.access = access
        self.fleet = fleet

    def prepare(self) -> None:
        """Refuse admin requests from outside loopback and --admin-allow-cidr (egressproxy/admin_access.py)."""
        if self.access is not None and not self.access.allows(self.request.remote_ip):
            log.warning("admin request from %s refused: not loopback nor in --admin-allow-cidr", self.request.remote_ip)
            self.write_json({"error": "forbidden: the admin port serves loopback and --admin-allow-cidr only"}, 403)

    def write_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("content-type", "application/json")
        self.finish(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


class ConfigDump(_Base):
    def get(self) -> None:
        snapshot = self.state.snapshot
        if snapshot is None:
            self.write_json({"error": "no configuration loaded"}, 503)
            return
        self.write_json(snapshot.to_dump())


class Stats(_Base):
    def get(self) -> None:
        r = self.state.last_reload
        self.write_json(
            {
                "generation": self.state.snapshot.generation if self.state.snapshot else 0,
                "ready": self.state.ready,
                "open_connections": len(self.state.connections),
                "last_reload": {"generation": r.generation, "ok": r.ok, "problems": list(r.problems)},
                # failover candidates this worker skips now (docs/failover.md): cooled down or ejected
                "upstream_health": self.state.health.unavailable(),
                # minted-leaf cache and upstream TLS session cache (docs/hot-path-caches.md)
                "caches": self.state.cache_stats(),
            }
        )


class Reload(_Base):
    async def post(self) -> None:
        assert self.reload is not None
        result = await self.reload()
        ok = bool(getattr(result, "ok", False))
        payload: dict[str, Any] = {
            "ok": ok,
            "generation": self.state.snapshot.generation if self.state.snapshot else 0,
            "problems": list(getattr(result, "problems", ())),
        }
        workers = getattr(result, "workers", None)  # with --workers: what each worker applied (None: late)
        if workers is not None:
            payload["workers"] = {str(index): generation for index, generation in workers.items()}
            payload["not_running"] = list(getattr(result, "not_running", ()))
        # 400: the configuration was refused, the old one keeps serving. 504: accepted, but a worker had not
        # applied it when the wait ended (it still serves the one before).
        self.write_json(payload, 200 if ok else 504 if getattr(result, "lagging", ()) else 400)


class Ready(_Base):
    """200 when this process serves; with --workers (on worker 0) only when every worker does (503 names which
    worker is not ready and why, runtime/fleet_readiness.py)."""

    async def get(self) -> None:
        generation = self.state.snapshot.generation if self.state.snapshot else 0
        if not self.state.ready:
            why = (
                "stopping" if self.state.stopping
                else "configuration not loaded" if self.state.snapshot is None
                else "listeners not bound"
            )
            self.write_json({"ready": False, "reason": why if self.fleet is None else f"worker 0: {why}"}, 503)
            return
        if self.fleet is None:
            self.write_json({"ready": True, "generation": generation})
            return
        own = WorkerReadiness(0, True, "", os.getpid(), generation)
        workers = [own, *await self.fleet()]
        payload: dict[str, Any] = {"ready": all(w.ready for w in workers), "generation": generation}
        if not payload["ready"]:
            payload["reason"] = "; ".join(f"worker {w.index}: {w.reason}" for w in workers if not w.ready)
        payload["workers"] = {str(w.index): w.to_json() for w in workers}
        self.write_json(payload, 200 if payload["ready"] else 503)


class Metrics(_Base):
    def get(self) -> None:
        self.set_header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(self.state.metrics.render())


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """tornado's access log, except that `/ready` answering 503 is info: "not ready yet" is the answer a probe
    asks for during start-up, not a server error (at level=error it paged operators and failed the soak test's
    "no unexpected error lines")."""
    status = handler.get_status()
    if isinstance(handler, Ready) or status < 400:
        method = tornado.log.access_log.info
    elif status < 500:
        method = tornado.log.access_log.warning
    else:
        method = tornado.log.access_log.error
    method("%d %s %.2fms", status, handler._request_summary(), 1000.0 * handler.request.request_time())


class SidePortUnavailable(Exception):
    """A side port could not be bound; the message names which one, its address and the flag that sets it.

    tornado's bind error is the bare OS error ("Address already in use"), which leaves an operator guessing
    which of four ports (proxy, admin, readiness, metrics) is taken.
    """


def _format(addr: tuple[str, int]) -> str:
    host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
    return f"{host}:{addr[1]}"


def _serve(app: tornado.web.Application, addr: tuple[str, int], what: str, flag: str) -> tornado.httpserver.HTTPServer:
    try:
        sockets = tornado.netutil.bind_sockets(addr[1], addr[0])
    except (OSError, OverflowError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SidePortUnavailable(f"cannot bind the {what} port {_format(addr)} ({flag}): {reason}") from e
    server = tornado.httpserver.HTTPServer(app, xheaders=False)
    server.add_sockets(sockets)
    for sock in sockets:
        name = sock.getsockname()
        log.info("%s listening on http://%s:%s", what, name[0], name[1])
    return server


def start_side_servers(
    state: GatewayState,
    reload: ReloadFn,
    admin: tuple[str, int],
    ready: tuple[str, int],
    metrics: tuple[str, int],
    admin_access: AdminAccess | None = None,
    fleet: FleetFn | None = None,
) -> list[tornado.httpserver.HTTPServer]:
    """Bind and serve the three side ports; SidePortUnavailable names the one that cannot be bound.

    Only the admin port checks the client's address (`admin_access`, loopback only by default): readiness and
    metrics are read by kubelet and Prometheus from other addresses and expose no configuration. `fleet` (with
    --workers) makes /ready answer for every worker.
    """
    kw = {"state": state, "reload": reload, "fleet": fleet}
    admin_kw = {**kw, "access": admin_access or AdminAccess()}
    admin_app = tornado.web.Application(
        [
            ("/config_dump", ConfigDump, admin_kw),
            ("/stats", Stats, admin_kw),
            ("/reload", Reload, admin_kw),
            ("/ready", Ready, admin_kw),
        ],
        log_function=_log_request,
    )
    ready_app = tornado.web.Application([("/ready", Ready, kw)], log_function=_log_request)
    metrics_app = tornado.web.Application([("/metrics", Metrics, kw)], log_function=_log_request)
    started: list[tornado.httpserver.HTTPServer] = []
    try:
        started.append(_serve(admin_app, admin, "admin", "--admin-addr"))
        started.append(_serve(ready_app, ready, "readiness", "--ready-addr"))
        started.append(_serve(metrics_app, metrics, "metrics", "--metrics-addr"))
    except SidePortUnavailable:
        for server in started:  # nothing half-started stays bound
            server.stop()
        raise
    return started
