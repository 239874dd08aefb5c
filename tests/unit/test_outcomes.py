"""Typed outcomes: a failure is answered as the part that saw it recorded it; mitmproxy's words only as a last
resort, and then by mitmproxy's phrases, never by words a host name may contain."""

from __future__ import annotations

import pytest

from egressproxy.flowrecord import Verdict
from egressproxy.outcomes import GatewayFailure, classify_upstream_error, outcome_for, readable_connect_error


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("[Errno 111] Connection refused", "upstream-unreachable"),
        ("[Errno 111] Connect call failed ('127.0.0.1', 9)", "upstream-unreachable"),
        ("Server closed connection.", "upstream-unreachable"),
        ("Certificate verify failed: unable to get local issuer certificate", "upstream-tls-invalid"),
        ("TLS handshake failed: connection closed", "upstream-tls-invalid"),
        ("The remote server does not speak TLS.", "upstream-tls-invalid"),
        ("OpenSSL Error([('SSL routines', '', 'tlsv1 alert unknown ca')])", "upstream-tls-invalid"),
        ("[Errno 110] Connection timed out", "upstream-timeout"),
        # A host name is not a phrase of mitmproxy's: these are connection failures, whatever the name says.
        ("Cannot connect to ssl-tls-certificate.example:443: [Errno 111] Connection refused", "upstream-unreachable"),
        ("[Errno -2] Name or service not known: handshake.tls.example", "upstream-unreachable"),
    ],
)
def test_mitmproxy_messages_are_classified_by_mitmproxy_phrases(message: str, reason: str) -> None:
    assert classify_upstream_error(message) == reason


def test_a_recorded_failure_is_answered_as_recorded_whatever_its_text_says() -> None:
    failure = GatewayFailure("upstream-unreachable", "connecting to ssl-tls-certificate.example:1 failed")
    outcome = outcome_for(None, failure, "Certificate verify failed: certificate has expired")
    assert outcome is failure
    assert isinstance(outcome, GatewayFailure)
    assert outcome.status == 502
    assert outcome.message == "upstream unreachable: connecting to ssl-tls-certificate.example:1 failed"


def test_the_flows_own_failure_wins_over_the_dial_and_the_message() -> None:
    tls = GatewayFailure("upstream-tls-invalid", "SPKI pin mismatch", "BackendTLSPolicy/default/pin")
    dial = GatewayFailure("upstream-unreachable", "refused")
    assert outcome_for(tls, dial, "[Errno 111] Connection refused") is tls
    assert tls.message == "upstream TLS is invalid: SPKI pin mismatch"


def test_a_refused_dial_is_a_denial_verdict() -> None:
    verdict = Verdict.deny("destination-address-denied", "EgressGateway/default/eg", "10.0.0.1 is private")
    assert outcome_for(None, verdict, "egress: upstream-unreachable: whatever") is verdict


def test_without_a_recorded_outcome_mitmproxys_message_decides() -> None:
    outcome = outcome_for(None, None, "[Errno 110] Connection timed out")
    assert outcome == GatewayFailure("upstream-timeout", "[Errno 110] Connection timed out")
    assert outcome.status == 504


@pytest.mark.parametrize(
    ("text", "readable"),
    [
        ("[Errno 111] Connect call failed ('127.0.0.1', 443)", "Connection refused"),
        ("[Errno 113] Connect call failed ('10.0.0.1', 443)", "No route to host"),
        ("Connection refused", "Connection refused"),
        ("", ""),
    ],
)
def test_a_failed_connect_is_told_in_the_operating_systems_words(text: str, readable: str) -> None:
    assert readable_connect_error(text) == readable
