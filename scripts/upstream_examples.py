"""Validate upstream projects' own YAML with `egressproxy validate`, one document at a time, and count by kind.

    .venv/bin/python scripts/upstream_examples.py [--expect-invalid] [--show N] FOLDER_OR_FILE...

Reads every `.yaml`/`.yml` file (and the fenced yaml blocks of `.md` files) under the given paths; nothing is
copied into this repository. Each document of a kind egressproxy models is validated on its own, next to the
companion objects it names and upstream would have beside it: an EgressGateway for each Gateway parent or
target (with a listener for the route's protocol under each sectionName), a Static Backend for each kgateway
Backend reference, a Secret or ConfigMap (with a parseable certificate) for each secret or CA reference, a
GatewayExtension or DirectResponse for each extension reference. Documents egressproxy does not model (Gateway,
Service, Deployment, ...) are skipped and counted. `--expect-invalid` counts rejections instead (for
Gateway API's hack/invalid-examples). Prints per-kind counts and the first problem of each failure, grouped.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from egressproxy.ca import create_ca  # noqa: E402
from egressproxy.commands.validate import validate  # noqa: E402
from egressproxy.config.kinds import KINDS  # noqa: E402

_yaml = YAML(typ="safe")
_out = YAML()
_out.default_flow_style = False

ROUTE_PROTOCOL = {"HTTPRoute": "HTTP", "GRPCRoute": "HTTP", "TLSRoute": "TLS", "TCPRoute": "TCP", "UDPRoute": "UDP"}
GATEWAY_KINDS = {None, "Gateway", "EgressGateway"}
_FENCE = re.compile(r"```(\w*)[^\n]*\n(.*?)```", re.DOTALL)
_HEREDOC = re.compile(r"<<-?\s*['\"]?(\w+)['\"]?[^\n]*\n(.*?)\n\s*\1\b", re.DOTALL)


def _markdown_yaml(text: str) -> list[str]:
    """The YAML a docs page shows: fenced yaml blocks, and the heredocs of shell blocks (`kubectl apply -f- <<EOF`)."""
    chunks = []
    for language, body in _FENCE.findall(text):
        heredocs = [doc for _tag, doc in _HEREDOC.findall(body)]
        if heredocs:
            chunks += heredocs
        elif language in ("yaml", "yml"):
            chunks.append(body)
    return [_fill_snippets(chunk) for chunk in chunks]


_SNIPPET = re.compile(r"\{\{<\s*reuse\s+\"/?([^\"]+)\"\s*>\}\}")
SNIPPET_ROOTS: list[Path] = []  # --docs-assets: where a docs site keeps the one-line snippets its pages reuse


def _fill_snippets(chunk: str) -> str:
    """A docs page's `{{< reuse "kgw-docs/snippets/namespace.md" >}}` replaced by that snippet's one line."""

    def one_line(match: re.Match[str]) -> str:
        for root in SNIPPET_ROOTS:
            file = root / match.group(1)
            if file.is_file():
                lines = file.read_text().strip().splitlines()
                if len(lines) == 1:
                    return lines[0].strip()
        return match.group(0)

    return _SNIPPET.sub(one_line, chunk)


def documents(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, document) for every YAML document under `path`."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".md"))
    for file in files:
        text = file.read_text(errors="replace")
        chunks = _markdown_yaml(text) if file.suffix == ".md" else [text]
        for chunk in chunks:
            if "{{" in chunk:  # a Helm or docs template, not YAML anyone applies as written
                continue
            try:
                docs = list(_yaml.load_all(chunk))
            except Exception:
                continue
            for doc in docs:
                if isinstance(doc, dict) and "kind" in doc:
                    yield str(file), doc


def modelled(doc: dict[str, Any]) -> bool:
    if re.search(r"\$\{?[A-Z_]{2,}", str(doc)) or "<" in str(doc.get("metadata")):  # a template (`${INSTALL_NAMESPACE}`, `$OLLAMA_HOST`), filled in before use
        return False
    schema = KINDS.get(doc.get("kind"))
    return schema is not None and doc.get("apiVersion") in schema.api_versions


def translate_gateway(gateway: dict[str, Any]) -> list[dict[str, Any]]:
    """A Kubernetes Gateway's listeners as EgressGateway listeners (protocol, port, TLS mode; no certificates:
    a Terminate listener mints its CA)."""
    listeners = []
    for listener in (gateway.get("spec") or {}).get("listeners") or []:
        protocol = listener.get("protocol")
        if protocol not in ("HTTP", "HTTPS", "TLS", "TCP", "UDP"):
            continue
        item: dict[str, Any] = {"name": listener.get("name"), "protocol": protocol, "port": listener.get("port")}
        if protocol in ("HTTPS", "TLS"):
            mode = (listener.get("tls") or {}).get("mode") or "Terminate"
            item["tls"] = {"mode": "Terminate" if protocol == "HTTPS" else mode}
        listeners.append(item)
    return listeners


class Companions:
    """The objects a document names, synthesized just well enough to resolve."""

    upstream_gateways: dict[tuple[str, str], dict[str, Any]] = {}  # (ns, name) -> a Gateway upstream wrote
    extensions = True  # synthesize referenced policies and extensions (off when a file is the whole world)

    def __init__(self, doc: dict[str, Any], pem: str, key: str) -> None:
        self.ns = (doc.get("metadata") or {}).get("namespace") or "default"
        self.pem, self.key = pem, key
        self.gateways: dict[tuple[str, str], dict[str, tuple[str, int | None]]] = {}
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._visit(doc, doc.get("kind"))
        if not self.gateways and doc.get("kind") != "EgressGateway":
            self.gateways[(self.ns, "egress")] = {}

    def _visit(self, node: Any, kind: str | None, key: str = "") -> None:
        if isinstance(node, list):
            for item in node:
                self._visit(item, kind, key)
            return
        if not isinstance(node, dict):
            return
        ref, secret_key = node.get("secretRef"), node.get("secretKey")
        if isinstance(ref, dict) and isinstance(secret_key, str):  # Apoxy's {secretRef, secretKey}
            self._secret(ref.get("name"), ref.get("namespace"), secret_key)
        if key == "parentRefs":
            self._gateway(node, ROUTE_PROTOCOL.get(kind or "", "HTTP"))
        elif key == "targetRefs" or key == "targetRef":
            self._target(node)
        elif key in ("backendRefs", "backendRef"):
            self._backend(node)
        elif key in ("secretRef", "authSecretRef", "passwordSecretRef", "clientCertificateRef", "caCertRef"):
            self._secret(node.get("name"), node.get("namespace"))
        elif key == "caCertificateRefs":
            self._ca_ref(node)
        elif key in ("extensionRef",):
            self._extension(node, kind)
        for child_key, child in node.items():
            if child_key != "metadata":
                self._visit(child, kind, child_key)

    def _gateway(self, ref: dict[str, Any], protocol: str) -> None:
        if ref.get("kind") not in GATEWAY_KINDS or not ref.get("name"):
            return
        listeners = self.gateways.setdefault((ref.get("namespace") or self.ns, ref["name"]), {})
        listeners[ref.get("sectionName") or f"l-{protocol.lower()}"] = (protocol, ref.get("port"))

    def _target(self, ref: dict[str, Any]) -> None:
        kind, name, section = ref.get("kind"), ref.get("name"), ref.get("sectionName")
        if kind in ("Gateway", "EgressGateway") and name:
            listeners = self.gateways.setdefault((self.ns, name), {})
            if section:
                listeners.setdefault(section, ("HTTP", None))
        elif kind in ROUTE_PROTOCOL and name:
            rules = [{"name": section}] if section else [{}]
            self._add(kind, name, {"parentRefs": [{"name": "egress"}], "rules": rules}, "gateway.networking.k8s.io/v1")
            self.gateways.setdefault((self.ns, "egress"), {})[f"l-{ROUTE_PROTOCOL[kind].lower()}"] = (
                ROUTE_PROTOCOL[kind],
                None,
            )
        elif kind in ("Backend", "AIBackend") and name:
            self._static_backend(name, ref.get("namespace"))

    def _backend(self, ref: dict[str, Any]) -> None:
        if ref.get("kind") == "Backend" and ref.get("name"):
            self._static_backend(ref["name"], ref.get("namespace"))

    def _static_backend(self, name: str, ns: str | None) -> None:
        spec = {"type": "Static", "static": {"hosts": [{"host": "upstream.example.com", "port": 443}]}}
        self._add("Backend", name, spec, "gateway.kgateway.dev/v1alpha1", ns)

    def _secret(self, name: Any, ns: Any, key: str | None = None) -> None:
        if not isinstance(name, str) or not name:
            return
        data = {"Authorization": "Bearer x", "tls.crt": self.pem, "tls.key": self.key, "ca.crt": self.pem}
        self._add("Secret", name, None, "v1", ns, extra={"stringData": data})
        if key:
            self.objects[("Secret", ns or self.ns, name)]["stringData"].setdefault(key, "x")

    def _ca_ref(self, ref: dict[str, Any]) -> None:
        if ref.get("kind") == "ConfigMap" and ref.get("name"):
            self._add("ConfigMap", ref["name"], None, "v1", ref.get("namespace"), extra={"data": {"ca.crt": self.pem}})
        else:
            self._secret(ref.get("name"), ref.get("namespace"))

    def _extension(self, ref: dict[str, Any], kind: str | None) -> None:
        name, ext_kind = ref.get("name"), ref.get("kind")
        if not name or not self.extensions:
            return
        if ext_kind == "DirectResponse":
            self._add("DirectResponse", name, {"status": 200}, "gateway.kgateway.dev/v1alpha1")
        elif ext_kind == "TrafficPolicy":
            self._add("TrafficPolicy", name, {"timeouts": {"request": "10s"}}, "gateway.kgateway.dev/v1alpha1")
        elif ext_kind in (None, "GatewayExtension") and kind in ("TrafficPolicy", "HTTPListenerPolicy"):
            spec = {"type": "ExtAuth", "extAuth": {"grpcService": {"backendRef": {"name": "authz", "port": 9001}}}}
            self._add("GatewayExtension", name, spec, "gateway.kgateway.dev/v1alpha1", ref.get("namespace"))

    def _add(self, kind: str, name: str, spec: Any, api: str, ns: str | None = None, extra: Any = None) -> None:
        body: dict[str, Any] = {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": ns or self.ns}}
        if spec is not None:
            body["spec"] = spec
        body.update(extra or {})
        self.objects.setdefault((kind, ns or self.ns, name), body)

    def yaml_documents(self, exclude: tuple[str, str, str]) -> list[dict[str, Any]]:
        docs = [o for key, o in self.objects.items() if key != exclude]
        for (ns, name), listeners in self.gateways.items():
            if ("EgressGateway", ns, name) == exclude:
                continue
            written = self.upstream_gateways.get((ns, name))
            items = translate_gateway(written) if written else []
            have = {i["name"] for i in items}
            items += [
                {"name": ln, "protocol": proto, **({"port": port} if port else {}), **_tls(proto)}
                for ln, (proto, port) in listeners.items()
                if ln not in have
            ]
            items = items or [{"name": "http", "protocol": "HTTP"}]
            docs.append(
                {
                    "apiVersion": "clrk.apoxy.dev/v1alpha1",
                    "kind": "EgressGateway",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"listeners": items},
                }
            )
        return docs


def _tls(protocol: str) -> dict[str, Any]:
    return {"tls": {"mode": "Passthrough"}} if protocol == "TLS" else {}


def _identity(doc: dict[str, Any]) -> tuple[str, str, str]:
    meta = doc.get("metadata") or {}
    return (doc.get("kind"), meta.get("namespace") or "default", meta.get("name"))


def check(doc: dict[str, Any], pem: str, key: str, workdir: str, siblings: tuple[dict[str, Any], ...] = ()) -> list[str]:
    """The problems `egressproxy validate` reports for `doc` (and `siblings`, validated with it) beside their
    companions (empty: valid)."""
    docs = [doc, *siblings]
    mine = {_identity(d) for d in docs}
    companions: list[dict[str, Any]] = []
    for d in docs:
        companions += [c for c in Companions(d, pem, key).yaml_documents(_identity(d)) if _identity(c) not in mine]
        mine |= {_identity(c) for c in companions}
    path = os.path.join(workdir, "config.yaml")
    with open(path, "w") as f:
        _out.dump_all([*docs, *companions], f)
    out = io.StringIO()
    code = validate([path], secrets_dir=None, gateway=None, out=out)
    return [] if code == 0 else out.getvalue().splitlines() or ["(exit 1, no output)"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--expect-invalid", action="store_true", help="count rejections (must-reject examples)")
    parser.add_argument("--show", type=int, default=3, help="problem lines shown per failure cause")
    parser.add_argument("--per-file", action="store_true", help="validate each file's documents together")
    parser.add_argument("--docs-assets", type=Path, action="append", default=[], help="a docs site's assets folder")
    args = parser.parse_args()
    SNIPPET_ROOTS.extend(args.docs_assets)
    Companions.extensions = not args.per_file
    with tempfile.TemporaryDirectory() as workdir:
        pem, key = _ca(workdir)
        totals: Counter[str] = Counter()
        good: Counter[str] = Counter()
        skipped: Counter[str] = Counter()
        causes: dict[str, list[str]] = defaultdict(list)
        for path in args.paths:
            for _where, doc in documents(path):
                if doc.get("kind") == "Gateway" and str(doc.get("apiVersion", "")).startswith("gateway.networking"):
                    meta = doc.get("metadata") or {}
                    Companions.upstream_gateways[(meta.get("namespace") or "default", meta.get("name"))] = doc
        units: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for path in args.paths:
            for where, doc in documents(path):
                if not modelled(doc):
                    skipped[f"{doc.get('apiVersion')}/{doc.get('kind')}"] += 1
                    continue
                units[where if args.per_file else f"{where}#{len(units)}"].append(doc)
        for where, docs in units.items():
                where = where.split("#")[0]
                kind = "+".join(sorted({d["kind"] for d in docs})) if args.per_file else docs[0]["kind"]
                doc = docs[0]
                totals[kind] += 1
                problems = check(doc, pem, key, workdir, tuple(docs[1:]))
                if bool(problems) == args.expect_invalid:
                    good[kind] += 1
                elif problems:
                    causes[_cause(problems[0])].append(f"{where}: {problems[0]}")
                else:
                    causes["accepted although upstream rejects it"].append(f"{where}: {kind}")
        _report(totals, good, skipped, causes, args)
    return 0


def _ca(workdir: str) -> tuple[str, str]:
    cert, key = create_ca("upstream-examples")
    return cert.decode(), key.decode()


def _cause(problem: str) -> str:
    """A problem line without file, line and object, so the same rule groups across documents."""
    text = re.sub(r"^[^:]+:\d+: ", "", problem)
    text = re.sub(r"^\w+/[\w.-]+/[\w.-]+: ", "", text)
    return re.sub(r"\[\d+\]", "[]", text)[:160]


def _report(totals: Counter[str], good: Counter[str], skipped: Counter[str], causes: dict[str, list[str]], args: Any) -> None:
    verb = "rejected" if args.expect_invalid else "valid"
    for kind in sorted(totals):
        print(f"{kind:24} {good[kind]:4} / {totals[kind]:<4} {verb}")
    print(f"{'all':24} {sum(good.values()):4} / {sum(totals.values()):<4} {verb}")
    print(f"skipped (kinds not modelled, or templates with placeholders): {sum(skipped.values())}: " + ", ".join(f"{k} {n}" for k, n in skipped.most_common(8)))
    for cause, where in sorted(causes.items(), key=lambda kv: -len(kv[1])):
        print(f"\n{len(where):4}  {cause}")
        for line in where[: args.show]:
            print(f"      {line[:220]}")


if __name__ == "__main__":
    raise SystemExit(main())
