"""The composition roots install the mitmproxy patches; addons do not (egressproxy/engine/mitmproxy_boundary.py).

Each case runs in a fresh interpreter, so the patches installed by other tests in this process cannot hide a
composition root that forgot them: `egressproxy run`'s master (egressproxy/runtime/master.py) and mitmweb's
script (addons/egress.py) each install them, and loading the gateway's addons alone installs nothing.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PATCHED = """
from mitmproxy.proxy import mode_servers
from mitmproxy.proxy.layers import http as http_layers, modes
from egressproxy.engine import mitmproxy_boundary as b

def patched():
    return {
        "transparent_start": modes.TransparentProxy._handle_event is b._transparent_start,
        "error_answers": http_layers.HttpStream.handle_protocol_error is b._handle_protocol_error,
        "reuse_port": mode_servers.AsyncioServerInstance.listen is b._listen_reuse_port,
    }
"""


def _run(body: str, tmp_path: Path) -> str:
    script = textwrap.dedent(PATCHED) + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60,
                         env={"PYTHONPATH": str(REPO), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_run_master_installs_every_patch_and_the_error_answers(tmp_path: Path) -> None:
    body = f"""
    import asyncio
    from pathlib import Path
    from egressproxy.runtime.master import build_master
    from egressproxy.runtime.reloader import ConfigSource, Reloader
    from egressproxy.runtime.state import GatewayState

    async def main():
        state = GatewayState(Path({str(tmp_path)!r}))
        before = patched()
        traces = state.flow_traces
        master, ours = build_master(["regular@127.0.0.1:0"], state, Reloader(ConfigSource(()), state), reuse_port=True)
        print(before, patched(), b._error_factory == ours.gateway_errors.answer, traces, state.flow_traces)

    asyncio.run(main())
    """
    before_and_after = _run(body, tmp_path)
    none = "{'transparent_start': False, 'error_answers': False, 'reuse_port': False}"
    every = "{'transparent_start': True, 'error_answers': True, 'reuse_port': True}"
    # ... and, having no flow list, turns the per-flow decision trace off (GatewayState.flow_traces)
    assert before_and_after == f"{none} {every} True True False"


def test_reuse_port_is_only_patched_for_workers(tmp_path: Path) -> None:
    body = f"""
    import asyncio
    from pathlib import Path
    from egressproxy.runtime.master import build_master
    from egressproxy.runtime.reloader import ConfigSource, Reloader
    from egressproxy.runtime.state import GatewayState

    async def main():
        state = GatewayState(Path({str(tmp_path)!r}))
        build_master(["regular@127.0.0.1:0"], state, Reloader(ConfigSource(()), state))
        print(patched()["reuse_port"])

    asyncio.run(main())
    """
    assert _run(body, tmp_path) == "False"


def test_the_mitmweb_script_installs_the_patches_when_loaded(tmp_path: Path) -> None:
    body = """
    from mitmproxy.test import taddons
    from addons.egress import Egress

    egress = Egress()
    before = patched()
    with taddons.context(egress) as tctx:
        print(before["transparent_start"], before["error_answers"], patched()["transparent_start"],
              patched()["error_answers"], b._error_factory == egress.gateway.gateway_errors.answer,
              egress.state.flow_traces)
    """
    assert _run(body, tmp_path) == "False False True True True True"  # mitmweb shows each flow's trace


def test_loading_the_gateway_addons_alone_patches_nothing(tmp_path: Path) -> None:
    body = f"""
    from pathlib import Path
    from mitmproxy.test import taddons
    from egressproxy.runtime.gateway_addons import GatewayAddons
    from egressproxy.runtime.reloader import ConfigSource, Reloader
    from egressproxy.runtime.state import GatewayState

    state = GatewayState(Path({str(tmp_path)!r}))
    gateway = GatewayAddons(state, Reloader(ConfigSource(()), state))
    with taddons.context(*gateway.addons):
        print(sorted(k for k, v in patched().items() if v))
    """
    assert _run(body, tmp_path) == "[]"


def test_the_run_master_bounds_both_leaf_caches_alike(tmp_path: Path) -> None:
    """`--cert-cache-size` reaches our CertMint caches and mitmproxy's CertStore (100 by default, no option)."""
    body = f"""
    import asyncio
    from pathlib import Path
    from mitmproxy import certs
    from egressproxy.runtime.master import build_master
    from egressproxy.runtime.reloader import ConfigSource, Reloader
    from egressproxy.runtime.state import GatewayState

    async def main():
        state = GatewayState(Path({str(tmp_path)!r}))
        before = certs.CertStore.STORE_CAP
        master, ours = build_master(["regular@127.0.0.1:0"], state, Reloader(ConfigSource(()), state), cert_cache_size=7)
        print(before, certs.CertStore.STORE_CAP, ours.cert_minting.cap)

    asyncio.run(main())
    """
    assert _run(body, tmp_path) == "100 7 7"


def test_the_mitmweb_option_bounds_both_leaf_caches_alike(tmp_path: Path) -> None:
    body = """
    from mitmproxy import certs
    from mitmproxy.test import taddons
    from addons.egress import Egress

    egress = Egress()
    with taddons.context(egress) as tctx:
        default = (certs.CertStore.STORE_CAP, egress.gateway.cert_minting.cap)
        tctx.options.update(egress_cert_cache_size=9)
        print(default, certs.CertStore.STORE_CAP, egress.gateway.cert_minting.cap)
    """
    assert _run(body, tmp_path) == "(4096, 4096) 9 9"
