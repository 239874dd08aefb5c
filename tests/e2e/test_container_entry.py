"""The image's entry command, run as the image's user outside docker (no engine here).

ENTRYPOINT + CMD are read from the Dockerfile and run as uid 15999 (the Dockerfile's USER) with the image's
folders swapped for temporary ones (`/etc/egressproxy/config`, `/etc/egressproxy/secrets`,
`/var/lib/egressproxy`) and its ports for free ones; the HEALTHCHECK command, equally read from the Dockerfile,
decides readiness. The interpreter of this checkout lives under /root (mode 0700), so when the test runs as root
the process keeps CAP_DAC_READ_SEARCH to read it: it can read, but every write it makes is the uid's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from egressproxy.k8s_manifests import PROXY_UID
from tests.support.dockerfile import exec_form, healthcheck_command, last
from tests.support.gateway import free_port
from tests.support.origins import HttpOrigin

pytestmark = pytest.mark.e2e

SECRET = "ghp_container-SECRET-7731"

CONFIG = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: image}
spec:
  defaultPolicy: deny-all
  upstreamTLS:
    hostAliases: [{ip: 127.0.0.1, hostnames: [origin.test]}]
  listeners:
  - {name: http, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: origin
  annotations: {egressproxy.io/allow-cleartext-credentials: "true"}
spec:
  parentRefs: [{name: image, sectionName: http}]
  hostnames: [origin.test]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {name: token}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: origin}]
  secretRef: {name: origin-token}
  target: Header
  headerName: Authorization
  valuePrefix: "Bearer "
"""


def _as_image_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): cannot drop to the image's uid")
    caps = "+dac_read_search"
    return [setpriv, f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}", "--clear-groups",
            f"--inh-caps={caps}", f"--ambient-caps={caps}"]


def _swap(argv: list[str], swaps: dict[str, str]) -> list[str]:
    out = []
    for arg in argv:
        for old, new in swaps.items():
            arg = arg.replace(old, new)
        out.append(arg)
    return out


def _health(check: list[str], ready_port: int) -> int:
    argv = _swap(check, {"127.0.0.1:8082": f"127.0.0.1:{ready_port}"})
    argv[0] = sys.executable if argv[0] == "python" else argv[0]
    return subprocess.run(argv, capture_output=True, timeout=30).returncode


def test_the_entry_command_serves_as_the_image_user_from_mounted_folders(tmp_path: Path) -> None:
    config, secrets, data = tmp_path / "config", tmp_path / "secrets", tmp_path / "data"
    config.mkdir()
    (config / "gateway.yaml").write_text(textwrap.dedent(CONFIG))
    (secrets / "origin-token").mkdir(parents=True)
    (secrets / "origin-token" / "token").write_text(SECRET)
    data.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(data, PROXY_UID, PROXY_UID)
        tmp_path.chmod(0o755)
    proxy, ready, metrics, admin = free_port(), free_port(), free_port(), free_port()
    command = exec_form(last("ENTRYPOINT")) + exec_form(last("CMD"))
    assert command[0] == "egressproxy"
    command[0] = str(Path(sys.executable).parent / "egressproxy")
    command = _swap(command, {
        "/etc/egressproxy/config": str(config), "/etc/egressproxy/secrets": str(secrets),
        "/var/lib/egressproxy": str(data), "0.0.0.0:8080": f"127.0.0.1:{proxy}", "0.0.0.0:8082": f"0.0.0.0:{ready}",
        "0.0.0.0:9091": f"127.0.0.1:{metrics}", "127.0.0.1:19000": f"127.0.0.1:{admin}",
    })
    check = healthcheck_command()
    assert _health(check, ready) != 0  # nothing serves yet: the check can fail
    log = tmp_path / "gateway.log"
    env = {**os.environ, "HOME": str(data)}
    with open(log, "wb") as out, HttpOrigin() as origin:
        proc = subprocess.Popen(_as_image_user() + command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=data)
        try:
            deadline = time.monotonic() + 30
            while _health(check, ready) != 0:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            uid_line = next(line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                            if line.startswith("Uid:"))
            if os.geteuid() == 0:
                assert uid_line.split()[1:] == [str(PROXY_UID)] * 4
            with httpx.Client(proxy=f"http://127.0.0.1:{proxy}", timeout=10) as client:
                allowed = client.get(f"http://origin.test:{origin.port}/hello")
                denied = client.get(f"http://denied.test:{origin.port}/")
            assert allowed.status_code == 200, allowed.text
            assert allowed.json()["headers"]["authorization"] == f"Bearer {SECRET}"  # read from the mounted folder
            assert denied.status_code == 403 and denied.headers["x-egress-denied"] == "no-route"
            if os.geteuid() == 0:
                assert all(p.stat().st_uid == PROXY_UID for p in data.rglob("*"))
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    assert SECRET not in log.read_text()
