"""The gateway's addons as one entry in mitmproxy's addon chain: a hook costs a dispatch only where it is defined.

mitmproxy dispatches every hook (client_connected, next_layer, requestheaders, ... some 25 per intercepted
connection) by walking its whole addon chain: for each top-level addon it creates a coroutine, enters a
`safecall` context manager, traverses the addon's children and `getattr`s the hook name, and for every
method it finds it rebuilds the hook's arguments (`Hook.args()`, a `dataclasses.fields` walk). With the
gateway's ~17 addons as separate chain entries that walk was the largest gateway-side cost of a new
connection, and every addon added for a new seam made every event dearer (measured in docs/performance.md).

`HookTable` is one chain entry standing for all of them. At construction it looks up, once, which addons
define which hook and keeps the bound methods in order; mitmproxy then finds on the table only the hooks
some addon implements, builds their arguments once, and the table calls the methods in the same order as
before. What mitmproxy's per-addon dispatch guaranteed is kept:

- order: the addons' methods run in list order, each awaited before the next;
- isolation: an exception in one addon's hook is logged as mitmproxy's `safecall` logs it ("Addon error")
  and the next addon still gets the event; `AddonHalt` (stop the chain) and `OptionsError` (refuse an
  option change) propagate as they did;
- sync hooks stay sync (mitmproxy calls some hooks, `load` and `configure`, from sync code): a hook becomes
  a coroutine on the table only when one of its methods is a coroutine function.

The table is not a container mitmproxy traverses (it has no `addons` attribute): the addons are not
registered by name with mitmproxy, which nothing of ours relies on (they find each other through the
GatewayState), and none of them defines mitmproxy commands.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mitmproxy import exceptions, hooks

# Importing the modules that define mitmproxy's hooks registers them in `hooks.all_hooks`.
from mitmproxy import addonmanager as _addonmanager  # noqa: F401  (load)
from mitmproxy.proxy import server_hooks as _server_hooks  # noqa: F401
from mitmproxy.proxy.layers import dns as _dns  # noqa: F401
from mitmproxy.proxy.layers import http as _http  # noqa: F401
from mitmproxy.proxy.layers import quic as _quic  # noqa: F401
from mitmproxy.proxy.layers import tcp as _tcp  # noqa: F401
from mitmproxy.proxy.layers import tls as _tls  # noqa: F401
from mitmproxy.proxy.layers import udp as _udp  # noqa: F401
from mitmproxy.proxy.layers import websocket as _websocket  # noqa: F401

__all__ = ["HookTable"]

# The logger and message of mitmproxy's own `safecall`, so an addon's failure reads the same as before.
log = logging.getLogger("mitmproxy.addonmanager")

_PASS_THROUGH = (exceptions.AddonHalt, exceptions.OptionsError)


class HookTable:
    """One mitmproxy addon calling, for each hook, the methods of `members` that define it, in order."""

    def __init__(self, members: Iterable[object]) -> None:
        self.members: tuple[object, ...] = tuple(members)
        self.hooks: dict[str, tuple[Callable[..., Any], ...]] = {}
        for name in hooks.all_hooks:
            methods = tuple(m for m in (_hook_method(a, name) for a in self.members) if m is not None)
            if methods:
                self.hooks[name] = methods
                setattr(self, name, _dispatcher(methods))

    def __repr__(self) -> str:
        return f"HookTable({', '.join(type(a).__name__ for a in self.members)})"


def _hook_method(addon: object, name: str) -> Callable[..., Any] | None:
    func = getattr(addon, name, None)
    if func is None or inspect.ismodule(func):
        return None  # mitmproxy skips a module imported under a hook's name the same way
    if not callable(func):
        raise exceptions.AddonManagerError(f"Addon handler {name} ({addon}) not callable")
    return func


def _failed(error: Exception) -> None:
    log.error(f"Addon error: {error}", exc_info=(type(error), error, error.__traceback__))


def _dispatcher(methods: Sequence[Callable[..., Any]]) -> Callable[..., Any]:
    if any(inspect.iscoroutinefunction(m) for m in methods):

        async def dispatch_async(*args: Any) -> None:
            for method in methods:
                try:
                    result = method(*args)
                    if result is not None and inspect.isawaitable(result):
                        await result
                except _PASS_THROUGH:
                    raise
                except Exception as e:
                    _failed(e)

        return dispatch_async

    def dispatch(*args: Any) -> Any:
        pending = []
        for method in methods:
            try:
                result = method(*args)
            except _PASS_THROUGH:
                raise
            except Exception as e:
                _failed(e)
                continue
            if result is not None and inspect.isawaitable(result):
                pending.append(result)
        if pending:  # a sync method that returned an awaitable (mitmproxy awaits those too): await in order
            return _await_all(pending)
        return None

    return dispatch


async def _await_all(pending: list[Any]) -> None:
    for result in pending:
        try:
            await result
        except _PASS_THROUGH:
            raise
        except Exception as e:
            _failed(e)
