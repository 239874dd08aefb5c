"""The `render-k8s --sidecar` pod reproduced in a network namespace exactly as its manifest says.

The manifest is rendered from a config, then each of its containers runs in the "pod" (a fresh network namespace,
tests/e2e/test_transparent.py's `pod` fixture) in the manifest's order, with the manifest's args, uids and env:
`egress-trust` (uid 15999) mints the CA and writes the bundle, `egress-iptables` (root) applies the rules,
`egressproxy` (uid 15999) serves the ConfigMap's config with the mounted Secret, and the workload (`app`, its uid
and its trust variables) uses curl with no proxy settings. Only the image's folders are swapped for temporary ones
and the side ports for free ones. Like the other netns tests, processes under another uid keep
CAP_DAC_READ_SEARCH to read pytest's 0700 folders and the interpreter under /root.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ruamel.yaml import YAML

from egressproxy.cli import main
from tests.e2e.test_transparent import _REASON, CMD_TIMEOUT, Pod, netns_works, pod  # noqa: F401 (fixtures)
from tests.support.gateway import free_port
from tests.support.origins import HttpOrigin
from tests.support.pki import TestCA

pytestmark = [pytest.mark.e2e, pytest.mark.netns]
if _REASON is not None:
    pytestmark.append(pytest.mark.skip(reason=_REASON))

BIN = str(Path(sys.executable).parent / "egressproxy")
NAMES = ("api.shop.test", "pass.shop.test", "plain.shop.test", "denied.shop.test")
READ = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]

CONFIG = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {{name: eg, namespace: shop}}
spec:
  defaultPolicy: deny-all
  upstreamTLS:
    additionalTrustBundleSecretRef: {{name: origin-ca}}
    hostAliases: [{{ip: {ip}, hostnames: [api.shop.test, pass.shop.test, plain.shop.test, denied.shop.test]}}]
  listeners:
  - {{name: https, protocol: HTTPS, tls: {{mode: Terminate}}}}
  - {{name: http, protocol: HTTP}}
  - {{name: pass, protocol: TLS, tls: {{mode: Passthrough}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: shop}}
spec:
  parentRefs: [{{name: eg, sectionName: https}}, {{name: eg, sectionName: http}}]
  hostnames: [api.shop.test, plain.shop.test]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: pass, namespace: shop}}
spec:
  parentRefs: [{{name: eg, sectionName: pass}}]
  hostnames: [pass.shop.test]
---
apiVersion: v1
kind: Secret
metadata: {{name: origin-ca, namespace: shop}}
stringData:
  ca.crt: |
{ca}
"""


def render(config: Path) -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["render-k8s", "-c", str(config), "--sidecar"]) == 0
    return {d["kind"]: d for d in YAML(typ="safe").load_all(out.getvalue()) if d}


def swap(args: list[str], swaps: dict[str, str]) -> list[str]:
    out = []
    for arg in args:
        for old, new in swaps.items():
            arg = arg.replace(old, new)
        out.append(arg)
    return out


def as_uid(container: dict[str, Any]) -> list[str]:
    uid = container["securityContext"]["runAsUser"]
    if uid == 0:
        return []
    gid = container["securityContext"].get("runAsGroup", uid)
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *READ]


