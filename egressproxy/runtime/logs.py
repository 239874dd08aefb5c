"""Structured, quiet logging: one logfmt line per event (`ts=… level=… logger=… msg="…"`).

mitmproxy's own loggers are held at WARNING unless --log-level debug: the gateway's lines say what an
operator needs (bound addresses, reloads, denials at debug), without per-connection chatter.
"""

from __future__ import annotations

import logging
import sys
import time

from egressproxy.log_redaction import redact_userinfo

__all__ = ["setup_logging"]


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "-_./:@" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        parts = [
            f"ts={ts}",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"msg={_quote(redact_userinfo(record.getMessage()))}",
        ]
        if record.exc_info:
            parts.append(f"error={_quote(redact_userinfo(self.formatException(record.exc_info)))}")
        return " ".join(parts)


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if level == "debug" else logging.INFO)
    logging.getLogger("egressproxy").setLevel(level.upper())
    mitm_level = logging.DEBUG if level == "debug" else logging.WARNING
    for name in ("mitmproxy", "tornado", "asyncio", "hpack", "h2"):
        logging.getLogger(name).setLevel(mitm_level if name != "hpack" else logging.WARNING)
    # Never at debug, whatever --log-level says: botocore logs the SigV4 canonical request (a session token among
    # its headers), google-auth and httpx/httpcore their requests; a secret must not reach a log line.
    for name in ("botocore", "google", "urllib3", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
