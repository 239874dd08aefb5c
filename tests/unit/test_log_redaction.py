"""Passwords in URLs and CONNECT authorities never reach a log line (egressproxy/log_redaction.py)."""

from __future__ import annotations

import logging
import sys

import pytest

from egressproxy.log_redaction import redact_userinfo
from egressproxy.runtime.logs import LogfmtFormatter


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Bad HTTP request line: b'GET http://user:pw@h/ HTTP/1.1'", "Bad HTTP request line: b'GET http://user:[redacted]@h/ HTTP/1.1'"),
        ("Bad HTTP request line: b'CONNECT user:pw@h:443 HTTP/1.1'", "Bad HTTP request line: b'CONNECT user:[redacted]@h:443 HTTP/1.1'"),
        ("url=https://:token@h/x", "url=https://:[redacted]@h/x"),
        ("a http://u:p%40ss@h/ and redis://:p@r:6379/0", "a http://u:[redacted]@h/ and redis://:[redacted]@r:6379/0"),
        ("user:pw@host", "user:[redacted]@host"),
    ],
)
def test_the_password_of_a_userinfo_is_replaced_and_the_user_kept(text: str, expected: str) -> None:
    assert redact_userinfo(text) == expected


@pytest.mark.parametrize("text", ["no at sign here", "mail alice@example.com", "http://user@h/", "[::1]:443", "at 12:30 @ noon"])
def test_text_without_a_password_is_unchanged(text: str) -> None:
    assert redact_userinfo(text) == text


def test_the_log_formatter_redacts_messages_and_exceptions() -> None:
    formatter = LogfmtFormatter()
    try:
        raise ValueError("Bad HTTP request line: b'GET http://u:hunter2@h/ HTTP/1.1'")
    except ValueError:
        record = logging.LogRecord("mitmproxy.proxy.server", logging.INFO, __file__, 1, "%s", ("http://u:hunter2@h/",), sys.exc_info())
    line = formatter.format(record)
    assert "hunter2" not in line and "u:[redacted]@h" in line
