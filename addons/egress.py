"""The egress gateway as a mitmproxy script: `mitmweb -s addons/egress.py --set egress_config=PATH`.

Loads the same addons `egressproxy run` embeds, so an operator watches live flows in mitmweb with each flow's
decision (listener, route, backend, verdict) in its comment and denied flows marked. Options are `egress_*`
(see docs/mitmweb.md).

Failure modes, all closed (no snapshot means the connect gate and the HTTP routes deny everything):
- no `egress_config`: a warning, and every connection is denied until one is set.
- an invalid one at start-up: every problem is logged as an error line `file:line: ...`, nothing is loaded, and
  mitmweb/mitmdump exit with status 1 (their ErrorCheck stops start-up on any error line).
- `egress_config` (or another `egress_*` option) changed at run time to an invalid configuration: the problems
  are logged, the option change is rejected (mitmproxy rolls it back), the running snapshot keeps serving.
- the files change on disk: the same hot reload as `egressproxy run` (a rejected reload keeps the old one).
- `emudhra` or `emudhra_old` set (mitmproxy would sign with a publicly known key): an error at start-up (mitmweb
  exits with status 1), and a rejected option change at run time.

This script is mitmweb's composition root: its `load` installs the gateway's patches of mitmproxy internals
(egressproxy/engine/mitmproxy_boundary.py), as `egressproxy run`'s master does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions

from egressproxy.ca import GatewayCAStore
from egressproxy.engine.certmint import DEFAULT_CAP
from egressproxy.engine import mitmproxy_boundary
from egressproxy.runtime.gateway_addons import GatewayAddons
from egressproxy.runtime.master import engine_options
from egressproxy.runtime.reloader import ConfigSource, Reloader
from egressproxy.capture_store import DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES
from egressproxy.runtime.state import GatewayState

log = logging.getLogger("egressproxy")

# mitmproxy options the gateway needs whatever tool hosts it (mode and confdir stay the host tool's; logging
# verbosity is the operator's). They are re-applied whenever options change, so the UI cannot switch them off.
_ENGINE = {
    k: v
    for k, v in engine_options([], Path(".")).items()
    if k not in ("mode", "confdir", "termlog_verbosity", "flow_detail")
}

_Key = tuple[str, str, str, str]
_LOOPBACK = "127.0.0.1"
_WILDCARDS = ("", "0.0.0.0", "::")


class Egress:
    def __init__(self) -> None:
        self.state = GatewayState(Path(".egressproxy"))
        self.reloader = Reloader(ConfigSource(()), self.state)
        self.gateway = GatewayAddons(self.state, self.reloader)
        self.addons = self.gateway.addons
        self._loaded_from: _Key | None = None
        self._warned_unset = False
        self._running = False
        self._captures: Any = None  # the capture store and OTLP export, started once mitmweb runs

    def load(self, loader: Any) -> None:
        refusals = self.state.metrics.client_refusals
        mitmproxy_boundary.install(
            error_answer=self.gateway.gateway_errors.answer, h2_refusal=lambda reason: refusals.labels(reason).inc()
        )
        mitmproxy_boundary.install_client_limits(self.gateway.client_limits.limits, self.gateway.client_limits.refuse)
        loader.add_option(
            "egress_config", str, "", "EgressGateway configuration: a YAML file or a folder of them (recursively)."
        )
        loader.add_option("egress_gateway", str, "", "Which EgressGateway to serve when the config holds several.")
        loader.add_option("egress_secrets_dir", str, "", "Mounted Kubernetes Secret volumes: DIR/<name>/<key>.")
        loader.add_option(
            "egress_data_dir",
            str,
            ".egressproxy",
            "Minted-certificate cache, gateway CAs (ca/<ns>/<name>/), upstream trust bundle files and the capture "
            "store (captures.db, read by `egressproxy captures`).",
        )
        loader.add_option(
            "egress_cert_cache_size",
            int,
            DEFAULT_CAP,
            "Minted interception certificates kept in memory per CA (least recently used dropped first); "
            "`egressproxy run --cert-cache-size`.",
        )
        mitmproxy_boundary.bound_cert_store(DEFAULT_CAP)  # until configure sees the option's value

    def configure(self, updated: set[str]) -> None:
        try:
            mitmproxy_boundary.refuse_unsafe_options(ctx.options)
        except mitmproxy_boundary.UnsafeOptions as e:
            log.error("%s", e)  # at start-up an error line makes mitmweb/mitmdump exit with status 1
            raise exceptions.OptionsError(str(e)) from None
        if "egress_cert_cache_size" in updated:
            self._bound_cert_caches(ctx.options.egress_cert_cache_size)
        wanted = {k: v for k, v in _ENGINE.items() if k in ctx.options and getattr(ctx.options, k) != v}
        if "listen_host" in ctx.options and not ctx.options.listen_host:
            # Never an open proxy by default (DESIGN.md 3): a mode without an address binds loopback, not every
            # interface as mitmweb would. `--mode regular@0.0.0.0:8080` or `--set listen_host=0.0.0.0` opts in.
            wanted["listen_host"] = _LOOPBACK
        if wanted:
            ctx.options.update(**wanted)  # re-enters configure, which then does the rest
            return
        o = ctx.options
        key: _Key = (o.egress_config, o.egress_gateway, o.egress_secrets_dir, o.egress_data_dir)
        if key == self._loaded_from:
            return
        if not o.egress_config:
            if self.state.snapshot is None and not self._warned_unset:
                self._warned_unset = True
                log.warning("egress_config is not set: every connection is denied (--set egress_config=PATH)")
            return
        source = ConfigSource(
            (o.egress_config,),
            o.egress_gateway or None,
            o.egress_secrets_dir or None,
            GatewayCAStore(o.egress_data_dir),  # a Terminate listener without caCertRef: its gateway's minted CA
        )
        if self._running:
            # A change at run time: validate first, so a bad one is rejected without touching the running gateway.
            trial = source.build(0)
            if not trial.ok:
                self._reject(o.egress_config, trial.problems)
        previous = (self.reloader.source, self.state.data_dir)
        self.state.data_dir = Path(o.egress_data_dir)
        self.reloader.source = source
        result = self.reloader.load_initial()
        if not result.ok:
            if self._running:  # the files changed between the trial and the load
                self.reloader.source, self.state.data_dir = previous
                self._reject(o.egress_config, result.problems)
            # Start-up: every problem is an error line; mitmweb/mitmdump exit on errors logged during start-up,
            # and until then nothing is served (no snapshot: every CONNECT and request is denied).
            self._report(result.problems)
            log.error(
                "egress_config %s is invalid (%d problem(s), listed above): the gateway is not serving",
                o.egress_config,
                len(result.problems),
            )
            return
        self._loaded_from = key
        self.gateway.upstream_trust.apply(self.gateway.prepare_blocking())
        snapshot = self.state.snapshot
        assert snapshot is not None
        log.info(
            "egress gateway %s/%s loaded from %s: generation %d, %d file(s)",
            snapshot.gateway.ref.namespace,
            snapshot.gateway.ref.name,
            o.egress_config,
            snapshot.generation,
            len(result.files),
        )

    def _bound_cert_caches(self, size: int) -> None:
        if size < 1:
            raise exceptions.OptionsError(f"egress_cert_cache_size must be at least 1, got {size}")
        self.gateway.cert_minting.resize(size)
        mitmproxy_boundary.bound_cert_store(size)

    @staticmethod
    def _report(problems: tuple[str, ...]) -> None:
        for problem in problems:
            log.error("%s", problem)

    def _reject(self, path: str, problems: tuple[str, ...]) -> None:
        """Log the problems and refuse the option change (mitmproxy rolls it back)."""
        self._report(problems)
        serving = self.state.snapshot
        still = f"; still serving generation {serving.generation}" if serving is not None else ""
        raise exceptions.OptionsError(
            f"egress_config {path} is invalid ({len(problems)} problem(s), see the log){still}"
        )

    async def running(self) -> None:
        self._running = True
        await self._keep_listeners_local()
        self.reloader.start()
        if self._captures is None:
            from egressproxy.runtime.captures import start_captures

            # Under egress_data_dir as it is now (a later change of the option keeps this store), with run's
            # default retention (docs/captures.md).
            self._captures = start_captures(self.state, max_age=DEFAULT_MAX_AGE, max_bytes=DEFAULT_MAX_BYTES)

    async def _keep_listeners_local(self) -> None:
        """Rebind to loopback the listeners mitmweb opened on every interface before this script was loaded.

        mitmproxy binds its proxy servers before it loads `-s` scripts, so the `listen_host` set in `configure`
        comes too late for them: a mode without an address (mitmweb's default `regular`, port 8080) was bound
        to the wildcard address. It is restarted here, before `running` completes, on 127.0.0.1.
        """
        proxyserver = ctx.master.addons.get("proxyserver")
        if proxyserver is None or ctx.options.listen_host != _LOOPBACK:
            return  # the operator chose the address
        rebound = False
        for server in list(proxyserver.servers):
            if server.mode.custom_listen_host is not None or not server.is_running:
                continue
            if not any(addr[0] in _WILDCARDS for addr in server.listen_addrs):
                continue
            await server.stop()
            try:
                await server.start()
            except Exception as e:  # the port was taken in between: nothing listens, which must not go unnoticed
                log.error("could not rebind %s on %s: %s", server.mode.full_spec, _LOOPBACK, e)
                ctx.master.shutdown()
                return
            rebound = True
            log.info(
                "%s: listening on loopback only (--mode %s@0.0.0.0:PORT to listen on every interface)",
                server.mode.full_spec,
                server.mode.type_name,
            )
        if rebound:
            await proxyserver.servers.changed.send()

    def done(self) -> None:
        self.reloader.stop()
        if self._captures is not None:
            self._captures.close()


addons = [Egress()]
