"""`egressproxy render-k8s`: manifests Kubernetes accepts (kubernetes-validate --strict), shaped by the
GatewayParameters, and never holding a Secret value."""

from __future__ import annotations

import contextlib
import io
import textwrap
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from egressproxy.cli import main
from egressproxy.k8s_manifests import CA_ENV_VARS, PROXY_UID, TRUST_BUNDLE

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "kubernetes"
K8S_VERSION = "1.33.0"  # native sidecars (restartable init containers) are on by default since 1.29
SECRET_VALUE = "sk-live-DO-NOT-PRINT-4242"

GATEWAY = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: gw, namespace: team-a}
spec:
  infrastructure:
    parametersRef: {group: gateway.kgateway.dev, kind: GatewayParameters, name: params}
  listeners:
  - name: https
    protocol: HTTPS
    tls: {mode: Terminate}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: team-a}
spec:
  parentRefs: [{name: gw, sectionName: https}]
  hostnames: [api.example.com]
---
apiVersion: clrk.apoxy.dev/v1alpha1
kind: CredentialInjectionPolicy
metadata: {name: token, namespace: team-a}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}]
  secretRef: {name: api-token}
  target: Header
  headerName: Authorization
---
apiVersion: v1
kind: Secret
metadata: {name: api-token, namespace: team-a}
stringData: {token: %s}
""" % SECRET_VALUE

PARAMS = """\
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: GatewayParameters
metadata: {name: params, namespace: team-a}
spec:
  kube:
    deployment: {replicas: 3}
    envoyContainer:
      image: {registry: registry.example.com, repository: egress/proxy, tag: "1.2.3"}
      resources:
        requests: {cpu: 500m, memory: 300Mi}
        limits: {memory: 1Gi}
    podTemplate:
      extraLabels: {team: a}
      nodeSelector: {pool: egress}
    service: {type: LoadBalancer}
