"""docs/clients.md's recipes, read from the page and run with the real clients: the page's
`eval "$(egressproxy trust ...)"` then the client's block (tests/support/doc_blocks.py: `tested:` markers).

The machine's "system store" is a test CA named by SSL_CERT_FILE (as a corporate CA would be): it signed every
origin. The gateway intercepts `intercepted.test` (its minted CA signs what the client sees) and passes
`passthrough.test` through (the origin's own certificate). A bundle of only one of the two CAs would fail one
of the two hosts; `egressproxy trust` writes both, and each client must reach both.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.doc_blocks import doc_block
from tests.support.gateway import GatewayProcess
from tests.support.llm_origin import LlmOrigin
from tests.support.origins import HttpOrigin
from tests.support.pki import TestCA

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
DOC_URL = "https://httpbin.org/get"
NODE_MODULES = Path(__file__).resolve().parents[1] / "node" / "node_modules"

CONFIG = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: clients}
spec:
  defaultPolicy: deny-all
  upstreamTLS:
    hostAliases: [{ip: 127.0.0.1, hostnames: [intercepted.test, passthrough.test, llm.test]}]
  listeners:
  - {name: https, protocol: HTTPS, tls: {mode: Terminate}}
  - {name: tls, protocol: TLS, tls: {mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: intercepted}
spec:
  parentRefs: [{name: clients, sectionName: https}]
  hostnames: [intercepted.test, llm.test]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: passthrough}
spec:
  parentRefs: [{name: clients, sectionName: tls}]
  hostnames: [passthrough.test]
"""


def doc(block_id: str) -> str:
    """The block docs/clients.md marks `tested: tests/e2e/test_client_recipes.py#<block_id>`, as written."""
    return doc_block("clients.md", block_id)


@dataclass
class Setup:
    gw: GatewayProcess
    system_ca: Path
    intercepted: str
    passthrough: str
    llm: str
    tmp: Path

    @property
    def bundle(self) -> Path:
        return self.gw.data_dir / "bundle.crt"  # where the documented trust line writes it (its data dir swapped)

    def trust_line(self) -> str:
        """docs/clients.md's `eval "$(egressproxy trust ...)"` with this gateway's data dir and proxy URL."""
        return doc("trust").replace(".egressproxy", shlex.quote(str(self.gw.data_dir))).replace(
            "http://127.0.0.1:8080", self.gw.proxy_url)

    def recipe(self, client: str, *, trust_line: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """The documented trust line, then the client, in one shell (BIN first on PATH)."""
        trust = self.trust_line() if trust_line else ""
        base = {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(self.tmp), "SSL_CERT_FILE": str(self.system_ca)}
        return subprocess.run(
            ["bash", "-ec", f"{trust}\n{client}"], capture_output=True, text=True, timeout=60, env={**base, **(env or {})},
            cwd=self.tmp,
        )

    def each_host(self, block_id: str, **kwargs: object) -> list[str]:
        """The documented block run once per test host (its URL swapped), the origins that answered."""
        out = []
        for url in (self.intercepted, self.passthrough):
            out += origins(self.recipe(doc(block_id).replace(DOC_URL, url), **kwargs))  # type: ignore[arg-type]
        return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("clients")
    ca = TestCA("the machine's system CA")
    (tmp / "system-ca.pem").write_bytes(ca.cert_pem)
    leaf = ca.issue("intercepted.test", "passthrough.test", "llm.test").write(tmp, "origin")
    (tmp / "config").mkdir()
    (tmp / "config" / "gateway.yaml").write_text(textwrap.dedent(CONFIG))
    gw = GatewayProcess(tmp / "config", tmp / "data", env={"SSL_CERT_FILE": str(tmp / "system-ca.pem")})
    with HttpOrigin(tls=leaf, name="intercepted") as a, HttpOrigin(tls=leaf, name="passthrough") as b:
        with LlmOrigin(3, 4, tls=leaf) as llm, gw:
            yield Setup(
                gw, tmp / "system-ca.pem", f"https://intercepted.test:{a.port}/x",
                f"https://passthrough.test:{b.port}/y", f"https://llm.test:{llm.port}/v1", tmp,
            )


def origins(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads(line)["origin"] for line in result.stdout.splitlines() if line.startswith("{")]


def test_trust_prints_a_line_per_client_family(setup: Setup) -> None:
    result = setup.recipe("env | sort")
    assert result.returncode == 0, result.stderr
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "NPM_CONFIG_CAFILE",
                "PIP_CERT"):
        assert env[var] == str(setup.bundle), var
    assert env["HTTPS_PROXY"] == setup.gw.proxy_url


def test_curl(setup: Setup) -> None:
    assert setup.each_host("curl") == ["intercepted", "passthrough"]


def test_curl_without_the_bundle_fails_on_the_intercepted_host(setup: Setup) -> None:
    """The recipe's trust line matters: with the system CA alone, the gateway's certificate is refused."""
    curl = doc("curl").replace(DOC_URL, setup.intercepted)
    result = setup.recipe(f"unset CURL_CA_BUNDLE SSL_CERT_FILE\nexport CURL_CA_BUNDLE={setup.system_ca}\n{curl}")
    assert result.returncode == 60, result.stderr  # CURLE_PEER_FAILED_VERIFICATION


def test_httpx(setup: Setup) -> None:
    assert setup.each_host("httpx") == ["intercepted", "passthrough"]


def test_requests(setup: Setup) -> None:
    assert setup.each_host("requests") == ["intercepted", "passthrough"]


def test_the_openai_sdk(setup: Setup) -> None:
    result = setup.recipe(doc("openai"), env={"OPENAI_API_KEY": "dummy", "OPENAI_BASE_URL": setup.llm})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hi"


def test_node_with_undici_env_http_proxy_agent(setup: Setup) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (NODE_MODULES / "undici").is_dir():
        pytest.skip("undici is not installed for the Node recipe: scripts/test-prerequisites (npm) installs it")
    run = f"export NODE_PATH={shlex.quote(str(NODE_MODULES))}\nnode -e {shlex.quote(doc('node'))}"
    assert origins(setup.recipe(run.replace(DOC_URL, setup.intercepted))) + origins(
        setup.recipe(run.replace(DOC_URL, setup.passthrough))) == ["intercepted", "passthrough"]


GO_CLIENT = """\
package main

import (
\t"fmt"
\t"io"
\t"net/http"
\t"os"
)

// net/http's default transport reads HTTPS_PROXY; crypto/x509 reads SSL_CERT_FILE.
func main() {
\tfor _, url := range os.Args[1:] {
\t\tDOC_LINE
\t\tif err != nil {
\t\t\tfmt.Fprintln(os.Stderr, err)
\t\t\tos.Exit(1)
\t\t}
\t\tbody, _ := io.ReadAll(resp.Body)
\t\tfmt.Println(string(body))
\t}
}
"""


def test_go(setup: Setup) -> None:
    if shutil.which("go") is None:
        pytest.skip("no Go toolchain (apt-get install golang-go)")
    line = doc("go").strip().replace(f'"{DOC_URL}"', "url")  # docs/clients.md's line, reading each test URL
    (setup.tmp / "main.go").write_text(GO_CLIENT.replace("DOC_LINE", line))
    result = setup.recipe(f"go run main.go {setup.intercepted} {setup.passthrough}")
    assert origins(result) == ["intercepted", "passthrough"]
