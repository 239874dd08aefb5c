"""Kubernetes manifests for one gateway (DESIGN.md 4.2 `render-k8s`): plain dicts, no I/O.

The gateway pod reads its configuration from a ConfigMap (every non-Secret object) and each Secret from a volume
under `--secrets-dir`, so a Secret's value is never copied into a manifest. GatewayParameters (named by the
EgressGateway's `spec.infrastructure.parametersRef`) shape the Deployment and Service; the fields read here are
the ones `egressproxy/compiler/enforcement.py` lists as enforced for GatewayParameters.

Two shapes:
- **gateway** (default): a Deployment of the explicit proxy (`regular@0.0.0.0:8080`) behind a Service, for
  workloads that set `HTTPS_PROXY=http://<service>.<namespace>:8080`;
- **sidecar**: one pod with the workload and the gateway as a native sidecar (an init container with
  `restartPolicy: Always`, started and ready before the workload), an init container applying
  `egressproxy iptables` (NET_ADMIN) so the workload's outbound TCP goes to the transparent listener, and one
  writing the trust bundle (`egressproxy trust`) the workload's TLS clients read through SSL_CERT_FILE and
  friends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from egressproxy import __version__

__all__ = [
    "PROXY_UID",
    "CONFIG_DIR",
    "SECRETS_DIR",
    "DATA_DIR",
    "TRUST_BUNDLE",
    "CA_ENV_VARS",
    "RenderInput",
    "render",
]

PROXY_UID = 15999  # the image's user; `egressproxy iptables --proxy-uid` exempts it (docs/transparent-mode.md)
DEFAULT_IMAGE = f"ghcr.io/egressproxy/egressproxy:{__version__}"
CONFIG_DIR = "/etc/egressproxy/config"
SECRETS_DIR = "/etc/egressproxy/secrets"
DATA_DIR = "/var/lib/egressproxy"
TRUST_DIR = "/etc/egressproxy/trust"
TRUST_BUNDLE = f"{TRUST_DIR}/ca-bundle.crt"
CONFIG_KEY = "gateway.yaml"
PROXY_PORT, TRANSPARENT_PORT, ADMIN_PORT, READY_PORT, METRICS_PORT = 8080, 15001, 19000, 8082, 9091
# The variables the workload's TLS clients read a CA bundle from (docs/clients.md).
CA_ENV_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE")


@dataclass(frozen=True)
class RenderInput:
    name: str  # the EgressGateway's
    namespace: str
    config_yaml: str  # the non-Secret objects, as one multi-document YAML
    secret_names: tuple[str, ...]  # mounted under SECRETS_DIR/<name>
    params: Mapping[str, Any] = field(default_factory=dict)  # GatewayParameters `spec`, or {}
    image: str | None = None  # --image: wins over the GatewayParameters' image
    sidecar: bool = False
    minted_ca: bool = True  # the gateway mints its CA (a Terminate listener without caCertRef)
    ca_cert_file: str | None = None  # else the CA certificate to trust, a path in the pod
    app_image: str = "your-app:latest"


def render(spec: RenderInput) -> list[dict[str, Any]]:
    """The manifests, in apply order."""
    out: list[dict[str, Any]] = [_config_map(spec)]
    if spec.sidecar:
        out.append(_deployment(spec, _sidecar_pod(spec), name=f"{spec.name}-workload"))
        return out
    out.append(_deployment(spec, _gateway_pod(spec), name=spec.name))
    out.append(_service(spec))
    return out


# --- shared pieces ----------------------------------------------------------------------------------------------


def _kube(spec: RenderInput, *path: str) -> Any:
    node: Any = spec.params.get("kube") or {}
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node


def _labels(spec: RenderInput) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "egressproxy",
        "app.kubernetes.io/instance": spec.name + ("-workload" if spec.sidecar else ""),
        "app.kubernetes.io/version": __version__,
    }


def _selector(spec: RenderInput) -> dict[str, str]:
    labels = _labels(spec)
    return {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}


def _meta(spec: RenderInput, name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": spec.namespace, "labels": _labels(spec), **extra}


def _config_map(spec: RenderInput) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec, f"{spec.name}-config"),
        "data": {CONFIG_KEY: spec.config_yaml},
    }


def image_of(spec: RenderInput) -> str:
    """--image, else GatewayParameters `envoyContainer.image` (registry/repository:tag@digest), else ours."""
    if spec.image:
        return spec.image
    image = _kube(spec, "envoyContainer", "image") or {}
    repository = image.get("repository")
    if not repository:
        return DEFAULT_IMAGE
    ref = f"{image['registry']}/{repository}" if image.get("registry") else repository
    if image.get("tag"):
        ref += f":{image['tag']}"
    if image.get("digest"):
        ref += f"@{image['digest']}"
    return ref


def _merged(*parts: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        if isinstance(part, Mapping):
            out.update(part)
    return out


def _pod_security(spec: RenderInput) -> dict[str, Any]:
    base: dict[str, Any] = {}
    if not _kube(spec, "omitDefaultSecurityContext"):
        base = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        # The sidecar pod sets uids per container: a pod-wide PROXY_UID would exempt the workload from iptables.
        if not _kube(spec, "floatingUserId") and not spec.sidecar:
            base |= {"runAsUser": PROXY_UID, "runAsGroup": PROXY_UID, "fsGroup": PROXY_UID}
    return _merged(base, _kube(spec, "podTemplate", "securityContext"))


def _container_security(spec: RenderInput) -> dict[str, Any]:
    base: dict[str, Any] = {}
    if not _kube(spec, "omitDefaultSecurityContext"):
        base = {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        }
        if spec.sidecar:  # explicit on the container: the exempted uid must be exactly this one
            base |= {"runAsUser": PROXY_UID, "runAsGroup": PROXY_UID}
    return _merged(
        base, _kube(spec, "deployment", "container", "securityContext"), _kube(spec, "envoyContainer", "securityContext")
    )


def _resources(spec: RenderInput) -> dict[str, Any]:
    return _merged(_kube(spec, "deployment", "container", "resources"), _kube(spec, "envoyContainer", "resources"))


def _ready_probe(spec: RenderInput) -> dict[str, Any]:
    default = {"httpGet": {"path": "/ready", "port": READY_PORT}, "periodSeconds": 5, "failureThreshold": 3}
    return dict(_kube(spec, "podTemplate", "readinessProbe") or default)


def _run_args(spec: RenderInput, modes: Sequence[str]) -> list[str]:
    # The file, not the folder: a ConfigMap volume also holds the same file under its hidden `..<timestamp>/`.
    args = ["run", "-c", f"{CONFIG_DIR}/{CONFIG_KEY}", "--gateway", f"{spec.namespace}/{spec.name}"]
    for mode in modes:
        args += ["--mode", mode]
    args += [
        "--admin-addr", f"127.0.0.1:{ADMIN_PORT}",  # /reload and /config_dump stay inside the pod
        "--ready-addr", f"0.0.0.0:{READY_PORT}",  # the kubelet probes the pod IP
        "--metrics-addr", f"0.0.0.0:{METRICS_PORT}",  # Prometheus scrapes the pod IP
        "--data-dir", DATA_DIR,
    ]
    if spec.secret_names:
        args += ["--secrets-dir", SECRETS_DIR]
    return args


def _identity_env() -> list[dict[str, Any]]:
    return [
        {"name": "EGRESS_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "EGRESS_SERVICE_ACCOUNT", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
    ]


def _mounts(spec: RenderInput) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "data", "mountPath": DATA_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    mounts += [
        {"name": _secret_volume(n), "mountPath": f"{SECRETS_DIR}/{n}", "readOnly": True} for n in spec.secret_names
    ]
    return mounts + list(_kube(spec, "envoyContainer", "extraVolumeMounts") or [])


def _secret_volume(name: str) -> str:
    """A volume name (a DNS label, at most 63 characters) for Secret `name`."""
    return f"secret-{name.replace('.', '-')}"[:63].rstrip("-")


def _volumes(spec: RenderInput) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": f"{spec.name}-config"}},
        {"name": "data", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    volumes += [{"name": _secret_volume(n), "secret": {"secretName": n}} for n in spec.secret_names]
    if spec.sidecar:
        volumes.append({"name": "trust", "emptyDir": {}})
    return volumes + list(_kube(spec, "podTemplate", "extraVolumes") or [])


def _proxy_container(spec: RenderInput, modes: Sequence[str], ports: Sequence[tuple[str, int]]) -> dict[str, Any]:
    image = _kube(spec, "envoyContainer", "image") or {}
    container: dict[str, Any] = {
        "name": "egressproxy",
        "image": image_of(spec),
        "args": _run_args(spec, modes),
        "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports],
        "env": _identity_env() + list(_kube(spec, "envoyContainer", "env") or []),
        "readinessProbe": _ready_probe(spec),
        "securityContext": _container_security(spec),
        "volumeMounts": _mounts(spec),
    }
    if image.get("pullPolicy") and not spec.image:
        container["imagePullPolicy"] = image["pullPolicy"]
    for key, value in (
        ("resources", _resources(spec)),
        ("livenessProbe", _kube(spec, "podTemplate", "livenessProbe")),
        ("startupProbe", _kube(spec, "podTemplate", "startupProbe")),
    ):
        if value:
            container[key] = value
    return container


_POD_FIELDS = (
    "nodeSelector", "affinity", "tolerations", "imagePullSecrets", "terminationGracePeriodSeconds",
    "topologySpreadConstraints",
)


def _pod_template(spec: RenderInput, pod: dict[str, Any]) -> dict[str, Any]:
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
        **(_kube(spec, "podTemplate", "extraAnnotations") or {}),
    }
    labels = {**_labels(spec), **(_kube(spec, "podTemplate", "extraLabels") or {})}
    pod = {**pod, "securityContext": _pod_security(spec), "volumes": _volumes(spec)}
    for key in _POD_FIELDS:
        value = _kube(spec, "podTemplate", key)
        if value is not None:
            pod[key] = value
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod}


def _deployment(spec: RenderInput, pod: dict[str, Any], *, name: str) -> dict[str, Any]:
    body: dict[str, Any] = {"selector": {"matchLabels": _selector(spec)}, "template": _pod_template(spec, pod)}
    if not _kube(spec, "deployment", "omitReplicas"):
        replicas = _kube(spec, "deployment", "replicas")
        body = {"replicas": 1 if replicas is None else replicas, **body}
    strategy = _kube(spec, "deployment", "strategy")
    if strategy:
        body["strategy"] = strategy
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(spec, name), "spec": body}


# --- the gateway Deployment and its Service ----------------------------------------------------------------------


def _gateway_pod(spec: RenderInput) -> dict[str, Any]:
    ports = [("proxy", PROXY_PORT), ("ready", READY_PORT), ("metrics", METRICS_PORT)]
    container = _proxy_container(spec, [f"regular@0.0.0.0:{PROXY_PORT}"], ports)
    return {"automountServiceAccountToken": False, "containers": [container]}


def _service(spec: RenderInput) -> dict[str, Any]:
    svc = _kube(spec, "service") or {}
    meta = _meta(spec, spec.name)
    meta["labels"] = {**meta["labels"], **(svc.get("extraLabels") or {})}
    if svc.get("extraAnnotations"):
        meta["annotations"] = dict(svc["extraAnnotations"])
    body: dict[str, Any] = {
        "type": svc.get("type") or "ClusterIP",
        "selector": _selector(spec),
        "ports": [{"name": "proxy", "port": PROXY_PORT, "targetPort": "proxy", "protocol": "TCP"}],
    }
    for key in ("clusterIP", "externalTrafficPolicy", "loadBalancerSourceRanges"):
        if svc.get(key):
            body[key] = svc[key]
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": body}


# --- the sidecar pod -------------------------------------------------------------------------------------------


def _sidecar_pod(spec: RenderInput) -> dict[str, Any]:
    modes = [f"transparent@127.0.0.1:{TRANSPARENT_PORT}", f"transparent@::1:{TRANSPARENT_PORT}"]
    proxy = _proxy_container(spec, modes, [("ready", READY_PORT), ("metrics", METRICS_PORT)])
    proxy["restartPolicy"] = "Always"  # a native sidecar: started (and ready) before the workload starts
    proxy.setdefault("startupProbe", {**_ready_probe(spec), "failureThreshold": 60, "periodSeconds": 1})
    return {"initContainers": [_trust_init(spec), _iptables_init(spec), proxy], "containers": [_app(spec)]}


def trust_args(spec: RenderInput) -> list[str]:
    args = ["trust", "--out", TRUST_BUNDLE]
    if spec.ca_cert_file:
        return args + ["--ca", spec.ca_cert_file]
    return args + ["--data-dir", DATA_DIR, "--gateway", f"{spec.namespace}/{spec.name}", "--mint"]


def _trust_init(spec: RenderInput) -> dict[str, Any]:
    """Writes the bundle the workload trusts (system CAs + the gateway CA), minting the CA the proxy then reuses."""
    security = _container_security(spec)
    return {
        "name": "egress-trust",
        "image": image_of(spec),
        "args": trust_args(spec),
        "securityContext": security,
        "volumeMounts": [m for m in _mounts(spec) if m["name"] != "config"] + [{"name": "trust", "mountPath": TRUST_DIR}],
    }


def _iptables_init(spec: RenderInput) -> dict[str, Any]:
    return {
        "name": "egress-iptables",
        "image": image_of(spec),
        "args": ["iptables", "--proxy-uid", str(PROXY_UID), "--port", str(TRANSPARENT_PORT), "--apply"],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,  # root filesystem writable: iptables takes /run/xtables.lock
            # NET_RAW for iptables-legacy hosts (it opens a raw socket); NET_ADMIN changes the NAT table.
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    }


def _app(spec: RenderInput) -> dict[str, Any]:
    """The workload: any image, any uid except PROXY_UID; it needs no proxy settings, only the trust bundle."""
    return {
        "name": "app",
        "image": spec.app_image,
        "env": [{"name": var, "value": TRUST_BUNDLE} for var in CA_ENV_VARS],
        "volumeMounts": [{"name": "trust", "mountPath": TRUST_DIR, "readOnly": True}],
        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "allowPrivilegeEscalation": False},
    }
