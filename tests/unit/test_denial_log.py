"""One info line per denial (egressproxy/denial_log.py): reason, policy, identity, host; never a URL."""

from __future__ import annotations

import logging

import pytest

from egressproxy.denial_log import DenialLog
from egressproxy.flowrecord import Identity, Verdict
from tests.unit.test_sinks import connection, request

DENIED = Verdict.deny("no-route", "EgressGateway/default/eg")


def test_a_denied_request_is_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "egressproxy")
    DenialLog().request_finished(request(verdict=DENIED, decision="deny", identity=Identity("a", "b"),
                                         url="http://x.test/?key=secret", host="x.test", status=403))
    DenialLog().request_finished(request(verdict=Verdict.allow(), decision="allow"))
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("denied GET x.test: reason=no-route policy=EgressGateway/default/eg identity=a/b")
    assert "secret" not in line


def test_a_connection_denied_before_any_request_is_one_line_and_one_with_requests_is_not(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "egressproxy")
    DenialLog().connection_finished(connection(verdict=DENIED, host="db.test", carries="TCP", requests=0))
    DenialLog().connection_finished(connection(verdict=DENIED, host="web.test", carries="HTTP", requests=1))
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["denied TCP connection to db.test"]
