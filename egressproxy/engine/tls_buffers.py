"""OpenSSL's per-connection record buffers given back while a TLS connection is idle.

OpenSSL keeps a read and a write buffer of about 17 KiB each for the life of every SSL object, whether the
connection carries bytes or not. An intercepted stream holds two (the client's leg and the upstream's), and a
gateway in front of AI providers holds many idle ones: SSE streams waiting for the next token, keep-alive
connections between requests. `SSL_MODE_RELEASE_BUFFERS` (what nginx sets) frees them whenever they are empty
and takes them again for the next record: loadtest/streams.py measured ~45 KiB less RSS per idle intercepted
stream (docs/streams-memory.md). The cost is a malloc/free per burst of records, nothing per byte.
"""

from __future__ import annotations

from OpenSSL import SSL

__all__ = ["release_buffers_when_idle", "releases_buffers"]

_lib = SSL._lib  # pyOpenSSL has Context.set_mode but no per-connection one


def release_buffers_when_idle(conn: SSL.Connection) -> None:
    """Set SSL_MODE_RELEASE_BUFFERS on this connection only (contexts are shared and cached by mitmproxy)."""
    _lib.SSL_set_mode(conn._ssl, _lib.SSL_MODE_RELEASE_BUFFERS)


def releases_buffers(conn: SSL.Connection) -> bool:
    """Whether the mode is on (SSL_set_mode with 0 adds nothing and answers the current modes)."""
    return bool(_lib.SSL_set_mode(conn._ssl, 0) & _lib.SSL_MODE_RELEASE_BUFFERS)