"""


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def render(tmp_path: Path, text: str, *extra: str) -> tuple[str, list[dict[str, Any]]]:
    (tmp_path / "cfg.yaml").write_text(textwrap.dedent(text))
    status, printed, err = cli("render-k8s", "-c", str(tmp_path / "cfg.yaml"), *extra)
    assert status == 0, err
    return printed, [d for d in YAML(typ="safe").load_all(printed) if d]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def containers(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    pod = deployment["spec"]["template"]["spec"]
    return {c["name"]: c for c in [*pod.get("initContainers", []), *pod["containers"]]}


def assert_valid(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# --- the gateway Deployment ---------------------------------------------------------------------------------


def test_gateway_parameters_shape_the_deployment_and_service(tmp_path: Path) -> None:
    _, docs = render(tmp_path, GATEWAY + PARAMS)
    assert [d["kind"] for d in docs] == ["ConfigMap", "Deployment", "Service"]
    assert_valid(docs)
    kinds = by_kind(docs)
    deployment, service = kinds["Deployment"], kinds["Service"]
    assert deployment["metadata"]["namespace"] == "team-a"
    assert deployment["spec"]["replicas"] == 3
    proxy = containers(deployment)["egressproxy"]
    assert proxy["image"] == "registry.example.com/egress/proxy:1.2.3"
    assert proxy["resources"] == {"requests": {"cpu": "500m", "memory": "300Mi"}, "limits": {"memory": "1Gi"}}
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "a"
    assert pod["spec"]["nodeSelector"] == {"pool": "egress"}
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"] == [{"name": "proxy", "port": 8080, "targetPort": "proxy", "protocol": "TCP"}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_pod_is_non_root_probed_on_ready_and_scraped(tmp_path: Path) -> None:
    _, docs = render(tmp_path, GATEWAY + PARAMS)
    deployment = by_kind(docs)["Deployment"]
    pod = deployment["spec"]["template"]
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == PROXY_UID
    proxy = containers(deployment)["egressproxy"]
    assert proxy["securityContext"]["allowPrivilegeEscalation"] is False
    assert proxy["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8082}
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9091"
    args = proxy["args"]
    assert args[args.index("--ready-addr") + 1] == "0.0.0.0:8082"
    assert args[args.index("--metrics-addr") + 1] == "0.0.0.0:9091"
    assert args[args.index("--admin-addr") + 1] == "127.0.0.1:19000"  # /reload stays inside the pod
    assert args[args.index("--mode") + 1] == "regular@0.0.0.0:8080"


def test_the_config_map_holds_every_object_but_the_secret_which_is_mounted(tmp_path: Path) -> None:
    printed, docs = render(tmp_path, GATEWAY + PARAMS)
    assert SECRET_VALUE not in printed
    kinds = by_kind(docs)
    config = list(YAML(typ="safe").load_all(kinds["ConfigMap"]["data"]["gateway.yaml"]))
    assert sorted(d["kind"] for d in config) == [
        "CredentialInjectionPolicy", "EgressGateway", "GatewayParameters", "HTTPRoute",
    ]
    proxy = containers(kinds["Deployment"])["egressproxy"]
    args = proxy["args"]
    assert args[args.index("-c") + 1] == "/etc/egressproxy/config/gateway.yaml"
    assert args[args.index("--secrets-dir") + 1] == "/etc/egressproxy/secrets"
    mount = next(m for m in proxy["volumeMounts"] if m["mountPath"] == "/etc/egressproxy/secrets/api-token")
    volume = next(v for v in kinds["Deployment"]["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["secret"] == {"secretName": "api-token"}


def test_without_parameters_one_replica_cluster_ip_and_the_release_image(tmp_path: Path) -> None:
    text = GATEWAY.replace(
        "  infrastructure:\n    parametersRef: {group: gateway.kgateway.dev, kind: GatewayParameters, name: params}\n", ""
    )
    _, docs = render(tmp_path, text, "--image", "example.org/egressproxy:dev")
    assert_valid(docs)
    kinds = by_kind(docs)
    assert kinds["Deployment"]["spec"]["replicas"] == 1
    assert kinds["Service"]["spec"]["type"] == "ClusterIP"
    assert containers(kinds["Deployment"])["egressproxy"]["image"] == "example.org/egressproxy:dev"


def test_a_missing_gateway_parameters_is_an_error_naming_the_field(tmp_path: Path) -> None:
    (tmp_path / "cfg.yaml").write_text(GATEWAY)
    status, printed, err = cli("render-k8s", "-c", str(tmp_path / "cfg.yaml"))
    assert status == 1 and printed == ""
    assert "spec.infrastructure.parametersRef.name" in err and 'GatewayParameters "team-a/params" not found' in err


def test_an_invalid_config_is_not_rendered_and_its_secret_not_echoed(tmp_path: Path) -> None:
    (tmp_path / "cfg.yaml").write_text(GATEWAY.replace("headerName: Authorization", "headerNam: Authorization"))
    status, printed, err = cli("render-k8s", "-c", str(tmp_path / "cfg.yaml"))
    assert status == 1 and printed == ""
    assert "headerNam" in err and SECRET_VALUE not in err


def test_strict_validation_can_fail(tmp_path: Path) -> None:
    """The validator is strict: an unknown field in a rendered manifest is rejected, so the checks above bite."""
    _, docs = render(tmp_path, GATEWAY + PARAMS)
    deployment = by_kind(docs)["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


# --- the sidecar pod ----------------------------------------------------------------------------------------


def test_sidecar_applies_iptables_as_root_and_runs_the_proxy_as_the_excluded_uid(tmp_path: Path) -> None:
    printed, docs = render(tmp_path, GATEWAY + PARAMS, "--sidecar", "--app-image", "example.org/app:1")
    assert SECRET_VALUE not in printed
    assert [d["kind"] for d in docs] == ["ConfigMap", "Deployment"]
    assert_valid(docs)
    deployment = by_kind(docs)["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["egress-trust", "egress-iptables", "egressproxy"]
    assert "runAsUser" not in pod["securityContext"]  # pod-wide, the proxy's uid would exempt the workload too
    found = containers(deployment)
    ipt = found["egress-iptables"]
    assert ipt["args"] == ["iptables", "--proxy-uid", str(PROXY_UID), "--port", "15001", "--apply"]
    assert ipt["securityContext"]["runAsUser"] == 0
    assert "NET_ADMIN" in ipt["securityContext"]["capabilities"]["add"]
    proxy = found["egressproxy"]
    assert proxy["securityContext"]["runAsUser"] == PROXY_UID
    assert proxy["restartPolicy"] == "Always"
    assert proxy["startupProbe"]["httpGet"] == {"path": "/ready", "port": 8082}
    modes = [proxy["args"][i + 1] for i, a in enumerate(proxy["args"]) if a == "--mode"]
    assert modes == ["transparent@127.0.0.1:15001", "transparent@::1:15001"]
    app = found["app"]
    assert app["image"] == "example.org/app:1"
    assert app["securityContext"]["runAsUser"] != PROXY_UID
    assert {e["name"]: e["value"] for e in app["env"]} == {var: TRUST_BUNDLE for var in CA_ENV_VARS}


def test_sidecar_trust_step_mints_the_ca_the_proxy_then_reuses(tmp_path: Path) -> None:
    _, docs = render(tmp_path, GATEWAY + PARAMS, "--sidecar")
    found = containers(by_kind(docs)["Deployment"])
    trust = found["egress-trust"]
    assert trust["args"] == [
        "trust", "--out", TRUST_BUNDLE, "--data-dir", "/var/lib/egressproxy", "--gateway", "team-a/gw", "--mint",
    ]
    assert trust["securityContext"]["runAsUser"] == PROXY_UID  # the CA folder (0700) must be the proxy's
    data = {m["name"]: m["mountPath"] for m in found["egressproxy"]["volumeMounts"]}["data"]
    assert {m["name"]: m["mountPath"] for m in trust["volumeMounts"]}["data"] == data


def test_sidecar_trusts_a_ca_secret_when_the_listener_names_one(tmp_path: Path) -> None:
    text = GATEWAY.replace("tls: {mode: Terminate}", "tls: {mode: Terminate, caCertRef: {name: egress-ca}}")
    secrets = tmp_path / "secrets" / "egress-ca"
    secrets.mkdir(parents=True)
    assert cli("ca", "init", "--out", str(secrets))[0] == 0
    (secrets / "ca-secret.yaml").unlink()
    (secrets / "tls.crt").write_bytes((secrets / "ca.crt").read_bytes())
    (secrets / "tls.key").write_bytes((secrets / "ca.key").read_bytes())
    printed, docs = render(tmp_path, text + PARAMS, "--sidecar", "--secrets-dir", str(tmp_path / "secrets"))
    assert (secrets / "ca.key").read_text().splitlines()[1] not in printed
    trust = containers(by_kind(docs)["Deployment"])["egress-trust"]
    assert trust["args"] == ["trust", "--out", TRUST_BUNDLE, "--ca", "/etc/egressproxy/secrets/egress-ca/tls.crt"]


# --- the checked-in example -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "extra"), [("gateway.k8s", ()), ("sidecar.k8s", ("--sidecar",))])
def test_the_example_manifests_are_current_and_valid(name: str, extra: tuple[str, ...]) -> None:
    status, printed, _ = cli("render-k8s", "-c", str(EXAMPLE), *extra)
    assert status == 0
    assert (EXAMPLE / "manifests" / name).read_text() == printed, (
        f"regenerate: egressproxy render-k8s -c config/kubernetes {' '.join(extra)} > config/kubernetes/manifests/{name}"
    )
    assert_valid([d for d in YAML(typ="safe").load_all(printed) if d])
    assert "REPLACE-ME" not in printed
