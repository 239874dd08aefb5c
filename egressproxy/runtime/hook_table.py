"""The gateway's addons as one entry in mitmproxy's addon chain: a hook costs a dispatch only where it is defined.

mitmproxy dispatches every hook (client_connected, next_layer, requestheaders, ... some 25 per intercepted
connection) by walking its whole addon chain: for each top-level addon it creates a coroutine, enters a
`safecall` context manager, traverses the addon's children and `getattr`s the hook name, and for every
method it finds it rebuilds the hook's arguments (`Hook.args()`, a `dataclasses.fields` walk). With the
gateway's ~17 addons as separate chain entries that walk was the largest gateway-side cost of a new
connection, and every addon added for a new seam made every event dearer (measured in docs/performance.md).
(The walk itself is now replaced by a plan per hook, looked up once per chain: the boundary patch of
`AddonManager.handle_lifecycle` in egressproxy/engine/mitmproxy_boundary.py.)

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

Idle steps (issue 16): a member with a `step` name (RateLimits' "rate-limit", ...) can be idle for a request:
the configuration that request was decided under gives it nothing to do (no RateLimitPolicy at all, ...).
`idle_of(flow)` names the idle steps of a flow (the routing addon writes them into the flow's record, computed
once per snapshot: egressproxy/runtime/idle_steps.py); on the request hooks (`FLOW_HOOKS`) the table does not
call an idle member's method at all, instead of calling it to have it find out and return. Until the flow has
been routed its idle steps are read again before each stepped member, so the members after the router in the
same `requestheaders` dispatch already skip.

The table is not a container mitmproxy traverses (it has no `addons` attribute): the addons are not
registered by name with mitmproxy, which nothing of ours relies on (they find each other through the
GatewayState), and none of them defines mitmproxy commands.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Container, Iterable, Sequence
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

__all__ = ["FLOW_HOOKS", "HookTable"]

# The logger and message of mitmproxy's own `safecall`, so an addon's failure reads the same as before.
log = logging.getLogger("mitmproxy.addonmanager")

_PASS_THROUGH = (exceptions.AddonHalt, exceptions.OptionsError)

# The hooks of one HTTP request, each called with the flow alone: where a member may be skipped as idle.
FLOW_HOOKS = frozenset({"requestheaders", "request", "responseheaders", "response", "error"})

IdleOf = Callable[[Any], Container[str]]
_NONE_IDLE: frozenset[str] = frozenset()


class HookTable:
    """One mitmproxy addon calling, for each hook, the methods of `members` that define it, in order."""

    def __init__(self, members: Iterable[object], idle_of: IdleOf | None = None) -> None:
        self.members: tuple[object, ...] = tuple(members)
        self.hooks: dict[str, tuple[Callable[..., Any], ...]] = {}
        for name in hooks.all_hooks:
            found = [(a, m) for a, m in ((a, _hook_method(a, name)) for a in self.members) if m is not None]
            if not found:
                continue
            methods = tuple(m for _, m in found)
            self.hooks[name] = methods
            steps = tuple(_step(a) if name in FLOW_HOOKS else None for a, _ in found)
            if idle_of is not None and any(steps):
                setattr(self, name, _stepped_dispatcher(tuple(zip(steps, methods)), idle_of))
            else:
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


def _step(addon: object) -> str | None:
    step = getattr(addon, "step", None)
    return step if isinstance(step, str) and step else None


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


def _stepped_dispatcher(pairs: Sequence[tuple[str | None, Callable[..., Any]]], idle_of: IdleOf) -> Callable[..., Any]:
    """The dispatcher of a request hook: as `_dispatcher`, skipping the members idle for this flow."""
    if any(inspect.iscoroutinefunction(m) for _, m in pairs):

        async def dispatch_async(flow: Any) -> None:
            idle = idle_of(flow)
            for step, method in pairs:
                if step is not None:
                    if not idle:  # not routed yet (or nothing idle): routing may have just decided it
                        idle = idle_of(flow)
                    if step in idle:
                        continue
                try:
                    result = method(flow)
                    if result is not None and inspect.isawaitable(result):
                        await result
                except _PASS_THROUGH:
                    raise
                except Exception as e:
                    _failed(e)

        return dispatch_async

    def dispatch(flow: Any) -> Any:
        idle = idle_of(flow)
        pending = []
        for step, method in pairs:
            if step is not None:
                if not idle:
                    idle = idle_of(flow)
                if step in idle:
                    continue
            try:
                result = method(flow)
            except _PASS_THROUGH:
                raise
            except Exception as e:
                _failed(e)
                continue
            if result is not None and inspect.isawaitable(result):
                pending.append(result)
        if pending:
            return _await_all(pending)
        return None

    return dispatch
