"""scripts/upstream_examples.py: the tool behind the "Configs people already have" counts keeps counting right."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "upstream_examples.py"

GATEWAY_AND_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web}
spec:
  gatewayClassName: example
  listeners:
  - {name: tls, protocol: TLS, port: 443, tls: {mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: pypi}
spec:
  parentRefs: [{name: web, sectionName: tls}]
  hostnames: [pypi.org]
"""

DOCS_PAGE = """\
Apply the route:

```sh
kubectl apply -f- <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: docs
  namespace: {{< reuse "snippets/namespace.md" >}}
spec:
  parentRefs: [{name: http}]
  hostnames: [api.example.com]
EOF
```
"""

BAD_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad}
spec:
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {add: [{name: x, value: "a\\r\\nInjected: yes"}]}
"""


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def counts(out: str) -> dict[str, tuple[str, str]]:
    return {line.split()[0]: (line.split()[1], line.split()[3]) for line in out.splitlines() if " / " in line}


def test_counts_documents_by_kind_with_their_companions(tmp_path: Path) -> None:
    (tmp_path / "route.yaml").write_text(GATEWAY_AND_ROUTE)
    (tmp_path / "bad.yaml").write_text(BAD_ROUTE)
    (tmp_path / "assets" / "snippets").mkdir(parents=True)
    (tmp_path / "assets" / "snippets" / "namespace.md").write_text("kgateway-system\n")
    (tmp_path / "page.md").write_text(DOCS_PAGE)
    out = run("--docs-assets", str(tmp_path / "assets"), str(tmp_path))
    found = counts(out)
    assert found["TLSRoute"] == ("1", "1")  # the upstream Gateway's TLS listener became the EgressGateway's
    assert found["HTTPRoute"] == ("1", "2")  # the docs heredoc validates, the CR/LF header value does not
    assert "must not contain CR or LF" in out
    assert "gateway.networking.k8s.io/v1/Gateway 1" in out  # counted as a kind not modelled


def test_expect_invalid_counts_rejections(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD_ROUTE)
    assert counts(run("--expect-invalid", str(tmp_path)))["HTTPRoute"] == ("1", "1")
