"""Embedding mitmproxy: a lean Master with only the addons the gateway needs, in a deliberate order.

mitmdump loads ~32 default addons and dispatches every hook through all of them; we load mitmproxy's
Core, Proxyserver, NextLayer, TlsConfig (and DnsResolver for dns@ modes) plus ours. Ours sit after Proxyserver
and before NextLayer and TlsConfig, which is also where mitmweb places `-s` scripts, so the same addons behave
the same in both. Ours enter the chain as one `HookTable` (hook_table.py): mitmproxy's dispatch cost grows with
the number of chain entries, not with the hooks we define.

This is also where the gateway's patches of mitmproxy internals are installed (egressproxy/engine/
mitmproxy_boundary.py) and where options that must stay off are checked, before anything listens.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from mitmproxy import master, options
from mitmproxy.addons import core, next_layer, proxyserver, tlsconfig

from egressproxy.engine import mitmproxy_boundary
from egressproxy.engine.certmint import DEFAULT_CAP
from egressproxy.runtime.gateway_addons import GatewayAddons
from egressproxy.runtime.hook_table import HookTable
from egressproxy.runtime.idle_steps import flow_idle_steps
from egressproxy.runtime.reloader import Reloader
from egressproxy.runtime.state import GatewayState
from egressproxy.writable_dirs import writable_or_private

__all__ = ["build_master", "engine_options"]

log = logging.getLogger("egressproxy")


def engine_options(modes: list[str], data_dir: Path) -> dict[str, object]:
    """mitmproxy options the gateway relies on (see ENGINE-NOTES.md for why each matters)."""
    return {
        "mode": modes,
        # Decide before dialling: never connect upstream on CONNECT or accept.
        "connection_strategy": "lazy",
        # mitmproxy's working files; a private temporary folder when --data-dir cannot be written
        "confdir": str(writable_or_private(data_dir / "mitmproxy")),
        # Leaf certificates from the requested name, never copied from the upstream.
        "upstream_cert": False,
        "http2": True,
        # Intercepted bytes that are not HTTP are refused rather than relayed unexamined.
        "rawtcp": False,
        # Clients on pod networks have private or public addresses by design; exposure is the bind address.
        "block_global": False,
        "block_private": False,
        "keep_host_header": True,
        "ssl_insecure": False,
        "termlog_verbosity": "warn",
        "flow_detail": 0,
    }


def build_master(
    modes: list[str],
    state: GatewayState,
    reloader: Reloader,
    *,
    reuse_port: bool = False,
    cert_cache_size: int = DEFAULT_CAP,
) -> tuple[master.Master, GatewayAddons]:
    """The master with our addons and options, mitmproxy patched for them (`reuse_port` for `--workers N`;
    `cert_cache_size` bounds the minted-leaf caches, ours and mitmproxy's alike).

    Raises mitmproxy_boundary.UnsafeOptions when an option that must stay off is on.
    """
    opts = options.Options()
    m = master.Master(opts, event_loop=asyncio.get_running_loop())
    state.flow_traces = False  # no flow list here to show a decision trace in (state.py)
    ours = GatewayAddons(state, reloader)
    m.addons.add(core.Core(), proxyserver.Proxyserver())
    # one chain entry for all of ours, skipping the request steps a flow's snapshot leaves idle: see hook_table.py
    m.addons.add(HookTable(ours.addons, idle_of=flow_idle_steps))
    m.addons.add(next_layer.NextLayer(), tlsconfig.TlsConfig())
    # No DnsResolver: our DnsAnswers addon answers every query itself; forwarding would make UDP/53 a tunnel.
    values = engine_options(modes, state.data_dir)
    known = {k: v for k, v in values.items() if k in opts}
    opts.update(**known)
    mitmproxy_boundary.refuse_unsafe_options(opts)
    refusals = state.metrics.client_refusals
    mitmproxy_boundary.install(
        error_answer=ours.gateway_errors.answer,
        reuse_port=reuse_port,
        h2_refusal=lambda reason: refusals.labels(reason).inc(),
    )
    mitmproxy_boundary.install_client_limits(ours.client_limits.limits, ours.client_limits.refuse)
    ours.cert_minting.resize(cert_cache_size)
    mitmproxy_boundary.bound_cert_store(cert_cache_size)
    return m, ours
