"""The sink dispatcher: every sink gets every finished record; a failing sink never stops the others."""

from __future__ import annotations

from egressproxy.flowrecord import UNKNOWN_IDENTITY, FinishedConnection, FinishedRequest
from egressproxy.sinks import Sink, Sinks


def connection(**overrides: object) -> FinishedConnection:
    values: dict[str, object] = dict(
        gateway="default/eg",
        listener="tls",
        route="default/pinned",
        identity=UNKNOWN_IDENTITY,
        verdict=None,
        host="pinned.example.test",
        sni="pinned.example.test",
        carries="TLS",
        started=1.0,
        duration=0.5,
        bytes_upstream=10,
        bytes_downstream=20,
    )
    values.update(overrides)
    return FinishedConnection(**values)  # type: ignore[arg-type]


def request(**overrides: object) -> FinishedRequest:
    values: dict[str, object] = dict(
        gateway="default/eg",
        listener="https",
        route="default/api",
        backend=None,
        identity=UNKNOWN_IDENTITY,
        verdict=None,
        decision="allow",
        error=None,
        host="api.example.test",
        sni="api.example.test",
        method="GET",
        url="https://api.example.test/",
        status=200,
        started=1.0,
        duration=0.25,
    )
    values.update(overrides)
    return FinishedRequest(**values)  # type: ignore[arg-type]


class Collect(Sink):
    def __init__(self, name: str) -> None:
        self.name = name
        self.connections: list[FinishedConnection] = []
        self.requests: list[FinishedRequest] = []

    def connection_finished(self, record: FinishedConnection) -> None:
        self.connections.append(record)

    def request_finished(self, record: FinishedRequest) -> None:
        self.requests.append(record)


class Broken(Sink):
    name = "broken"

    def connection_finished(self, record: FinishedConnection) -> None:
        raise OSError("disk full")

    def request_finished(self, record: FinishedRequest) -> None:
        raise OSError("collector down")


def test_every_sink_gets_every_record() -> None:
    a, b = Collect("a"), Collect("b")
    sinks = Sinks()
    sinks.register(a)
    sinks.register(b)
    c, r = connection(), request()
    sinks.connection_finished(c)
    sinks.request_finished(r)
    assert a.connections == b.connections == [c]
    assert a.requests == b.requests == [r]


def test_a_failing_sink_is_counted_and_the_sinks_after_it_still_get_the_record() -> None:
    failed: list[str] = []
    after = Collect("after")
    sinks = Sinks(on_error=lambda sink, e: failed.append(f"{sink.name}: {e}"))
    sinks.register(Broken())
    sinks.register(after)
    sinks.connection_finished(connection())
    sinks.request_finished(request())
    assert failed == ["broken: disk full", "broken: collector down"]
    assert len(after.connections) == 1 and len(after.requests) == 1


def test_the_base_sink_ignores_what_it_does_not_override() -> None:
    class OnlyRequests(Sink):
        seen = 0

        def request_finished(self, record: FinishedRequest) -> None:
            type(self).seen += 1

    sinks = Sinks()
    sinks.register(OnlyRequests())
    sinks.connection_finished(connection())
    sinks.request_finished(request())
    assert OnlyRequests.seen == 1


def test_a_failing_error_reporter_does_not_escape() -> None:
    def reporter(sink: Sink, error: BaseException) -> None:
        raise RuntimeError("metrics broken too")

    sinks = Sinks(on_error=reporter)
    sinks.register(Broken())
    sinks.connection_finished(connection())  # must not raise
