"""The egress gateway as a mitmproxy script: `mitmweb -s addons/egress.py --set egress_config=PATH`.

Loads the same addons `egressproxy run` embeds, so an operator watches live flows in mitmweb with each flow's
decision (listener, route, backend, verdict) in its comment and denied flows marked. Options are `egress_*`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mitmproxy import ctx

from egressproxy.runtime.gateway_addons import GatewayAddons
from egressproxy.runtime.master import engine_options
from egressproxy.runtime.reloader import ConfigSource, Reloader
from egressproxy.runtime.state import GatewayState

log = logging.getLogger("egressproxy")

# mitmproxy options the gateway needs whatever tool hosts it (mode and confdir stay the host tool's).
_ENGINE = {k: v for k, v in engine_options([], Path(".")).items() if k not in ("mode", "confdir", "termlog_verbosity", "flow_detail")}


class Egress:
    def __init__(self) -> None:
        self.state = GatewayState(Path(".egressproxy"))
        self.reloader = Reloader(ConfigSource(()), self.state)
        self.gateway = GatewayAddons(self.state, self.reloader)
        self.addons = self.gateway.addons
        self._loaded_from: tuple[str, str, str] | None = None

    def load(self, loader: Any) -> None:
        loader.add_option("egress_config", str, "", "EgressGateway configuration: a YAML file or a folder of them.")
        loader.add_option("egress_gateway", str, "", "Which EgressGateway to serve when the config holds several.")
        loader.add_option("egress_secrets_dir", str, "", "Mounted Kubernetes Secret volumes: DIR/<name>/<key>.")
        loader.add_option("egress_data_dir", str, ".egressproxy", "Minted-certificate cache and other state.")

    def configure(self, updated: set[str]) -> None:
        wanted = {k: v for k, v in _ENGINE.items() if getattr(ctx.options, k, v) != v}
        if wanted:
            ctx.options.update(**wanted)
        key = (ctx.options.egress_config, ctx.options.egress_gateway, ctx.options.egress_secrets_dir)
        if not ctx.options.egress_config or key == self._loaded_from:
            return
        self._loaded_from = key
        self.state.data_dir = Path(ctx.options.egress_data_dir)
        self.reloader.source = ConfigSource(
            (ctx.options.egress_config,), ctx.options.egress_gateway or None, ctx.options.egress_secrets_dir or None
        )
        result = self.reloader.load_initial()
        if not result.ok:
            for problem in result.problems:
                log.error("%s", problem)
            raise ValueError(f"egress_config is invalid ({len(result.problems)} problem(s), listed above)")
        self.gateway.upstream_trust.apply(self.gateway.prepare_blocking())
        log.info("egress gateway loaded: generation %d", self.state.snapshot.generation if self.state.snapshot else 0)

    def running(self) -> None:
        self.reloader.start()

    def done(self) -> None:
        self.reloader.stop()


addons = [Egress()]
