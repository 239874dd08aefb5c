"""Microseconds of the routing addon's `requestheaders` per keep-alive request, with and without decision reuse.

    .venv/bin/python loadtest/decision_reuse_ab.py [ROUTES] [HOST]

In one process (mitmproxy's test flows, no sockets): 3,200 requests on one intercepted connection to HOST
(default `svc-1.team-1.example.com`, a route without header rules) under the route_scaling.py config of ROUTES
routes (default 10) plus the bench's catch-all; chunks of 400 alternate between the shipped addon (A: the
connection's decision reused, egressproxy/decision_reuse.py) and one that decides every request (B). Prints the
fastest chunk of each, the figure least disturbed by other work on the machine.
"""

import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from mitmproxy import http  # noqa: E402
from mitmproxy.test import taddons, tflow, tutils  # noqa: E402

import addons.http_routes as hr  # noqa: E402
import route_scaling as rs  # noqa: E402
from tests.support.addon_state import compile_snapshot, state_for  # noqa: E402

CATCH_ALL = """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: origin}
spec:
  parentRefs: [{name: bench, sectionName: https}, {name: bench, sectionName: http}]
"""


def request_on(host: str, conn: object | None = None) -> http.HTTPFlow:
    req = tutils.treq(host=host, port=443, scheme=b"https", path=b"/api/v1/x", authority=b"",
                      headers=http.Headers(host=host, accept="*/*", user_agent="bench/1.0"), content=b"")
    flow = tflow.tflow(req=req)
    if conn is not None:
        flow.client_conn = conn  # type: ignore[assignment]
    return flow


def call(addon: hr.HttpRoutes, flow: http.HTTPFlow) -> None:
    """Run the coroutine to its end (nothing in it suspends for a tunnelled request)."""
    try:
        addon.requestheaders(flow).send(None)
    except StopIteration:
        pass


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    host = sys.argv[2] if len(sys.argv) > 2 else "svc-1.team-1.example.com"
    config = (rs.GATEWAY + "---\n" + rs.routes_yaml(count) + CATCH_ALL).replace("name: egress-ca", "name: ca")
    state = state_for(compile_snapshot(config, ca="ca"), Path(tempfile.mkdtemp()))
    addon = hr.HttpRoutes(state)
    reuse = hr.decide_reusing

    def decide_each_time(memo, *args):  # type: ignore[no-untyped-def]
        return reuse(None, *args)[0], None

    first = request_on(host)
    record = state.connection(first.client_conn.id)
    record.connect_host = record.host = record.sni = host
    record.port, record.listener, record.carries, record.intercept = 443, "https", "TLS", True
    times: dict[str, list[float]] = {"reuse": [], "decide": []}
    with taddons.context(addon):
        call(addon, first)
        assert first.response is None, "the request was denied: pick a routed HOST"
        for _ in range(8):
            for mode in times:
                hr.decide_reusing = reuse if mode == "reuse" else decide_each_time  # type: ignore[assignment]
                flows = [request_on(host, first.client_conn) for _ in range(400)]
                t0 = time.perf_counter()
                for flow in flows:
                    call(addon, flow)
                times[mode].append((time.perf_counter() - t0) / len(flows) * 1e6)
    hr.decide_reusing = reuse
    print(f"{count} routes, {host}: requestheaders, fastest chunk: decision reused {min(times['reuse']):.1f} us, "
          f"decided every request {min(times['decide']):.1f} us")


if __name__ == "__main__":
    main()
