"""A real Envoy ext_authz gRPC server (`envoy.service.auth.v3.Authorization/Check`, the generated API of
xds-protos) on loopback, run by grpc.aio in a thread of its own, as OPA's envoy plugin would serve it.

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
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

__all__ = ["ExtAuthzServer"]


def _header(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=name, value=value))


class _Authorization(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, server: "ExtAuthzServer") -> None:
        self.server = server

    async def Check(self, request: external_auth_pb2.CheckRequest, context: object) -> external_auth_pb2.CheckResponse:  # noqa: N802 (gRPC's name)
        self.server.requests.append(request)
        path = request.attributes.request.http.path
        if path.startswith("/slow"):
            await asyncio.sleep(self.server.slow_seconds)
        if path.startswith("/bare-deny"):
            return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED))
        if path.startswith("/deny"):
            denied = external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=http_status_pb2.Unauthorized),
                headers=[_header("www-authenticate", 'Bearer realm="authz"'), _header("content-type", "text/plain")],
                body="no entry for this workload\n",
            )
            return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED), denied_response=denied)
        ok = external_auth_pb2.OkHttpResponse(headers=[_header("x-authz-user", "alice")], headers_to_remove=["x-remove-me"])
        return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK), ok_response=ok)


class ExtAuthzServer:
    def __init__(self, slow_seconds: float = 3.0) -> None:
        self.slow_seconds = slow_seconds
        self.requests: list[external_auth_pb2.CheckRequest] = []
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
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(_Authorization(self), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    def __enter__(self) -> "ExtAuthzServer":
        self._thread.start()
        assert self._started.wait(10), "the ext_authz server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
