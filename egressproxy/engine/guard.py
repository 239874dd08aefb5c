"""Fail closed: a hook that raises denies what it was deciding, and the error is counted.

mitmproxy logs an exception raised by a hook and lets the flow carry on (hooks fail open). Every hook body of
ours is wrapped by `fail_closed`, which catches the exception, counts it in `egress_hook_errors_total`, and
denies: an HTTP flow gets a 403 (reason `internal-error`) or is killed once its response has started; a
connection is marked denied, so the dial guard refuses to open any upstream for it.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from mitmproxy import exceptions, http

from egressproxy.flowrecord import Verdict

__all__ = ["fail_closed", "deny_on_error"]

log = logging.getLogger("egressproxy")
F = TypeVar("F", bound=Callable[..., Any])

INTERNAL_ERROR = Verdict.deny("internal-error", message="the gateway failed while deciding; denied for safety")


def deny_on_error(addon: Any, hook: str, arg: Any) -> None:
    """Deny whatever `arg` is (an HTTP flow, a connection hook's data) after a hook failed."""
    state = getattr(addon, "state", None)
    if state is not None:
        state.metrics.hook_errors.labels(type(addon).__name__, hook).inc()
    if isinstance(arg, http.HTTPFlow):
        if arg.response is None and arg.live:
            from egressproxy.engine.answers import answer_denied

            answer_denied(arg, INTERNAL_ERROR)
        elif arg.killable:
            arg.kill()
        return
    client = getattr(arg, "client", None) or getattr(getattr(arg, "context", None), "client", None)
    if client is None and hasattr(arg, "client_conn"):
        client = arg.client_conn
    if client is not None and state is not None:
        state.connection(client.id).verdict = INTERNAL_ERROR
    server = getattr(arg, "server", None)
    if server is not None and hasattr(server, "error") and hook == "server_connect":
        server.error = "denied: internal error in the gateway"


def fail_closed(fn: F) -> F:
    """Wrap a hook method (sync or async) so that an exception denies instead of failing open."""
    hook = fn.__name__
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(self: Any, arg: Any) -> Any:
            try:
                return await fn(self, arg)
            except exceptions.AddonHalt:
                raise  # mitmproxy's "stop the hook chain here", not a failure
            except Exception:
                log.exception("%s.%s failed; denying", type(self).__name__, hook)
                deny_on_error(self, hook, arg)
                return None

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(self: Any, arg: Any) -> Any:
        try:
            return fn(self, arg)
        except exceptions.AddonHalt:
            raise  # mitmproxy's "stop the hook chain here", not a failure
        except Exception:
            log.exception("%s.%s failed; denying", type(self).__name__, hook)
            deny_on_error(self, hook, arg)
            return None

    return wrapper  # type: ignore[return-value]
