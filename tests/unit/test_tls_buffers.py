"""egressproxy/engine/tls_buffers.py: SSL_MODE_RELEASE_BUFFERS per connection, never on the shared context."""

from __future__ import annotations

from OpenSSL import SSL

from egressproxy.engine.tls_buffers import release_buffers_when_idle, releases_buffers


def test_the_mode_is_set_on_the_connection_and_not_on_its_shared_context() -> None:
    context = SSL.Context(SSL.TLS_METHOD)
    ours, other = SSL.Connection(context), SSL.Connection(context)
    assert not releases_buffers(ours)
    release_buffers_when_idle(ours)
    assert releases_buffers(ours)
    assert not releases_buffers(other)
    assert not releases_buffers(SSL.Connection(context))
