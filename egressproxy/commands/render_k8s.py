"""`egressproxy render-k8s`: the Kubernetes manifests of one gateway on stdout (egressproxy.k8s_manifests).

Only a valid configuration is rendered (the same compile as `validate`). Secret objects are left out of the
ConfigMap and mounted from the cluster's Secrets of the same name instead, so no Secret value is ever printed.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any, TextIO

from ruamel.yaml import YAML
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.representer import SafeRepresenter

from egressproxy.compiler import compile_config
from egressproxy.config.loader import load_paths
from egressproxy.config.resource import Resource
from egressproxy.k8s_manifests import SECRETS_DIR, RenderInput, render

__all__ = ["render_k8s", "RenderError", "render_input"]


class RenderError(Exception):
    pass


def render_k8s(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        spec = render_input(args)
    except RenderError as e:
        err.write(f"{e}\n")
        return 1
    for warning in _warnings(spec):
        err.write(f"warning: {warning}\n")
    out.write(dump_manifests(render(spec)))
    return 0


def render_input(args: argparse.Namespace) -> RenderInput:
    loaded = load_paths(args.config, round_trip=True)  # the ConfigMap keeps the comments
    if loaded.problems:
        raise RenderError("\n".join(str(p) for p in loaded.problems))
    compiled = compile_config(loaded.resources, gateway_name=args.gateway, secrets_dir=args.secrets_dir)
    if compiled.problems or compiled.snapshot is None:
        raise RenderError("\n".join(str(p) for p in compiled.problems) or "no EgressGateway to render")
    ref = compiled.snapshot.gateway.ref
    (gateway,) = [r for r in loaded.resources if r.ref == ref]
    secrets = _secret_names(loaded.resources, args.secrets_dir)
    ca_ref = _interception_ca_ref(gateway)
    return RenderInput(
        name=gateway.name,
        namespace=gateway.namespace,
        config_yaml=_config_yaml([r for r in loaded.resources if r.kind != "Secret"]),
        secret_names=secrets,
        params=_parameters(gateway, loaded.resources),
        image=args.image,
        sidecar=args.sidecar,
        minted_ca=ca_ref is None,
        ca_cert_file=f"{SECRETS_DIR}/{ca_ref}/tls.crt" if ca_ref else None,
        app_image=args.app_image,
    )


def _parameters(gateway: Resource, resources: list[Resource]) -> dict[str, Any]:
    """The GatewayParameters `spec.infrastructure.parametersRef` names (same namespace), else {}."""
    ref = (gateway.spec.get("infrastructure") or {}).get("parametersRef")
    if not ref:
        return {}
    for res in resources:
        if res.kind == "GatewayParameters" and res.name == ref["name"] and res.namespace == gateway.namespace:
            return res.spec
    raise RenderError(
        f"{gateway.file}:{gateway.line_of('spec.infrastructure.parametersRef.name')}: {gateway.ref}: "
        f'spec.infrastructure.parametersRef.name: GatewayParameters "{gateway.namespace}/{ref["name"]}" not found'
    )


def _secret_names(resources: list[Resource], secrets_dir: str | None) -> tuple[str, ...]:
    """Every Secret the pod mounts: the config's Secret objects and the folders of --secrets-dir, by name.

    A volume comes from the pod's own namespace and a mounted Secret answers a reference from any namespace, so
    two Secrets of one name in different namespaces cannot both be mounted: that is an error, not a guess.
    """
    seen: dict[str, Resource] = {}
    for res in resources:
        if res.kind != "Secret":
            continue
        if res.name in seen:
            raise RenderError(
                f"{res.file}:{res.line}: {res.ref}: a Secret named {res.name!r} is also in namespace "
                f"{seen[res.name].namespace!r}; the pod mounts Secrets by name, rename one"
            )
        seen[res.name] = res
    names = set(seen)
    if secrets_dir:
        names |= {p.name for p in Path(secrets_dir).iterdir() if p.is_dir() and not p.name.startswith(".")}
    return tuple(sorted(names))


def _interception_ca_ref(gateway: Resource) -> str | None:
    """The caCertRef Secret of the gateway's intercepting listeners (the CA workloads trust); None: minted."""
    for listener in gateway.spec.get("listeners") or []:
        ref = (listener.get("tls") or {}).get("caCertRef")
        if ref and (listener.get("tls") or {}).get("mode") == "Terminate":
            return str(ref["name"])
    return None


def _config_yaml(resources: list[Resource]) -> str:
    """The objects as written (comments kept), one YAML document each, in load order."""
    yaml = YAML(typ="rt")
    yaml.width = 4096
    buf = io.StringIO()
    yaml.dump_all([r.raw for r in resources], buf)
    return buf.getvalue()


def _str(representer: SafeRepresenter, value: str) -> ScalarNode:
    """Multi-line strings (the ConfigMap's YAML) as literal blocks, readable in review."""
    style = "|" if "\n" in value and not any(line != line.rstrip() for line in value.splitlines()) else None
    return representer.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def dump_manifests(docs: list[dict[str, Any]]) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.width = 4096
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.representer.add_representer(str, _str)
    buf = io.StringIO()
    yaml.dump_all(docs, buf)
    return buf.getvalue()


def _warnings(spec: RenderInput) -> list[str]:
    if not spec.minted_ca or spec.sidecar:  # the sidecar mints once per pod and its workload trusts exactly that
        return []
    replicas = ((spec.params.get("kube") or {}).get("deployment") or {}).get("replicas", 1)
    return [
        f"each gateway pod ({replicas} replicas, and every restart) mints its own interception CA on its emptyDir "
        "(a Terminate listener without caCertRef): for a CA clients can trust, create one with "
        "`egressproxy ca init`, apply its Secret and name it in tls.caCertRef"
    ]
