"""Typed outcomes (DESIGN.md section 6, seam 4): how a gateway failure travels from where it happens to the answer.

The part that sees a failure writes a `GatewayFailure` (reason, detail, policy, status) on the record of the
connection or flow it concerns: the dial guard for a dial it refused or that failed (unreachable, timeout), the
upstream-TLS addon for a handshake that failed. A refused dial that is a denial (SSRF guard, reverse DNS) is a
`Verdict`. The gateway-errors addon answers from those values; it never recovers a reason from error text. Only
a failure no part of ours saw (mitmproxy's own message, e.g. a connection reset mid-response) is classified
from mitmproxy's words, by `classify_upstream_error`, which knows mitmproxy's phrases and nothing else.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from egressproxy.flowrecord import Verdict
from egressproxy.responses import ERROR_STATUS

__all__ = [
    "GatewayFailure",
    "DialOutcome",
    "classify_response_failure",
    "classify_upstream_error",
    "outcome_for",
    "readable_connect_error",
]

_ERRNO_PREFIX = re.compile(r"^\[Errno (\d+)\] ")


def readable_connect_error(text: str) -> str:
    """The operating system's words for a failed connect, as mitmproxy hands it over (`str(OSError)`).

    asyncio words a refused connect as "[Errno 111] Connect call failed ('127.0.0.1', 443)"; the errno's own
    text ("Connection refused") is what an operator looks for. Text without an errno is kept as it is.
    """
    match = _ERRNO_PREFIX.match(text)
    if match is None:
        return text
    return os.strerror(int(match.group(1)))



@dataclass(frozen=True, slots=True)
class GatewayFailure:
    """A gateway error (DESIGN.md 4.1 `x-egress-error` reasons) with what the client is told about it."""

    reason: str  # upstream-unreachable | upstream-tls-invalid | upstream-timeout | no-healthy-backend
    detail: str  # the cause, naming the destination (`error` of the JSON body, after a short prefix)
    policy: str = ""  # the object whose setting decided it (a BackendTLSPolicy), else ""

    @property
    def status(self) -> int:
        return ERROR_STATUS.get(self.reason, 502)

    @property
    def server_error(self) -> str:
        """Text for mitmproxy's `server.error` (logs only: nobody parses it back)."""
        return f"egress: {self.reason}: {self.detail}"

    @property
    def message(self) -> str:
        """The JSON body's `error`."""
        prefix = _PREFIXES.get(self.reason, "")
        return f"{prefix}{self.detail}"


_PREFIXES = {
    "upstream-tls-invalid": "upstream TLS is invalid: ",
    "upstream-unreachable": "upstream unreachable: ",
}

# What a dial can end in besides an address: a denial (403) or a failure (502/504).
DialOutcome = Verdict | GatewayFailure


# mitmproxy's own phrases for a failed upstream TLS handshake (mitmproxy/proxy/layers/tls.py) and for OpenSSL
# errors it passes on; matched as phrases, never as loose words that a host name could contain.
_TLS_PHRASES = (
    "certificate verify failed",
    "tls handshake failed",
    "does not speak tls",
    "openssl error",
    "ssl routines",
    "sslv3 alert",
    "tlsv1 alert",
    "tlsv13 alert",
)
_TIMEOUT_PHRASES = ("timed out", "timeouterror")


def classify_upstream_error(message: str) -> str:
    """mitmproxy's own error text (a failure none of our parts recorded) to a DESIGN.md 4.1 reason."""
    lower = message.lower()
    if any(p in lower for p in _TLS_PHRASES):
        return "upstream-tls-invalid"
    if any(p in lower for p in _TIMEOUT_PHRASES):
        return "upstream-timeout"
    return "upstream-unreachable"


# A response broken after its headers: the connection ended or was reset (h11: "peer closed connection without
# sending complete message body"; mitmproxy: "server closed connection"; HTTP/2: "stream reset"), else the bytes
# could not be parsed (a bad chunk header, an invalid frame).
_RESET_PHRASES = ("closed connection", "connection closed", "reset", "eof")


def classify_response_failure(message: str) -> str:
    """mitmproxy's message for an upstream failure after the response headers to a reason for the metric and the
    access log: `upstream-reset` (the upstream went away mid-response) or `upstream-protocol-error` (it sent a
    body that cannot be parsed). The client already has the headers, so it is never told either."""
    lower = message.lower()
    return "upstream-reset" if any(p in lower for p in _RESET_PHRASES) else "upstream-protocol-error"


def outcome_for(flow_failure: GatewayFailure | None, dial_outcome: DialOutcome | None, message: str) -> DialOutcome:
    """What a failed request is answered with: the flow's own failure (upstream TLS), else the outcome of the
    dial it waited for, else mitmproxy's message classified."""
    if flow_failure is not None:
        return flow_failure
    if dial_outcome is not None:
        return dial_outcome
    return GatewayFailure(classify_upstream_error(message), message or "the upstream connection failed")
