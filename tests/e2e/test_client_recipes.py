"""docs/clients.md's recipes, run with the real clients: `eval "$(egressproxy trust ...)"` then the client.

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

from tests.support.gateway import GatewayProcess
from tests.support.llm_origin import LlmOrigin
from tests.support.origins import HttpOrigin
from tests.support.pki import TestCA

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
CLIENTS_DOC = Path(__file__).resolve().parents[2] / "docs" / "clients.md"
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


@dataclass
class Setup:
    gw: GatewayProcess
    system_ca: Path
    intercepted: str
    passthrough: str
    llm: str
    tmp: Path

    def recipe(self, client: str, *, trust_line: bool = True) -> subprocess.CompletedProcess[str]:
        """The documented recipe: the trust line, then the client, in one shell (BIN first on PATH)."""
        trust = "" if not trust_line else (
            f"eval \"$(egressproxy trust --data-dir {shlex.quote(str(self.gw.data_dir))} "
            f"--out {shlex.quote(str(self.tmp / 'egress-bundle.crt'))} --proxy {self.gw.proxy_url})\""
        )
        env = {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(self.tmp), "SSL_CERT_FILE": str(self.system_ca)}
        return subprocess.run(
            ["bash", "-ec", f"{trust}\n{client}"], capture_output=True, text=True, timeout=60, env=env, cwd=self.tmp
        )


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
    bundle = str(setup.tmp / "egress-bundle.crt")
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "NPM_CONFIG_CAFILE",
                "PIP_CERT"):
        assert env[var] == bundle, var
    assert env["HTTPS_PROXY"] == setup.gw.proxy_url


def test_curl(setup: Setup) -> None:
    result = setup.recipe(f"curl -sS {setup.intercepted}; echo; curl -sS {setup.passthrough}; echo")
    assert origins(result) == ["intercepted", "passthrough"]


def test_curl_without_the_bundle_fails_on_the_intercepted_host(setup: Setup) -> None:
    """The recipe's trust line matters: with the system CA alone, the gateway's certificate is refused."""
    result = setup.recipe(f"unset CURL_CA_BUNDLE SSL_CERT_FILE\ncurl -sS --cacert {setup.system_ca} {setup.intercepted}")
    assert result.returncode == 60, result.stderr  # CURLE_PEER_FAILED_VERIFICATION


def _python(code: str) -> str:
    return f"python -c {shlex.quote(textwrap.dedent(code))}"


def test_httpx(setup: Setup) -> None:
    code = f"""
        import httpx
        for url in ({setup.intercepted!r}, {setup.passthrough!r}):
            print(httpx.get(url).text)
    """
    assert origins(setup.recipe(_python(code))) == ["intercepted", "passthrough"]


def test_requests(setup: Setup) -> None:
    code = f"""
        import requests
        for url in ({setup.intercepted!r}, {setup.passthrough!r}):
            print(requests.get(url, timeout=20).text)
    """
    assert origins(setup.recipe(_python(code))) == ["intercepted", "passthrough"]


def test_the_openai_sdk(setup: Setup) -> None:
    code = f"""
        import openai
        client = openai.OpenAI(base_url={setup.llm!r}, api_key="dummy")
        reply = client.chat.completions.create(model="m", messages=[{{"role": "user", "content": "hi"}}])
        print("answer:", reply.choices[0].message.content)
    """
    result = setup.recipe(_python(code))
    assert result.returncode == 0, result.stderr
    assert "answer: hi" in result.stdout


def test_node_with_undici_env_http_proxy_agent(setup: Setup) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not (NODE_MODULES / "undici").is_dir():
        pytest.skip("undici is not installed for the Node recipe: scripts/test-prerequisites (npm) installs it")
    script = f"""
        const {{ EnvHttpProxyAgent, setGlobalDispatcher }} = require('undici');
        setGlobalDispatcher(new EnvHttpProxyAgent());
        (async () => {{
          for (const url of [{setup.intercepted!r}, {setup.passthrough!r}]) {{
            console.log(await (await fetch(url)).text());
          }}
        }})().catch((e) => {{ console.error(e); process.exit(1); }});
    """
    run = f"export NODE_PATH={shlex.quote(str(NODE_MODULES))}\nnode -e {shlex.quote(textwrap.dedent(script))}"
    assert origins(setup.recipe(run)) == ["intercepted", "passthrough"]


def doc_commands(prefix: str) -> list[str]:
    """The shell lines of docs/clients.md's code blocks that start with `prefix`, as written."""
    lines, inside = [], False
    for line in CLIENTS_DOC.read_text().splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```sh"
            continue
        if inside and line.startswith(prefix):
            lines.append(line)
    assert lines, f"no `{prefix}` line in docs/clients.md"
    return lines


@pytest.mark.parametrize("prefix", ["curl ", "python -c 'import httpx", "python -c 'import requests", "eval "])
def test_the_documented_lines_as_written(setup: Setup, prefix: str) -> None:
    """docs/clients.md's own lines, the documented URL swapped for each test host in turn (trust line: as is)."""
    for line in doc_commands(prefix):
        if prefix == "eval ":
            doc_trust = line.replace(".egressproxy", str(setup.gw.data_dir)).replace(
                "http://127.0.0.1:8080", setup.gw.proxy_url)
            result = setup.recipe(f"{doc_trust}\ncurl -sS {setup.intercepted}", trust_line=False)
            assert result.returncode == 0 and '"origin": "intercepted"' in result.stdout, result.stderr
            continue
        for url, expected in ((setup.intercepted, "intercepted"), (setup.passthrough, "passthrough")):
            result = setup.recipe(line.replace(DOC_URL, url))
            assert result.returncode == 0, f"{line}: {result.stderr}"
            assert expected in result.stdout or result.stdout.strip() == "200", result.stdout


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
\t\tresp, err := http.Get(url)
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
    (setup.tmp / "main.go").write_text(GO_CLIENT)
    result = setup.recipe(f"go run main.go {setup.intercepted} {setup.passthrough}")
    assert origins(result) == ["intercepted", "passthrough"]
