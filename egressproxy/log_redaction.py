"""Userinfo passwords out of log lines (pure; docs/reliability.md, Hostile input).

A client may put credentials in a URL (`http://user:pass@host/`) or a CONNECT authority. The gateway refuses
both, but mitmproxy logs the request line it could not parse verbatim (`Bad HTTP request line: b'GET
http://user:pass@...'`), and at `--log-level debug` its lines reach our log. Every line the gateway writes passes
through `redact_userinfo`, which keeps the user name (useful when debugging) and replaces the password.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "redact_userinfo"]

REDACTED = "[redacted]"

# `user:password@` at the start of an authority: after `://`, or after a space, quote, `(` or `=` (a CONNECT
# target, a quoted request line, a key=value pair). The password runs to the `@`, with no space, quote or `/`.
_USERINFO = re.compile(r"""(?P<lead>://|[\s'"(=]|^)(?P<user>[^\s/@'":]*):(?P<password>[^\s/@'"]+)@""")


def redact_userinfo(text: str) -> str:
    """`text` with the password of every `user:password@` authority replaced by `[redacted]`."""
    if "@" not in text:
        return text
    return _USERINFO.sub(lambda m: f"{m['lead']}{m['user']}:{REDACTED}@", text)