class Sidecar:
    def __init__(self, pod: Pod, tmp: Path, origin_ca: TestCA, tls: HttpOrigin, plain: HttpOrigin) -> None:
        self.pod, self.tmp, self.tls, self.plain = pod, tmp, tls, plain
        ca = textwrap.indent(origin_ca.cert_pem.decode(), "    ")
        (tmp / "src").mkdir()
        (tmp / "src" / "gateway.yaml").write_text(CONFIG.format(ip=pod.host_ip, ca=ca))
        (tmp / "origin-ca.pem").write_bytes(origin_ca.cert_pem)
        self.manifests = render(tmp / "src")
        pod_spec = self.manifests["Deployment"]["spec"]["template"]["spec"]
        self.containers = {c["name"]: c for c in [*pod_spec["initContainers"], *pod_spec["containers"]]}
        self.order = [c["name"] for c in pod_spec["initContainers"]]
        self.ready, self.admin, self.metrics = free_port(), free_port(), free_port()
        for d in ("config", "data", "trust", "secrets/origin-ca", "tmp"):
            (tmp / d).mkdir(parents=True)
        os.chown(tmp / "data", 15999, 15999)
        os.chown(tmp / "trust", 15999, 15999)
        (tmp / "config" / "gateway.yaml").write_text(self.manifests["ConfigMap"]["data"]["gateway.yaml"])
        (tmp / "secrets" / "origin-ca" / "ca.crt").write_bytes(origin_ca.cert_pem)  # the mounted Secret
        self.swaps = {
            "/etc/egressproxy/config": str(tmp / "config"), "/etc/egressproxy/secrets": str(tmp / "secrets"),
            "/etc/egressproxy/trust": str(tmp / "trust"), "/var/lib/egressproxy": str(tmp / "data"),
            "0.0.0.0:8082": f"{pod.pod_ip}:{self.ready}", "0.0.0.0:9091": f"{pod.pod_ip}:{self.metrics}",
            "127.0.0.1:19000": f"127.0.0.1:{self.admin}",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self, name: str) -> list[str]:
        container = self.containers[name]
        return self.pod.exec(*as_uid(container), BIN, *swap(container["args"], self.swaps))

    def init(self, name: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.argv(name), capture_output=True, text=True, timeout=CMD_TIMEOUT,
                                env={**os.environ, **(env or {})})
        assert result.returncode == 0, f"{name}: {result.stderr}"
        return result

    def start_proxy(self) -> None:
        log = open(self.tmp / "gateway.log", "wb")
        env = {**os.environ, "HOME": str(self.tmp / "data")}  # upstream trust: the mounted origin-ca Secret
        self.proc = subprocess.Popen(self.argv("egressproxy"), stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while True:  # the manifest's startup probe: GET /ready
            assert self.proc.poll() is None, self.logs()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://{self.pod.pod_ip}:{self.ready}/ready", timeout=1).status_code == 200:
                    return
            assert time.monotonic() < deadline, self.logs()
            time.sleep(0.1)

    def logs(self) -> str:
        return (self.tmp / "gateway.log").read_text(errors="replace")

    def app_curl(self, *args: str, uid: int | None = None) -> subprocess.CompletedProcess[str]:
        """curl as the workload: its uid and exactly its env from the manifest (no proxy variables)."""
        app = self.containers["app"]
        env = {e["name"]: swap([e["value"]], self.swaps)[0] for e in app["env"]}
        user = as_uid(app) if uid is None else ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *READ]
        # --resolve stands in for the cluster's DNS: names resolve to the origins' address, as they would.
        names = [f"{n}:{p}:{self.pod.host_ip}" for n in NAMES for p in (self.tls.port, self.plain.port)]
        resolve = [a for r in names for a in ("--resolve", r)]
        argv = self.pod.exec(*user, "curl", "-sS", "--max-time", "10", *resolve, *args)
        return subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env})

    def stop(self) -> None:
        subprocess.run(self.pod.exec(BIN, "iptables", "--clean"), capture_output=True, timeout=CMD_TIMEOUT)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


@pytest.fixture(scope="module")
def sidecar(pod: Pod, origin_ca: TestCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    tmp = tmp_path_factory.mktemp("sidecar-manifest")
    tmp.chmod(0o755)
    cert, key = origin_ca.issue("api.shop.test", "pass.shop.test").write(tmp, "origin")
    with HttpOrigin(pod.host_ip, 0, tls=(cert, key), name="tls") as tls, HttpOrigin(pod.host_ip, 0, name="plain") as plain:
        s = Sidecar(pod, tmp, origin_ca, tls, plain)
        try:
            assert s.order == ["egress-trust", "egress-iptables", "egressproxy"]
            # The image's "system CAs" here: the test origin CA (a real image has Debian's).
            s.init("egress-trust", env={"SSL_CERT_FILE": str(tmp / "origin-ca.pem")})
            applied = s.init("egress-iptables")
            assert "uid 15999 dials out directly" in applied.stdout
            s.start_proxy()
            yield s
        finally:
            s.stop()


def test_the_workload_reaches_an_intercepted_host_trusting_only_its_bundle(sidecar: Sidecar) -> None:
    result = sidecar.app_curl(f"https://api.shop.test:{sidecar.tls.port}/v1")
    assert result.returncode == 0, result.stderr
    assert '"origin": "tls"' in result.stdout
    assert (sidecar.tmp / "data" / "ca" / "shop" / "eg" / "ca.crt").stat().st_uid == 15999  # minted by egress-trust
    assert "interception CA reused" in sidecar.logs()  # the proxy did not mint a second one


def test_the_workload_reaches_a_passthrough_host(sidecar: Sidecar) -> None:
    result = sidecar.app_curl(f"https://pass.shop.test:{sidecar.tls.port}/p")
    assert result.returncode == 0, result.stderr
    assert '"origin": "tls"' in result.stdout


def test_a_denied_host_is_refused(sidecar: Sidecar) -> None:
    result = sidecar.app_curl("-i", f"http://denied.shop.test:{sidecar.plain.port}/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.1 403") and "x-egress-denied: no-route" in result.stdout.lower()


def test_the_proxy_uid_is_not_looped_and_the_workload_cannot_bypass(sidecar: Sidecar) -> None:
    direct = f"http://{sidecar.pod.host_ip}:{sidecar.plain.port}/direct"
    as_proxy = sidecar.app_curl("-i", direct, uid=15999)  # exempt: straight to the origin
    assert as_proxy.returncode == 0 and '"origin": "plain"' in as_proxy.stdout, as_proxy.stderr
    as_app = sidecar.app_curl("-i", direct)  # redirected: a bare address has no route, deny-all
    assert as_app.returncode == 0 and as_app.stdout.startswith("HTTP/1.1 403"), as_app.stdout + as_app.stderr
