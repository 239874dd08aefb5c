"""atheris fuzzer over HTTP/1 request-head handling (issue 14, item 8): raw bytes -> mitmproxy's request-head
parser -> what egressproxy does with a head before any policy (the host canonicalised, the Proxy-Authorization
decoded, the route matched on an HTTP listener).

mitmproxy refuses a head it cannot parse with ValueError (answered 400 by the engine); canonical_host refuses a
host with InvalidHostname (a denial). Any other exception is a crash, and atheris reports it with the input.

    .venv/bin/python fuzz/request_head.py -max_total_time=20      # libFuzzer options; a corpus dir may follow
"""

from __future__ import annotations

import sys

import atheris

# Coverage feedback from the code a head goes through; the rest (the compiler that builds the listener once,
# their dependencies) is imported uninstrumented, or setup alone takes minutes.
with atheris.instrument_imports(include=["mitmproxy.net.http", "egressproxy.hostnames", "egressproxy.matching",
                                         "egressproxy.proxy_auth", "egressproxy.snapshot"]):
    from mitmproxy.net.http.http1 import read_request_head

    from egressproxy.compiler import compile_config
    from egressproxy.config.loader import load_text
    from egressproxy.hostnames import InvalidHostname, authority_host, canonical_host
    from egressproxy.matching import match_http
    from egressproxy.proxy_auth import parse_basic

CONFIG = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners: [{name: http, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg}]
  hostnames: [api.example.com, "*.example.org"]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}, headers: [{name: x-team, value: a}], queryParams: [{name: q, value: "1"}]}]
  - matches: [{path: {type: RegularExpression, value: "/v2/[a-z]+"}, method: POST}]
"""
_snapshot = compile_config(load_text(CONFIG, "fuzz.yaml").resources).snapshot
assert _snapshot is not None
LISTENER = _snapshot.gateway.listeners[0]


def handle_head(data: bytes) -> None:
    """One request head as the gateway sees it; raises only on a bug."""
    head = data.split(b"\r\n\r\n", 1)[0]
    lines = [line + b"\r\n" for line in head.split(b"\r\n")]
    try:
        request = read_request_head(lines)
    except ValueError:
        return
    parse_basic(request.headers.get("proxy-authorization"))
    raw_host = request.host or authority_host(request.headers.get("host", ""))
    try:
        host = canonical_host(raw_host)
    except InvalidHostname:
        return
    headers = {k.lower(): ", ".join(request.headers.get_all(k)) for k in request.headers}
    query: dict[str, list[str]] = {}
    for key, value in request.query.items(multi=True):
        query.setdefault(key, []).append(value)
    match_http(LISTENER, host, request.method, request.path, headers, query)


def main() -> None:
    atheris.Setup(sys.argv, lambda data: handle_head(data))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
