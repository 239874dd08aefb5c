"""The ext_authz gRPC client: calls `Authorization/Check` with grpc.aio, on the event loop, through the one dialer.

grpcio does its own connecting, so it is never given a name to resolve: before each call the dialer's
destination check (hostAliases, DNS with the gateway's DNSPolicy, SSRF guard, reverse DNS; the Service host
`<name>.<ns>.svc.cluster.local` is trusted like a Static Backend, DESIGN.md 4.2) returns the one checked
address, and the call goes over an insecure (plain HTTP/2) channel to exactly that address (`ipv4:`/`ipv6:`
target, so grpcio resolves nothing), with the `:authority` set to the service's name. grpcio's own proxy
support is switched off (`grpc.enable_http_proxy`), so the environment's HTTPS_PROXY cannot redirect it.

Channels are kept per checked address and authority (a few; closed when they are more than `_MAX_CHANNELS`
or at shutdown). A refusal, an unreachable or slow service, or any gRPC error becomes an `ExtAuthAnswer` with
`failure` set: the caller decides fail closed or open (egressproxy/ext_auth.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

import grpc
from envoy_data_plane.envoy.service.auth import v3 as auth

from egressproxy.dialer import Dialer
from egressproxy.ext_auth import ExtAuthAnswer, ExtAuthService
from egressproxy.ext_auth_protocol import CHECK_METHOD, answer_from
from egressproxy.flowrecord import ConnectionRecord
from egressproxy.snapshot import Snapshot
from egressproxy.upstreams import Upstream

__all__ = ["ExtAuthClient"]

log = logging.getLogger("egressproxy")

_MAX_CHANNELS = 16


def _target(address: str, port: int) -> str:
    if ipaddress.ip_address(address).version == 6:
        return f"ipv6:[{address}]:{port}"
    return f"ipv4:{address}:{port}"


class ExtAuthClient:
    """Calls a GatewayExtension's ext_authz service; one per process, shared by every request."""

    def __init__(self, dialer: Dialer) -> None:
        self.dialer = dialer
        self._channels: dict[tuple[str, int, str], grpc.aio.Channel] = {}

    async def check(
        self, snapshot: Snapshot, service: ExtAuthService, request: auth.CheckRequest
    ) -> ExtAuthAnswer:
        """The service's answer, or a failure answer; never raises for what the service or network did."""
        if not service.host:
            return ExtAuthAnswer(False, failure=f"{service.ref} has no grpcService this build can call")
        try:
            async with asyncio.timeout(service.timeout):
                address = await self._checked_address(snapshot, service)
                if isinstance(address, ExtAuthAnswer):
                    return address
                call = self._channel(address, service).unary_unary(
                    CHECK_METHOD,
                    request_serializer=auth.CheckRequest.SerializeToString,
                    response_deserializer=auth.CheckResponse.FromString,
                )
                response = await call(request, timeout=service.timeout)
        except TimeoutError:
            return ExtAuthAnswer(False, failure=f"no answer within the timeout ({service.timeout:g}s)")
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return ExtAuthAnswer(False, failure=f"no answer within the timeout ({service.timeout:g}s)")
            # The code's name only: the details text is the service's or the transport's, never echoed to clients.
            return ExtAuthAnswer(False, failure=f"the call failed with gRPC status {e.code().name}")
        return answer_from(response)

    async def _checked_address(self, snapshot: Snapshot, service: ExtAuthService) -> str | ExtAuthAnswer:
        upstream = Upstream(service.host, service.port, scheme="http", trusted=True)
        record = ConnectionRecord(generation=snapshot.generation, upstreams={upstream.key: upstream})
        destination = await self.dialer.destination(snapshot, record, service.host, service.port)
        if destination.address is None:
            why = destination.outcome.reason if destination.outcome is not None else "refused"
            return ExtAuthAnswer(False, failure=f"the dialer refused {service.host}:{service.port} ({why})")
        return destination.address

    def _channel(self, address: str, service: ExtAuthService) -> grpc.aio.Channel:
        key = (address, service.port, service.authority)
        channel = self._channels.get(key)
        if channel is None:
            if len(self._channels) >= _MAX_CHANNELS:
                self._close_later(list(self._channels.values()))
                self._channels.clear()
            options = [("grpc.default_authority", service.authority), ("grpc.enable_http_proxy", 0)]
            channel = self._channels[key] = grpc.aio.insecure_channel(_target(address, service.port), options=options)
        return channel

    @staticmethod
    def _close_later(channels: list[grpc.aio.Channel]) -> None:
        for channel in channels:
            asyncio.get_running_loop().create_task(channel.close(grace=1.0))

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()
