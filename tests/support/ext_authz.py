"""A real Envoy ext_authz gRPC server (`envoy.service.auth.v3.Authorization/Check`, the generated API of
envoy-data-plane) on loopback, run by grpc.aio in a thread of its own, as OPA's envoy plugin would serve it.

What it answers is decided by the request path the gateway reports:
- `/deny...`: PERMISSION_DENIED with its own response (401, `www-authenticate`, a text body);
- `/bare-deny...`: PERMISSION_DENIED with no response of its own (the gateway answers 403 JSON);
- `/slow...`: OK after `slow_seconds` (past the gateway's timeout);
- anything else: OK, adding `x-authz-user: alice` and removing `x-remove-me`.
Every CheckRequest received is kept in `requests`.
"""

from __future__ import annotations

import asyncio
import threading

import grpc
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.service.auth import v3 as auth
from envoy_data_plane.envoy.type import v3 as types
from envoy_data_plane.google import rpc

__all__ = ["ExtAuthzServer"]


OK, PERMISSION_DENIED = 0, 7  # google.rpc.Code


def _header(name: str, value: str) -> core.HeaderValueOption:
    return core.HeaderValueOption(header=core.HeaderValue(key=name, value=value))


def _decide(request: auth.CheckRequest) -> auth.CheckResponse:
    assert request.attributes is not None and request.attributes.request is not None
    http = request.attributes.request.http
    path = http.path if http is not None else ""
    if path.startswith("/bare-deny"):
        return auth.CheckResponse(status=rpc.Status(code=PERMISSION_DENIED))
    if path.startswith("/deny"):
        denied = auth.DeniedHttpResponse(
            status=types.HttpStatus(code=types.StatusCode.Unauthorized),
            headers=[_header("www-authenticate", 'Bearer realm="authz"'), _header("content-type", "text/plain")],
            body="no entry for this workload\n",
        )
        return auth.CheckResponse(status=rpc.Status(code=PERMISSION_DENIED), denied_response=denied)
    ok = auth.OkHttpResponse(headers=[_header("x-authz-user", "alice")], headers_to_remove=["x-remove-me"])
    return auth.CheckResponse(status=rpc.Status(code=OK), ok_response=ok)


class ExtAuthzServer:
    def __init__(self, slow_seconds: float = 3.0) -> None:
        self.slow_seconds = slow_seconds
        self.requests: list[auth.CheckRequest] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: grpc.aio.Server | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._started.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._server = grpc.aio.server()
        check = grpc.unary_unary_rpc_method_handler(
            self._check,
            request_deserializer=auth.CheckRequest.FromString,
            response_serializer=auth.CheckResponse.SerializeToString,
        )
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("envoy.service.auth.v3.Authorization", {"Check": check}),)
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    async def _check(self, request: auth.CheckRequest, context: object) -> auth.CheckResponse:
        self.requests.append(request)
        http = request.attributes.request.http if request.attributes and request.attributes.request else None
        if http is not None and http.path.startswith("/slow"):
            await asyncio.sleep(self.slow_seconds)
        return _decide(request)

    def __enter__(self) -> "ExtAuthzServer":
        self._thread.start()
        assert self._started.wait(10), "the ext_authz server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
