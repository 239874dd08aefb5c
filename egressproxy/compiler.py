"""Validated resources -> one immutable, fully resolved `Snapshot` (plus problems and status conditions).

The compiler resolves every reference once, so the data plane never does: route parentRefs to the served
EgressGateway and its listeners, backendRefs to Backends, secretRefs to decoded Secrets, policy targetRefs /
targetRef / parentRefs and route filter ExtensionRefs to their attachment scope. Every dangling reference is a
`Problem` at its exact file:line and field path (`spec.rules[0].backendRefs[0].name: Backend "default/nope" not
found`): a typo must never silently disable a route or a policy. Status conditions are computed the way a
Kubernetes controller would write them (Accepted, ResolvedRefs, Programmed).

A `CompileResult` carries a snapshot whenever a gateway could be selected, so `explain` and `validate` can show
what would be served; **serve it only when `result.ok`** (no problems). The runtime's reloader does exactly that.

Secrets come from `v1 Secret` objects and from a mounted secrets folder, `DIR/<name>/<key>` (one file per key,
namespace-agnostic: a mounted Secret answers a reference from any namespace and wins over a `v1 Secret` object of
the same name, since the mounted copy is the one Kubernetes rotates). Reading that folder is `read_secrets_dir`,
a blocking function the runtime calls off the event loop and passes in as `mounted=`.
"""

from __future__ import annotations

import functools

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from egressproxy.config.problems import ObjectRef, Problem
from egressproxy.config.resource import Resource
from egressproxy.hostnames import InvalidHostname, canonical_host
from egressproxy.snapshot import (
    MOUNTED_NAMESPACE,
    AIProvider,
    AttachedPolicy,
    Backend,
    CAMaterial,
    Carries,
    Condition,
    DenyAction,
    DirectResponse,
    Gateway,
    HeaderModifier,
    HttpRouteMatch,
    L4Match,
    Listener,
    ParentProxy,
    PathMatch,
    PathRewrite,
    PolicyIndex,
    RequestRedirect,
    Route,
    RouteBucket,
    RouteTable,
    Rule,
    RuleEntry,
    RuleFilters,
    SecretData,
    Snapshot,
    StaticHost,
    URLRewrite,
    ValueMatch,
    WeightedBackend,
    freeze,
)

__all__ = [
    "CompileResult",
    "MountedSecrets",
    "compile_config",
    "read_secrets_dir",
    "select_gateway",
    "ROUTE_KINDS",
    "POLICY_KINDS",
]

APOXY_GROUP = "clrk.apoxy.dev"
KGATEWAY_GROUP = "gateway.kgateway.dev"
GATEWAY_API_GROUP = "gateway.networking.k8s.io"

HTTP_ROUTE_KINDS = ("HTTPRoute", "GRPCRoute")
ROUTE_KINDS = ("HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute", "UDPRoute", "EgressL4Route")
BACKEND_KINDS = ("Backend", "AIBackend")
GATEWAY_KINDS = ("EgressGateway", "Gateway")  # `Gateway` in a policy targetRef means the EgressGateway

# Which scopes each policy kind may attach to ("gateway" includes its listeners through sectionName).
_ALL_SCOPES = frozenset({"gateway", "backend", "route"})
POLICY_KINDS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "EgressDenyPolicy": frozenset({"route"}),
        "RateLimitPolicy": _ALL_SCOPES,
        "CredentialInjectionPolicy": _ALL_SCOPES,
        "LoggingPolicy": _ALL_SCOPES,
        "TrafficPolicy": _ALL_SCOPES,
        "HTTPListenerPolicy": frozenset({"gateway"}),
        "BackendTLSPolicy": frozenset({"backend"}),
        "RegionAllowListPolicy": _ALL_SCOPES,
        "DNSPolicy": frozenset({"gateway", "backend"}),
    }
)
_ATTACHMENT_FIELDS = ("targetRefs", "targetRef", "parentRefs")

# Listener precedence (DESIGN.md section 4): TLS Terminate > HTTPS > HTTP > TLS Passthrough > TCP; UDP apart.
PRECEDENCE_TLS_TERMINATE = 5
PRECEDENCE_HTTPS = 4
PRECEDENCE_HTTP = 3
PRECEDENCE_TLS_PASSTHROUGH = 2
PRECEDENCE_TCP = 1
PRECEDENCE_UDP = 0

CA_KEY_PAIRS = (("tls.crt", "tls.key"), ("ca.crt", "ca.key"))
PROVIDER_KINDS = ("openai", "anthropic", "gemini", "bedrock", "azureOpenai", "vertexAi", "azure", "mistral")
_PROVIDER_KIND_ALIASES = {"azure": "azureOpenai"}
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
AUTH_TOKEN_KEY = "Authorization"  # DESIGN.md 4.1; a Secret with exactly one key is read whatever its name


# ---------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class CompileResult:
    snapshot: Snapshot | None
    problems: list[Problem]
    statuses: dict[ObjectRef, tuple[Condition, ...]]
    listener_statuses: dict[str, tuple[Condition, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the snapshot may be served: a gateway was selected and nothing is wrong."""
        return self.snapshot is not None and not self.problems


@dataclass(frozen=True)
class MountedSecrets:
    """The Secrets of a mounted secrets folder, by name (namespace-agnostic)."""

    secrets: Mapping[str, SecretData] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()


# ---------------------------------------------------------------------------------------------------------------
# Mounted secrets


def read_secrets_dir(path: str | os.PathLike[str]) -> MountedSecrets:
    """Read `DIR/<name>/<key>` into Secrets. Blocking: the runtime calls it from a worker thread.

    Kubernetes mounts each key as a symlink into a timestamped `..<date>` folder reached through `..data`;
    names starting with `..` and hidden folders are skipped, while dot-files stay keys (`.htpasswd` is one).
    A file directly under DIR (not in a folder) belongs to no Secret and is ignored.
    """
    root = Path(path)
    if not root.is_dir():
        return MountedSecrets({}, (Problem(str(root), 0, "-", "--secrets-dir", "no such folder"),))
    secrets: dict[str, SecretData] = {}
    problems: list[Problem] = []
    for secret_dir in sorted(root.iterdir()):
        if secret_dir.name.startswith(".") or not secret_dir.is_dir():
            continue
        data, read_problems = _read_secret_keys(secret_dir)
        secrets[secret_dir.name] = SecretData(data)
        problems.extend(read_problems)
    return MountedSecrets(secrets, tuple(problems))


def _read_secret_keys(secret_dir: Path) -> tuple[dict[str, bytes], list[Problem]]:
    data: dict[str, bytes] = {}
    problems: list[Problem] = []
    for key_file in sorted(secret_dir.iterdir()):
        if key_file.name.startswith("..") or key_file.is_dir():
            continue
        try:
            data[key_file.name] = key_file.read_bytes()
        except OSError as e:
            obj = f"Secret/{MOUNTED_NAMESPACE}/{secret_dir.name}"
            problems.append(Problem(str(key_file), 0, obj, key_file.name, f"cannot read: {e.strerror or e}"))
    return data, problems


# ---------------------------------------------------------------------------------------------------------------
# Entry points


def compile_config(
    resources: Sequence[Resource],
    gateway_name: str | None = None,
    secrets_dir: str | os.PathLike[str] | None = None,
    generation: int = 1,
    *,
    mounted: MountedSecrets | None = None,
    files: Iterable[str] | None = None,
) -> CompileResult:
    """Compile validated resources. `mounted` (from `read_secrets_dir`) spares reading `secrets_dir` here."""
    if mounted is None and secrets_dir is not None:
        mounted = read_secrets_dir(secrets_dir)
    return _Compiler(resources, gateway_name, mounted or MountedSecrets(), generation, files).run()


def select_gateway(gateways: Sequence[Resource], wanted: str | None) -> tuple[Resource | None, str | None]:
    """The served EgressGateway: `wanted` as `name` or `namespace/name`, else the only one; else an error."""
    if wanted:
        ns, _, name = wanted.rpartition("/")
        found = [g for g in gateways if g.name == name and (not ns or g.namespace == ns)]
        if len(found) == 1:
            return found[0], None
        names = ", ".join(f"{g.namespace}/{g.name}" for g in gateways) or "none"
        if not found:
            return None, f'EgressGateway "{wanted}" not found (the configuration has: {names})'
        return None, f'EgressGateway name "{wanted}" is ambiguous: write namespace/name (one of {names})'
    if len(gateways) == 1:
        return gateways[0], None
    if not gateways:
        return None, "the configuration has no EgressGateway"
    names = ", ".join(f"{g.namespace}/{g.name}" for g in gateways)
    return None, f"the configuration has several EgressGateways ({names}): choose one with --gateway NAME"


# ---------------------------------------------------------------------------------------------------------------
# Status bookkeeping


class _StatusBook:
    """Conditions per object; once a condition is False it stays False (the first failure explains it)."""

    def __init__(self) -> None:
        self.conditions: dict[ObjectRef, dict[str, Condition]] = {}

    def set(self, ref: ObjectRef, type_: str, ok: bool, reason: str, message: str = "") -> None:
        conds = self.conditions.setdefault(ref, {})
        current = conds.get(type_)
        if current is not None and not current.ok and ok:
            return
        if current is not None and not current.ok and not ok:
            return
        conds[type_] = Condition(type_, "True" if ok else "False", reason, message)

    def has(self, ref: ObjectRef, type_: str) -> bool:
        return type_ in self.conditions.get(ref, {})

    def frozen(self) -> dict[ObjectRef, tuple[Condition, ...]]:
        order = {"Accepted": 0, "ResolvedRefs": 1, "Programmed": 2}
        return {
            ref: tuple(sorted(conds.values(), key=lambda c: (order.get(c.type, 9), c.type)))
            for ref, conds in sorted(self.conditions.items())
        }


# ---------------------------------------------------------------------------------------------------------------
# The compiler


@dataclass
class _ListenerShell:
    """A listener before its route tables exist."""

    name: str
    protocol: str
    port: int | None
    tls_mode: str | None
    intercepts: bool
    precedence: int
    index: int
    allowed_routes: Mapping[str, Any]
    ca: CAMaterial | None = None


@dataclass
class _Attachment:
    listeners: list[str] = field(default_factory=list)
    reason: str | None = None  # why not attached (NoMatchingParent, NotAllowedByListeners)
    message: str = ""


# Secret keys each ProviderAuth type reads (Apoxy's convention); other targets read `secretKey`.
PROVIDER_AUTH_KEYS = {"AWSv4": ("access_key_id", "secret_access_key"), "GCPServiceAccount": ()}


def _credential_keys(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The Secret keys a CredentialInjectionPolicy needs: the AWS key pair for AWSv4, else `secretKey`."""
    if spec.get("target") == "ProviderAuth":
        auth_type = (spec.get("providerAuth") or {}).get("type")
        keys = PROVIDER_AUTH_KEYS.get(auth_type or "")
        if keys is not None:
            return keys or (spec.get("secretKey", "token"),)
    return (spec.get("secretKey", "token"),)


class _Compiler:
    def __init__(
        self,
        resources: Sequence[Resource],
        gateway_name: str | None,
        mounted: MountedSecrets,
        generation: int,
        files: Iterable[str] | None,
    ) -> None:
        self.resources = list(resources)
        self.gateway_name = gateway_name
        self.mounted = mounted
        self.generation = generation
        self.files = tuple(files) if files is not None else tuple(dict.fromkeys(r.file for r in self.resources))
        self.objects: dict[str, dict[tuple[str, str], Resource]] = {}
        for r in self.resources:
            self.objects.setdefault(r.kind, {})[(r.namespace, r.name)] = r
        self.problems: list[Problem] = list(mounted.problems)
        self.status = _StatusBook()
        self.listener_status: dict[str, _StatusBook] = {}
        self.secrets: dict[ObjectRef, SecretData] = {}
        self.secret_values: set[str] = set()
        self.backends: dict[ObjectRef, Backend] = {}
        self.direct_responses: dict[ObjectRef, DirectResponse] = {}
        self.served: Resource | None = None
        self.shells: list[_ListenerShell] = []
        self.attached: dict[tuple[str, str, Any], list[AttachedPolicy]] = {}
        self.policy_targets: dict[ObjectRef, list[tuple[str, Any]]] = {}  # policy -> attachment points
        self.policy_dangling: set[ObjectRef] = set()
        self.denies: dict[ObjectRef, DenyAction] = {}
        self.routes: dict[ObjectRef, Route] = {}

    # --- helpers ----------------------------------------------------------------------------------------------

    def of_kind(self, kind: str) -> list[Resource]:
        return sorted(self.objects.get(kind, {}).values(), key=lambda r: (r.namespace, r.name))

    def find(self, kind: str, namespace: str, name: str) -> Resource | None:
        return self.objects.get(kind, {}).get((namespace, name))

    def problem(self, res: Resource, path: str, message: str) -> None:
        self.problems.append(Problem(res.file, res.line_of(path), str(res.ref), path, message))

    def resolve_secret(self, res: Resource, path: str, ref: Mapping[str, Any] | None) -> SecretData | None:
        """The Secret a `{name, namespace?, kind?}` reference at `path` names; a problem when it is missing."""
        if not ref or "name" not in ref:
            return None
        kind = ref.get("kind") or "Secret"
        if kind != "Secret":
            self.problem(res, f"{path}.kind", f'unsupported reference kind "{kind}": put the value in a Secret')
            self.status.set(res.ref, "ResolvedRefs", False, "InvalidKind", f"{path}.kind: {kind} is not a Secret")
            return None
        ns = ref.get("namespace") or res.namespace
        secret = self.secret(ns, ref["name"])
        if secret is None:
            message = f'Secret "{ns}/{ref["name"]}" not found'
            self.problem(res, f"{path}.name", message)
            self.status.set(res.ref, "ResolvedRefs", False, "SecretNotFound", f"{path}.name: {message}")
        return secret

    def secret(self, namespace: str, name: str) -> SecretData | None:
        mounted = self.secrets.get(ObjectRef("Secret", MOUNTED_NAMESPACE, name))
        return mounted if mounted is not None else self.secrets.get(ObjectRef("Secret", namespace, name))

    def require_keys(self, res: Resource, path: str, ref: Mapping[str, Any], secret: SecretData, keys: Sequence[str]) -> bool:
        missing = [k for k in keys if k not in secret]
        if missing:
            ns = ref.get("namespace") or res.namespace
            message = f'Secret "{ns}/{ref["name"]}" has no key {", ".join(repr(k) for k in missing)}'
            self.problem(res, f"{path}.name", message)
            self.status.set(res.ref, "ResolvedRefs", False, "InvalidSecret", f"{path}.name: {message}")
            return False
        return True

    # --- the pass ---------------------------------------------------------------------------------------------

    def run(self) -> CompileResult:
        self.collect_secrets()
        self.compile_direct_responses()
        self.compile_backends()
        self.select()
        if self.served is not None:
            self.compile_listener_shells(self.served)
        for other in self.of_kind("EgressGateway"):
            if other is not self.served:
                self.check_gateway_refs(other)
        self.compile_policies()
        self.compile_routes()
        self.report_extension_only_policies()
        gateway = self.compile_gateway(self.served) if self.served is not None else None
        self.finish_statuses(gateway)
        statuses = self.status.frozen()
        listener_statuses = {
            name: book.frozen().get(ObjectRef("Listener", "", name), ()) for name, book in self.listener_status.items()
        }
        snapshot = None
        if gateway is not None:
            snapshot = Snapshot(
                gateway=gateway,
                gateways=tuple(r.ref for r in self.of_kind("EgressGateway")),
                backends=MappingProxyType(dict(self.backends)),
                routes=MappingProxyType(dict(sorted(self.routes.items()))),
                secrets=MappingProxyType(dict(self.secrets)),
                policies=PolicyIndex(MappingProxyType({k: tuple(v) for k, v in self.attached.items()})),
                statuses=MappingProxyType(statuses),
                listener_statuses=MappingProxyType(listener_statuses),
                direct_responses=MappingProxyType(dict(self.direct_responses)),
                generation=self.generation,
                files=self.files,
                _secret_values=frozenset(self.secret_values),
            )
        return CompileResult(snapshot, _dedupe(self.problems), statuses, listener_statuses)

    # --- secrets ----------------------------------------------------------------------------------------------

    def collect_secrets(self) -> None:
        for res in self.of_kind("Secret"):
            self.add_secret(res.ref, SecretData(res.spec.get("data", {})))
        for name, data in sorted(self.mounted.secrets.items()):
            self.add_secret(ObjectRef("Secret", MOUNTED_NAMESPACE, name), data)

    def add_secret(self, ref: ObjectRef, data: SecretData) -> None:
        self.secrets[ref] = data
        for value in data.values():
            text = value.decode("utf-8", errors="ignore").strip()
            if text:
                self.secret_values.add(text)

    # --- direct responses and backends ------------------------------------------------------------------------

    def compile_direct_responses(self) -> None:
        for res in self.of_kind("DirectResponse"):
            status = res.spec.get("status", res.spec.get("statusCode", 200))
            self.direct_responses[res.ref] = DirectResponse(res.ref, int(status), res.spec.get("body", ""))
            self.status.set(res.ref, "Accepted", True, "Accepted")

    def compile_backends(self) -> None:
        for kind in BACKEND_KINDS:
            for res in self.of_kind(kind):
                self.backends[res.ref] = self.compile_backend(res)
                self.status.set(res.ref, "Accepted", True, "Accepted")
                self.status.set(res.ref, "ResolvedRefs", True, "ResolvedRefs")

    def compile_backend(self, res: Resource) -> Backend:
        spec = res.spec
        hosts = tuple(
            StaticHost(_canonical_or_raw(h["host"]), int(h["port"])) for h in spec.get("static", {}).get("hosts", [])
        )
        parent = self.compile_parent(res, hosts) if "parent" in spec else None
        ai = spec.get("ai") if res.kind == "Backend" else spec
        groups = self.compile_ai(res, ai or {}, "spec.ai" if res.kind == "Backend" else "spec")
        if res.kind == "AIBackend":
            self.check_ai_backend_groups(res)
        return Backend(
            ref=res.ref,
            type=spec.get("type", "AI" if res.kind == "AIBackend" else "Static"),
            static_hosts=hosts,
            labels=MappingProxyType(dict(res.labels)),
            parent=parent,
            ai_groups=groups,
            spec=freeze(spec),
        )

    def compile_parent(self, res: Resource, hosts: tuple[StaticHost, ...]) -> ParentProxy:
        ref = res.spec["parent"].get("authSecretRef")
        path = "spec.parent.authSecretRef"
        secret = self.resolve_secret(res, path, ref)
        username = password = None
        if secret is not None and ref is not None and self.require_keys(res, path, ref, secret, ("username", "password")):
            username, password = secret.text("username"), secret.text("password")
        auth_ref = ObjectRef("Secret", ref.get("namespace") or res.namespace, ref["name"]) if ref else None
        return ParentProxy(hosts[0] if hosts else None, username, password, auth_ref)

    def compile_ai(self, res: Resource, ai: Mapping[str, Any], path: str) -> tuple[tuple[AIProvider, ...], ...]:
        if "llm" in ai:
            return ((self.compile_provider(res, ai["llm"], f"{path}.llm", None),),)
        if "provider" in ai:
            return ((self.compile_provider(res, ai["provider"], f"{path}.provider", None),),)
        groups = []
        for i, group in enumerate(ai.get("priorityGroups", [])):
            providers = []
            for j, entry in enumerate(group.get("providers", [])):
                providers.append(self.compile_provider(res, entry, f"{path}.priorityGroups[{i}].providers[{j}]", entry.get("name")))
            groups.append(tuple(providers))
        return tuple(groups)

    def compile_provider(self, res: Resource, block: Mapping[str, Any], path: str, name: str | None) -> AIProvider:
        kind = next((k for k in PROVIDER_KINDS if k in block), block.get("type") or "unknown")
        cfg: Mapping[str, Any] = block.get(kind, {}) if isinstance(block.get(kind), Mapping) else {}
        cpath = f"{path}.{kind}"
        host_override = cfg.get("hostOverride") or {}
        auth_kind, auth_ref, inline = self.compile_provider_auth(res, cfg, cpath)
        return AIProvider(
            name=name or _PROVIDER_KIND_ALIASES.get(kind, kind),
            kind=_PROVIDER_KIND_ALIASES.get(kind, kind),
            model=cfg.get("model") or cfg.get("deploymentName"),
            host=_canonical_or_raw(host_override["host"]) if "host" in host_override else None,
            port=host_override.get("port"),
            scheme=host_override.get("scheme") if host_override else None,
            path=(cfg.get("pathOverride") or {}).get("fullPath"),
            auth_kind=auth_kind,
            auth_secret=auth_ref,
            auth_inline=inline,
            api_version=cfg.get("apiVersion"),
            region=cfg.get("region") or cfg.get("location"),
            config=freeze(cfg),
        )

    def compile_provider_auth(
        self, res: Resource, cfg: Mapping[str, Any], path: str
    ) -> tuple[str | None, ObjectRef | None, str | None]:
        token = cfg.get("authToken")
        if token is None and isinstance(cfg.get("auth"), Mapping):  # bedrock: auth {type: Secret, secretRef}
            token, path, kind = cfg["auth"], f"{path}.auth", cfg["auth"].get("type", "Secret")
        else:
            path = f"{path}.authToken"
            kind = token.get("kind") if token else None
        if not token:
            return None, None, None
        inline = token.get("inline")
        if inline:
            self.secret_values.add(inline)
        ref = token.get("secretRef")
        if ref is None:
            return kind, None, inline
        secret = self.resolve_secret(res, f"{path}.secretRef", ref)
        if secret is not None and kind == "SecretRef" and AUTH_TOKEN_KEY not in secret and len(secret) != 1:
            self.require_keys(res, f"{path}.secretRef", ref, secret, (AUTH_TOKEN_KEY,))
        return kind, ObjectRef("Secret", ref.get("namespace") or res.namespace, ref["name"]), inline

    def check_ai_backend_groups(self, res: Resource) -> None:
        for i, group in enumerate(res.spec.get("groups", [])):
            for j, entry in enumerate(group.get("backends", [])):
                ref = entry.get("backendRef", {})
                ns = ref.get("namespace") or res.namespace
                if ObjectRef("Backend", ns, ref.get("name", "")) not in self.backends and not self.find("Backend", ns, ref.get("name", "")):
                    path = f"spec.groups[{i}].backends[{j}].backendRef.name"
                    self.problem(res, path, f'Backend "{ns}/{ref.get("name")}" not found')
                    self.status.set(res.ref, "ResolvedRefs", False, "BackendNotFound", path)

    # --- gateway selection and listeners ----------------------------------------------------------------------

    def select(self) -> None:
        gateways = self.of_kind("EgressGateway")
        chosen, error = select_gateway(gateways, self.gateway_name)
        self.served = chosen
        if error is None:
            return
        if self.gateway_name:
            self.problems.append(Problem("<command line>", 0, "-", "--gateway", error))
        elif gateways:
            second = gateways[1]
            self.problems.append(Problem(second.file, second.line, str(second.ref), "-", error))
        else:
            self.problems.append(Problem(self.files[0] if self.files else "<config>", 0, "-", "-", error))

    def compile_listener_shells(self, gw: Resource) -> None:
        for i, spec in enumerate(gw.spec.get("listeners", [])):
            shell = self.listener_shell(gw, i, spec)
            self.shells.append(shell)

    def check_gateway_refs(self, gw: Resource) -> None:
        """A gateway that is not served still has its references checked: the config must be valid whole."""
        for i, spec in enumerate(gw.spec.get("listeners", [])):
            tls = spec.get("tls") or {}
            if tls.get("mode") == "Terminate" and tls.get("caCertRef"):
                self.ca_material(gw, f"spec.listeners[{i}].tls.caCertRef", tls["caCertRef"])
        self.trust_bundle(gw, (gw.spec.get("upstreamTLS") or {}).get("additionalTrustBundleSecretRef"))
        self.gateway_parent(gw)

    def listener_shell(self, gw: Resource, index: int, spec: Mapping[str, Any]) -> _ListenerShell:
        protocol = spec["protocol"]
        tls = spec.get("tls")
        mode = tls.get("mode", "Passthrough") if tls else None
        intercepts = protocol == "HTTPS" or (protocol in ("HTTP", "TLS") and mode == "Terminate")
        name = spec["name"]
        book = self.listener_status[name] = _StatusBook()
        lref = ObjectRef("Listener", "", name)
        book.set(lref, "Accepted", True, "Accepted")
        ca = None
        if intercepts and tls and tls.get("caCertRef"):
            ca = self.ca_material(gw, f"spec.listeners[{index}].tls.caCertRef", tls["caCertRef"])
            if ca is None:
                book.set(lref, "ResolvedRefs", False, "InvalidCertificateRef", "the caCertRef Secret is missing or invalid")
        book.set(lref, "ResolvedRefs", True, "ResolvedRefs")
        return _ListenerShell(
            name=name,
            protocol=protocol,
            port=spec.get("port"),
            tls_mode=mode,
            intercepts=intercepts,
            precedence=_precedence(protocol, mode),
            index=index,
            allowed_routes=spec.get("allowedRoutes") or {},
            ca=ca,
        )

    def ca_material(self, gw: Resource, path: str, ref: Mapping[str, Any]) -> CAMaterial | None:
        secret = self.resolve_secret(gw, path, ref)
        if secret is None:
            return None
        ns = ref.get("namespace") or gw.namespace
        for cert_key, key_key in CA_KEY_PAIRS:
            if cert_key in secret and key_key in secret:
                message = _ca_error(secret[cert_key], secret[key_key], cert_key, key_key)
                if message is not None:
                    self.problem(gw, f"{path}.name", f'Secret "{ns}/{ref["name"]}": {message}')
                    self.status.set(gw.ref, "ResolvedRefs", False, "InvalidCertificateRef", message)
                    return None
                return CAMaterial(secret[cert_key], secret[key_key], ObjectRef("Secret", ns, ref["name"]))
        message = f'Secret "{ns}/{ref["name"]}" has neither tls.crt/tls.key nor ca.crt/ca.key'
        self.problem(gw, f"{path}.name", message)
        self.status.set(gw.ref, "ResolvedRefs", False, "InvalidCertificateRef", message)
        return None

    # --- policies ---------------------------------------------------------------------------------------------

    def compile_policies(self) -> None:
        for kind in POLICY_KINDS:
            for res in self.of_kind(kind):
                self.compile_policy(res)

    def compile_policy(self, res: Resource) -> None:
        self.policy_targets.setdefault(res.ref, [])
        for path, tref in _policy_target_refs(res):
            point = self.resolve_target(res, path, tref)
            if point is not None:
                self.attach(res, point)
        self.check_policy_refs(res)
        if res.kind == "EgressDenyPolicy":
            self.record_deny(res)

    def resolve_target(self, res: Resource, path: str, tref: Mapping[str, Any]) -> tuple[str, Any] | None:
        """The attachment point (scope, key) a target reference names, or None (with a problem if dangling).

        Returns ("elsewhere", None) for a target that exists outside the served gateway.
        """
        kind = tref.get("kind") or "EgressGateway"
        ns = tref.get("namespace") or res.namespace
        name = tref["name"]
        allowed = POLICY_KINDS.get(res.kind, _ALL_SCOPES)
        scope = "gateway" if kind in GATEWAY_KINDS else "backend" if kind in (*BACKEND_KINDS, "Service") else "route" if kind in ROUTE_KINDS else None
        if scope is None or scope not in allowed:
            kinds = _kinds_for_scopes(allowed)
            self.problem(res, f"{path}.kind", f'a {res.kind} cannot target a {kind} (it attaches to {kinds})')
            self.status.set(res.ref, "Accepted", False, "InvalidKind", f"{path}.kind: {kind}")
            self.policy_dangling.add(res.ref)
            return None
        if scope == "gateway":
            return self.resolve_gateway_target(res, path, ns, name, tref.get("sectionName"))
        if kind == "Service":
            return ("backend", ObjectRef("Service", ns, name))
        target = self.find(kind, ns, name)
        if target is None:
            self.dangling_target(res, f"{path}.name", f'{kind} "{ns}/{name}" not found')
            return None
        if scope == "route":
            return self.route_target(res, path, target, tref.get("sectionName"))
        return ("backend", target.ref)

    def resolve_gateway_target(
        self, res: Resource, path: str, ns: str, name: str, section: str | None
    ) -> tuple[str, Any] | None:
        target = self.find("EgressGateway", ns, name)
        if target is None:
            self.dangling_target(res, f"{path}.name", f'EgressGateway "{ns}/{name}" not found')
            return None
        listeners = [spec.get("name") for spec in target.spec.get("listeners", [])]
        if section is not None and section not in listeners:
            self.dangling_target(res, f"{path}.sectionName", f'EgressGateway "{ns}/{name}" has no listener "{section}"')
            return None
        if self.served is None or target.ref != self.served.ref:
            return ("elsewhere", None)
        return ("listener", section) if section is not None else ("gateway", None)

    def route_target(self, res: Resource, path: str, route: Resource, section: str | None) -> tuple[str, Any] | None:
        if section is None:
            return ("route", route.ref)
        for i, rule in enumerate(route.spec.get("rules", [])):
            if rule.get("name") == section:
                return ("rule", (route.ref, i))
        self.dangling_target(res, f"{path}.sectionName", f'{route.kind} "{route.namespace}/{route.name}" has no rule named "{section}"')
        return None

    def dangling_target(self, res: Resource, path: str, message: str) -> None:
        self.problem(res, path, message)
        self.status.set(res.ref, "Accepted", False, "TargetNotFound", f"{path}: {message}")
        self.policy_dangling.add(res.ref)

    def attach(self, res: Resource, point: tuple[str, Any]) -> None:
        self.policy_targets.setdefault(res.ref, []).append(point)
        scope, key = point
        if scope == "elsewhere":
            return
        spec = freeze({k: v for k, v in res.spec.items() if k not in _ATTACHMENT_FIELDS})
        entries = self.attached.setdefault((res.kind, scope, key), [])
        if all(p.ref != res.ref for p in entries):
            entries.append(AttachedPolicy(res.ref, spec, scope))
            entries.sort(key=lambda p: (p.ref.namespace, p.ref.name))

    def check_policy_refs(self, res: Resource) -> None:
        """Secrets and extension references inside a policy's own spec."""
        spec = res.spec
        if res.kind == "CredentialInjectionPolicy":
            secret = self.resolve_secret(res, "spec.secretRef", spec.get("secretRef"))
            if secret is not None:
                self.require_keys(res, "spec.secretRef", spec["secretRef"], secret, _credential_keys(spec))
        elif res.kind == "HTTPListenerPolicy" and spec.get("basicAuth"):
            ref = spec["basicAuth"].get("credentialsSecretRef")
            secret = self.resolve_secret(res, "spec.basicAuth.credentialsSecretRef", ref)
            if secret is not None and ref is not None:
                self.require_keys(res, "spec.basicAuth.credentialsSecretRef", ref, secret, (".htpasswd",))
        elif res.kind == "BackendTLSPolicy":
            self.check_backend_tls_refs(res)
        elif res.kind == "TrafficPolicy":
            for member in ("extAuth", "extProc", "rateLimit"):
                ref = (spec.get(member) or {}).get("extensionRef")
                if ref:
                    self.check_exists(res, f"spec.{member}.extensionRef.name", "GatewayExtension", ref)
        if not self.status.has(res.ref, "ResolvedRefs"):
            self.status.set(res.ref, "ResolvedRefs", True, "ResolvedRefs")

    def check_backend_tls_refs(self, res: Resource) -> None:
        validation = res.spec.get("validation", {})
        for i, ref in enumerate(validation.get("caCertificateRefs", [])):
            self.resolve_secret(res, f"spec.validation.caCertificateRefs[{i}]", ref)
        for i, ref in enumerate(validation.get("crlRefs", [])):
            secret = self.resolve_secret(res, f"spec.validation.crlRefs[{i}]", ref)
            if secret is not None:
                self.require_keys(res, f"spec.validation.crlRefs[{i}]", ref, secret, ("ca.crl",))
        ref = res.spec.get("clientCertificateRef")
        secret = self.resolve_secret(res, "spec.clientCertificateRef", ref)
        if secret is not None and ref is not None:
            self.require_keys(res, "spec.clientCertificateRef", ref, secret, ("tls.crt", "tls.key"))

    def check_exists(self, res: Resource, path: str, kind: str, ref: Mapping[str, Any]) -> Resource | None:
        ns = ref.get("namespace") or res.namespace
        found = self.find(kind, ns, ref["name"])
        if found is None:
            message = f'{kind} "{ns}/{ref["name"]}" not found'
            self.problem(res, path, message)
            self.status.set(res.ref, "ResolvedRefs", False, f"{kind}NotFound", f"{path}: {message}")
        return found

    def record_deny(self, res: Resource) -> None:
        deny = res.spec.get("denyResponse") or {}
        action = DenyAction(res.ref, int(deny.get("statusCode", 403)), deny.get("message"))
        for scope, key in self.policy_targets.get(res.ref, []):
            route_ref = key[0] if scope == "rule" else key if scope == "route" else None
            if route_ref is not None and route_ref not in self.denies:
                self.denies[route_ref] = action

    def report_extension_only_policies(self) -> None:
        """Policies no targetRef and no route filter attaches: Accepted=False (DESIGN: RateLimitPolicy)."""
        for kind in POLICY_KINDS:
            for res in self.of_kind(kind):
                if not self.policy_targets.get(res.ref) and res.ref not in self.policy_dangling:
                    self.status.set(
                        res.ref,
                        "Accepted",
                        False,
                        "NoTarget",
                        "no targetRef, parentRef or route ExtensionRef filter attaches this policy",
                    )
                elif res.ref not in self.policy_dangling:
                    self.status.set(res.ref, "Accepted", True, "Accepted")

    # --- routes -----------------------------------------------------------------------------------------------

    def compile_routes(self) -> None:
        for kind in ROUTE_KINDS:
            for res in self.of_kind(kind):
                self.compile_route(res)

    def compile_route(self, res: Resource) -> None:
        hostnames = self.route_hostnames(res, "spec.hostnames", res.spec.get("hostnames", []))
        rules = tuple(self.compile_rule(res, i, rule) for i, rule in enumerate(res.spec.get("rules", [])))
        attachment = self.attach_route(res)
        if not self.status.has(res.ref, "ResolvedRefs"):
            self.status.set(res.ref, "ResolvedRefs", True, "ResolvedRefs")
        if attachment.listeners:
            self.status.set(res.ref, "Accepted", True, "Accepted")
            self.routes[res.ref] = Route(
                kind=res.kind,
                ref=res.ref,
                hostnames=hostnames,
                rules=rules,
                deny=self.denies.get(res.ref),
                listeners=tuple(attachment.listeners),
            )
        else:
            self.status.set(res.ref, "Accepted", False, attachment.reason or "NoMatchingParent", attachment.message)

    def route_hostnames(self, res: Resource, path: str, names: Sequence[str]) -> tuple[str, ...]:
        out: list[str] = []
        for i, name in enumerate(names):
            try:
                canonical = canonical_wildcard(name)
            except InvalidHostname as e:
                self.problem(res, f"{path}[{i}]", str(e))
                continue
            if canonical not in out:
                out.append(canonical)
        return tuple(out)

    # parent attachment

    def attach_route(self, res: Resource) -> _Attachment:
        result = _Attachment()
        for i, pref in enumerate(res.spec.get("parentRefs", [])):
            self.attach_parent(res, f"spec.parentRefs[{i}]", pref, result)
        if not result.listeners and result.reason is None:
            served = f"{self.served.namespace}/{self.served.name}" if self.served is not None else "(none selected)"
            result.reason = "NoMatchingParent"
            result.message = f"not attached to the served EgressGateway {served}"
        return result

    def attach_parent(self, res: Resource, path: str, pref: Mapping[str, Any], result: _Attachment) -> None:
        kind = pref.get("kind") or "EgressGateway"
        group = pref.get("group", APOXY_GROUP)
        if kind != "EgressGateway" or group not in (APOXY_GROUP, ""):
            self.problem(res, f"{path}.kind", f'unsupported parent {group}/{kind}: routes attach to a {APOXY_GROUP} EgressGateway')
            self.status.set(res.ref, "ResolvedRefs", False, "InvalidKind", f"{path}.kind: {kind}")
            return
        ns = pref.get("namespace") or res.namespace
        gw = self.find("EgressGateway", ns, pref["name"])
        if gw is None:
            message = f'EgressGateway "{ns}/{pref["name"]}" not found'
            self.problem(res, f"{path}.name", message)
            result.reason, result.message = "NoMatchingParent", f"{path}.name: {message}"
            return
        section = pref.get("sectionName")
        if section is not None and section not in [l.get("name") for l in gw.spec.get("listeners", [])]:
            message = f'EgressGateway "{ns}/{gw.name}" has no listener "{section}"'
            self.problem(res, f"{path}.sectionName", message)
            result.reason, result.message = "NoMatchingParent", f"{path}.sectionName: {message}"
            return
        if self.served is None or gw.ref != self.served.ref:
            return
        self.attach_to_listeners(res, path, pref, section, result)

    def attach_to_listeners(
        self, res: Resource, path: str, pref: Mapping[str, Any], section: str | None, result: _Attachment
    ) -> None:
        port = pref.get("port")
        named = [s for s in self.shells if section is None or s.name == section]
        candidates = [s for s in named if port is None or s.port == port]
        if not candidates:
            message = f"no listener{' ' + repr(section) if section else ''} on port {port}"
            self.problem(res, f"{path}.port", message)
            result.reason, result.message = "NoMatchingParent", f"{path}.port: {message}"
            return
        compatible = [s for s in candidates if _compatible(res.kind, s)]
        if not compatible:
            where = f'listener "{section}" is {_describe(candidates[0])}' if section else "the gateway has no such listener"
            message = f"{where}; a {res.kind} attaches to {_ROUTE_LISTENERS[res.kind]} listeners"
            self.problem(res, f"{path}.sectionName" if section else path, message)
            result.reason, result.message = "NotAllowedByListeners", message
            return
        for shell in compatible:
            refusal = self.allowed_routes_refusal(res, shell)
            if refusal is None:
                if shell.name not in result.listeners:
                    result.listeners.append(shell.name)
            elif not result.listeners:
                result.reason, result.message = "NotAllowedByListeners", refusal

    def allowed_routes_refusal(self, res: Resource, shell: _ListenerShell) -> str | None:
        """Why the listener's allowedRoutes refuses this route (kinds, namespaces), or None."""
        allowed = shell.allowed_routes
        kinds = allowed.get("kinds")
        if kinds and not any(k.get("kind") == res.kind and k.get("group", res.group) in (res.group, "") for k in kinds):
            return f'listener "{shell.name}" allowedRoutes.kinds does not include {res.kind}'
        namespaces = allowed.get("namespaces") or {}
        origin = namespaces.get("from", "Same")
        assert self.served is not None
        if origin == "Same" and res.namespace != self.served.namespace:
            return f'listener "{shell.name}" only allows routes from namespace "{self.served.namespace}"'
        if origin == "Selector" and not _selector_matches(namespaces.get("selector") or {}, res.namespace):
            return f'listener "{shell.name}" allowedRoutes.namespaces.selector does not select namespace "{res.namespace}"'
        return None

    # rules

    def compile_rule(self, res: Resource, index: int, spec: Mapping[str, Any]) -> Rule:
        path = f"spec.rules[{index}]"
        filters = self.compile_filters(res, index, path, spec.get("filters", []))
        backends = tuple(
            wb
            for j, ref in enumerate(spec.get("backendRefs", []))
            if (wb := self.resolve_backend_ref(res, f"{path}.backendRefs[{j}]", ref)) is not None
        )
        matches: tuple[HttpRouteMatch, ...] = ()
        l4_matches: tuple[L4Match, ...] = ()
        if res.kind == "HTTPRoute":
            matches = tuple(self.http_match(res, f"{path}.matches[{j}]", m) for j, m in enumerate(spec.get("matches", [])))
            matches = matches or (HttpRouteMatch(),)
        elif res.kind == "GRPCRoute":
            matches = tuple(_grpc_match(m) for m in spec.get("matches", [])) or (HttpRouteMatch(),)
        elif res.kind == "EgressL4Route":
            l4_matches = tuple(self.l4_match(res, f"{path}.matches[{j}]", m) for j, m in enumerate(spec.get("matches", [])))
        timeouts = spec.get("timeouts") or {}
        return Rule(
            index=index,
            name=spec.get("name"),
            matches=matches,
            l4_matches=l4_matches,
            filters=filters,
            backends=backends,
            request_timeout=timeouts.get("request"),
        )

    def http_match(self, res: Resource, path: str, spec: Mapping[str, Any]) -> HttpRouteMatch:
        return HttpRouteMatch(
            path=_path_match(spec.get("path") or {}),
            method=spec.get("method"),
            headers=tuple(_value_match(h, lower=True) for h in spec.get("headers", [])),
            query_params=tuple(_value_match(q, lower=False) for q in spec.get("queryParams", [])),
        )

    def l4_match(self, res: Resource, path: str, spec: Mapping[str, Any]) -> L4Match:
        ports = []
        for p in spec.get("ports", []):
            if "port" in p:
                ports.append((int(p["port"]), int(p["port"])))
            elif "startPort" in p and "endPort" in p:
                ports.append((int(p["startPort"]), int(p["endPort"])))
        return L4Match(
            cidrs=tuple(ipaddress.ip_network(c, strict=False) for c in spec.get("destinationCIDRs", [])),
            hostnames=self.route_hostnames(res, f"{path}.destinationHostnames", spec.get("destinationHostnames", [])),
            ports=tuple(ports),
            protocol=spec.get("protocol"),
        )

    def compile_filters(self, res: Resource, rule_index: int, path: str, specs: Sequence[Mapping[str, Any]]) -> RuleFilters:
        values: dict[str, Any] = {}
        policies: list[ObjectRef] = []
        for j, spec in enumerate(specs):
            fpath = f"{path}.filters[{j}]"
            ftype = spec.get("type")
            if ftype == "RequestHeaderModifier":
                values["request_headers"] = _header_modifier(spec.get("requestHeaderModifier") or {})
            elif ftype == "ResponseHeaderModifier":
                values["response_headers"] = _header_modifier(spec.get("responseHeaderModifier") or {})
            elif ftype == "URLRewrite":
                values["url_rewrite"] = _url_rewrite(spec.get("urlRewrite") or {})
            elif ftype == "RequestRedirect":
                values["redirect"] = _redirect(spec.get("requestRedirect") or {})
            elif ftype == "RequestMirror":
                mirror = (spec.get("requestMirror") or {}).get("backendRef")
                if mirror:
                    self.resolve_backend_ref(res, f"{fpath}.requestMirror.backendRef", mirror)
            elif ftype == "ExtensionRef":
                self.extension_ref(res, rule_index, f"{fpath}.extensionRef", spec.get("extensionRef") or {}, values, policies)
        return RuleFilters(policies=tuple(policies), **values)

    def extension_ref(
        self,
        res: Resource,
        rule_index: int,
        path: str,
        ref: Mapping[str, Any],
        values: dict[str, Any],
        policies: list[ObjectRef],
    ) -> None:
        kind, name = ref.get("kind", ""), ref.get("name", "")
        if kind != "DirectResponse" and kind not in POLICY_KINDS:
            self.problem(res, f"{path}.kind", f'unsupported extensionRef kind "{kind}" (DirectResponse or a policy kind)')
            self.status.set(res.ref, "ResolvedRefs", False, "InvalidKind", f"{path}.kind: {kind}")
            return
        target = self.find(kind, res.namespace, name)
        if target is None:
            message = f'{kind} "{res.namespace}/{name}" not found'
            self.problem(res, f"{path}.name", message)
            self.status.set(res.ref, "ResolvedRefs", False, "RefNotFound", f"{path}.name: {message}")
            return
        if kind == "DirectResponse":
            values["direct_response"] = self.direct_responses[target.ref]
            return
        policies.append(target.ref)
        self.attach(target, ("rule", (res.ref, rule_index)))

    def resolve_backend_ref(self, res: Resource, path: str, ref: Mapping[str, Any]) -> WeightedBackend | None:
        """A backendRef to a Backend (group/kind may be omitted), an AIBackend, or a Service by DNS name."""
        kind = ref.get("kind") or "Backend"
        group = ref.get("group")
        ns = ref.get("namespace") or res.namespace
        name = ref["name"]
        weight = int(ref.get("weight", 1))
        port = ref.get("port")
        if kind == "Service" and group in (None, "", "core"):
            if port is None:
                self.problem(res, f"{path}.port", "a Service backendRef needs a port")
                self.status.set(res.ref, "ResolvedRefs", False, "UnsupportedValue", f"{path}.port")
                return None
            return WeightedBackend(ObjectRef("Service", ns, name), None, weight, port, f"{name}.{ns}.svc.cluster.local")
        if kind not in BACKEND_KINDS or group not in (None, "", KGATEWAY_GROUP):
            self.problem(res, f"{path}.kind", f'unsupported backendRef kind "{group + "/" if group else ""}{kind}" (a {KGATEWAY_GROUP} Backend, or a Service)')
            self.status.set(res.ref, "ResolvedRefs", False, "InvalidKind", f"{path}.kind: {kind}")
            return None
        backend = self.backends.get(ObjectRef(kind, ns, name))
        if backend is None:
            message = f'{kind} "{ns}/{name}" not found'
            self.problem(res, f"{path}.name", message)
            self.status.set(res.ref, "ResolvedRefs", False, "BackendNotFound", f"{path}.name: {message}")
            return None
        return WeightedBackend(backend.ref, backend, weight, port)

    # --- the gateway ------------------------------------------------------------------------------------------

    def compile_gateway(self, gw: Resource) -> Gateway:
        spec = gw.spec
        listeners = tuple(self.build_listener(shell) for shell in self.shells)
        otlp = spec.get("otlp") or {}
        capture = otlp.get("captureBody") or {}
        headers = otlp.get("headers") or {}
        self.secret_values.update(v for v in headers.values() if v)
        upstream = spec.get("upstreamTLS") or {}
        trust_ref = upstream.get("additionalTrustBundleSecretRef")
        ssrf = spec.get("ssrfGuard") or {}
        self.status.set(gw.ref, "Accepted", True, "Accepted")
        gateway = Gateway(
            ref=gw.ref,
            default_policy=spec.get("defaultPolicy", "deny-all"),
            listeners=listeners,
            request_timeout=float(spec.get("requestTimeout", 300.0)),
            lookup_family=(spec.get("dns") or {}).get("lookupFamily", "V4Preferred"),
            capture_max_bytes=int(capture.get("maxBytes", 65536)),
            capture_content_types=tuple(capture.get("includeContentTypes", ())),
            otlp_endpoint=otlp.get("endpoint") or None,
            otlp_headers=SecretData({k: v.encode("utf-8") for k, v in headers.items()}),
            host_aliases=self.host_aliases(gw, upstream.get("hostAliases", [])),
            trust_bundle_pem=self.trust_bundle(gw, trust_ref),
            trust_bundle_secret=(
                ObjectRef("Secret", trust_ref.get("namespace") or gw.namespace, trust_ref["name"]) if trust_ref else None
            ),
            ssrf_allow=tuple(ipaddress.ip_network(c, strict=False) for c in ssrf.get("allowCIDRs", [])),
            ssrf_deny=tuple(ipaddress.ip_network(c, strict=False) for c in ssrf.get("denyCIDRs", [])),
            parent=self.gateway_parent(gw),
            listeners_by_port=_listeners_by_port(listeners),
        )
        if not self.status.has(gw.ref, "ResolvedRefs"):
            self.status.set(gw.ref, "ResolvedRefs", True, "ResolvedRefs")
        return gateway

    def build_listener(self, shell: _ListenerShell) -> Listener:
        attached = [r for r in self.routes.values() if shell.name in r.listeners]
        return Listener(
            name=shell.name,
            protocol=shell.protocol,
            port=shell.port,
            tls_mode=shell.tls_mode,
            intercepts=shell.intercepts,
            precedence=shell.precedence,
            index=shell.index,
            ca=shell.ca,
            http_routes=build_http_table([r for r in attached if r.kind in HTTP_ROUTE_KINDS]),
            tls_routes=build_host_table([r for r in attached if r.kind == "TLSRoute"]),
            l4_routes=build_l4_table([r for r in attached if r.kind in ("TCPRoute", "UDPRoute", "EgressL4Route")]),
        )

    def host_aliases(self, gw: Resource, aliases: Sequence[Mapping[str, Any]]) -> Mapping[str, tuple[str, ...]]:
        table: dict[str, list[str]] = {}
        for i, alias in enumerate(aliases):
            ip = str(ipaddress.ip_address(alias["ip"]))
            for j, host in enumerate(alias.get("hostnames", [])):
                try:
                    name = canonical_host(host)
                except InvalidHostname as e:
                    self.problem(gw, f"spec.upstreamTLS.hostAliases[{i}].hostnames[{j}]", str(e))
                    continue
                ips = table.setdefault(name, [])
                if ip not in ips:
                    ips.append(ip)
        return MappingProxyType({k: tuple(v) for k, v in table.items()})

    def trust_bundle(self, gw: Resource, ref: Mapping[str, Any] | None) -> bytes | None:
        secret = self.resolve_secret(gw, "spec.upstreamTLS.additionalTrustBundleSecretRef", ref)
        if secret is None:
            return None
        pems = [secret[k].strip() for k in sorted(secret) if secret[k].strip()]
        return b"\n".join(pems) + b"\n" if pems else None

    def gateway_parent(self, gw: Resource) -> Backend | None:
        ref = gw.spec.get("parentRef")
        if not ref:
            return None
        kind = ref.get("kind") or "Backend"
        ns = ref.get("namespace") or gw.namespace
        backend = self.backends.get(ObjectRef(kind, ns, ref["name"]))
        if backend is None:
            message = f'{kind} "{ns}/{ref["name"]}" not found'
            self.problem(gw, "spec.parentRef.name", message)
            self.status.set(gw.ref, "ResolvedRefs", False, "BackendNotFound", f"spec.parentRef.name: {message}")
            return None
        if not backend.static_hosts:
            self.problem(gw, "spec.parentRef.name", f'Backend "{ns}/{ref["name"]}" has no static.hosts[0] to dial as the parent proxy')
            return None
        if backend.parent is None:
            backend = replace(backend, parent=ParentProxy(backend.static_hosts[0]))
        return backend

    # --- statuses ---------------------------------------------------------------------------------------------

    def finish_statuses(self, gateway: Gateway | None) -> None:
        ok = gateway is not None and not self.problems
        not_served = "the configuration has problems; nothing from it is served" if gateway is not None else "no EgressGateway is served"
        for gw in self.of_kind("EgressGateway"):
            self.status.set(gw.ref, "Accepted", True, "Accepted")
            if gateway is not None and gw.ref == gateway.ref:
                self.programmed(gw.ref, ok, not_served)
            else:
                self.status.set(gw.ref, "Programmed", False, "NotSelected", "another EgressGateway is served (--gateway)")
        for name, book in self.listener_status.items():
            self.programmed_in(book, ObjectRef("Listener", "", name), ok, not_served)
        for kind in ROUTE_KINDS:
            for res in self.of_kind(kind):
                attached = res.ref in self.routes
                self.programmed(res.ref, ok and attached, not_served if attached else "not attached to a served listener")
        for kind in BACKEND_KINDS + ("DirectResponse",):
            for res in self.of_kind(kind):
                self.programmed(res.ref, ok, not_served)
        for kind in POLICY_KINDS:
            for res in self.of_kind(kind):
                served = any(scope not in ("elsewhere",) and self.point_served(scope, key) for scope, key in self.policy_targets.get(res.ref, []))
                self.programmed(res.ref, ok and served, not_served if served else "attached to nothing the served gateway uses")

    def point_served(self, scope: str, key: Any) -> bool:
        if scope in ("gateway", "listener", "backend"):
            return True
        route_ref = key[0] if scope == "rule" else key
        return route_ref in self.routes

    def programmed(self, ref: ObjectRef, ok: bool, why_not: str) -> None:
        self.programmed_in(self.status, ref, ok, why_not)

    @staticmethod
    def programmed_in(book: _StatusBook, ref: ObjectRef, ok: bool, why_not: str) -> None:
        if ok:
            book.set(ref, "Programmed", True, "Programmed", "in the served snapshot")
        else:
            book.set(ref, "Programmed", False, "Invalid" if "problems" in why_not else "Pending", why_not)


# ---------------------------------------------------------------------------------------------------------------
# Pure helpers: hostnames, matches, filters


def canonical_wildcard(name: str) -> str:
    """Canonical form of a route hostname, keeping a leading `*.` wildcard."""
    if name.startswith("*."):
        return "*." + canonical_host(name[2:])
    return canonical_host(name)


def _canonical_or_raw(host: str) -> str:
    try:
        return canonical_host(host)
    except InvalidHostname:
        return host


def _path_match(spec: Mapping[str, Any]) -> PathMatch:
    ptype = spec.get("type", "PathPrefix")
    value = spec.get("value", "/")
    if ptype == "PathPrefix":
        return PathMatch("PathPrefix", value.rstrip("/"))
    if ptype == "RegularExpression":
        return PathMatch(ptype, value, re.compile(value))
    return PathMatch("Exact", value)


def _value_match(spec: Mapping[str, Any], lower: bool) -> ValueMatch:
    name = spec["name"].lower() if lower else spec["name"]
    mtype = spec.get("type", "Exact")
    regex = re.compile(spec["value"]) if mtype == "RegularExpression" else None
    return ValueMatch(name, mtype, spec["value"], regex)


def _grpc_match(spec: Mapping[str, Any]) -> HttpRouteMatch:
    """A GRPCRoute match as the HTTP/2 request it selects: POST /<service>/<method>."""
    method = spec.get("method") or {}
    service, name = method.get("service"), method.get("method")
    if method.get("type", "Exact") == "RegularExpression":
        pattern = f"/{service or '[^/]+'}/{name or '[^/]+'}"
        path = PathMatch("RegularExpression", pattern, re.compile(pattern))
    elif service and name:
        path = PathMatch("Exact", f"/{service}/{name}")
    elif service:
        path = PathMatch("PathPrefix", f"/{service}")
    elif name:
        pattern = f"/[^/]+/{re.escape(name)}"
        path = PathMatch("RegularExpression", pattern, re.compile(pattern))
    else:
        path = PathMatch("PathPrefix", "")
    headers = tuple(_value_match(h, lower=True) for h in spec.get("headers", []))
    return HttpRouteMatch(path=path, headers=headers)


def _header_modifier(spec: Mapping[str, Any]) -> HeaderModifier:
    return HeaderModifier(
        set=tuple((h["name"], h["value"]) for h in spec.get("set", [])),
        add=tuple((h["name"], h["value"]) for h in spec.get("add", [])),
        remove=tuple(spec.get("remove", [])),
    )


def _path_rewrite(spec: Mapping[str, Any] | None) -> PathRewrite | None:
    if not spec:
        return None
    ptype = spec["type"]
    value = spec.get("replaceFullPath") if ptype == "ReplaceFullPath" else spec.get("replacePrefixMatch")
    return PathRewrite(ptype, value or "")


def _url_rewrite(spec: Mapping[str, Any]) -> URLRewrite:
    hostname = spec.get("hostname")
    return URLRewrite(canonical_host(hostname) if hostname else None, _path_rewrite(spec.get("path")))


def _redirect(spec: Mapping[str, Any]) -> RequestRedirect:
    hostname = spec.get("hostname")
    return RequestRedirect(
        scheme=spec.get("scheme"),
        hostname=canonical_host(hostname) if hostname else None,
        port=spec.get("port"),
        path=_path_rewrite(spec.get("path")),
        status_code=int(spec.get("statusCode", 302)),
    )


@functools.lru_cache(maxsize=64)  # a key parse costs ~0.1 s; reloads and per-gateway validation repeat it
def _ca_error(cert_pem: bytes, key_pem: bytes, cert_key: str, key_key: str) -> str | None:
    """Why the CA pair cannot mint certificates, or None. Checked here so a bad CA fails validation, not a TLS
    handshake at 3 a.m."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return f"{cert_key} is not a PEM certificate"
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return f"{key_key} is not an unencrypted PEM private key"
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if cert.public_key().public_bytes(encoding, public) != key.public_key().public_bytes(encoding, public):
        return f"{key_key} is not the key of {cert_key}"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Listener compatibility and precedence


def _precedence(protocol: str, tls_mode: str | None) -> int:
    if protocol == "TLS":
        return PRECEDENCE_TLS_TERMINATE if tls_mode == "Terminate" else PRECEDENCE_TLS_PASSTHROUGH
    if protocol == "HTTPS" or (protocol == "HTTP" and tls_mode == "Terminate"):
        return PRECEDENCE_HTTPS
    return {"HTTP": PRECEDENCE_HTTP, "TCP": PRECEDENCE_TCP}.get(protocol, PRECEDENCE_UDP)


_ROUTE_LISTENERS = {
    "HTTPRoute": "HTTP, HTTPS or TLS Terminate",
    "GRPCRoute": "HTTP, HTTPS or TLS Terminate",
    "TLSRoute": "TLS Passthrough",
    "TCPRoute": "TCP",
    "UDPRoute": "UDP",
    "EgressL4Route": "TCP or UDP",
}


def _compatible(route_kind: str, shell: _ListenerShell) -> bool:
    protocol, terminate = shell.protocol, shell.tls_mode == "Terminate"
    if route_kind in HTTP_ROUTE_KINDS:
        return protocol in ("HTTP", "HTTPS") or (protocol == "TLS" and terminate)
    if route_kind == "TLSRoute":
        return protocol == "TLS" and not terminate
    if route_kind == "TCPRoute":
        return protocol == "TCP"
    if route_kind == "UDPRoute":
        return protocol == "UDP"
    return protocol in ("TCP", "UDP")  # EgressL4Route


def _describe(shell: _ListenerShell) -> str:
    return f"{shell.protocol} {shell.tls_mode}" if shell.tls_mode else shell.protocol


def _accepts(listener: Listener, carries: Carries) -> bool:
    """Can this listener take a connection that carries `carries`? (DESIGN.md section 4, listener matching)"""
    if carries is Carries.TLS:
        return listener.intercepts or listener.protocol in ("TLS", "TCP")
    if carries is Carries.HTTP:
        return (listener.protocol == "HTTP" and not listener.intercepts) or listener.protocol == "TCP"
    if carries is Carries.TCP:
        return listener.protocol == "TCP"
    return listener.protocol == "UDP"


def _listeners_by_port(listeners: Sequence[Listener]) -> Mapping[tuple[Carries, int | None], tuple[Listener, ...]]:
    """(carries, port) -> listeners with exactly that port; (carries, None) -> port-less ones; by precedence."""
    table: dict[tuple[Carries, int | None], list[Listener]] = {}
    ordered = sorted(listeners, key=lambda l: (-l.precedence, l.index))
    for carries in Carries:
        for listener in ordered:
            if _accepts(listener, carries):
                table.setdefault((carries, listener.port), []).append(listener)
    return MappingProxyType({k: tuple(v) for k, v in table.items()})


def _selector_matches(selector: Mapping[str, Any], namespace: str) -> bool:
    """A namespace label selector, evaluated on the one label every namespace has: its name.

    The configuration holds no Namespace objects, so `kubernetes.io/metadata.name` is the only label known.
    """
    labels = {NAMESPACE_NAME_LABEL: namespace}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def _kinds_for_scopes(scopes: frozenset[str]) -> str:
    names = []
    if "gateway" in scopes:
        names.append("an EgressGateway")
    if "backend" in scopes:
        names.append("a Backend")
    if "route" in scopes:
        names.append("a route")
    return " or ".join(names)


def _policy_target_refs(res: Resource) -> list[tuple[str, Mapping[str, Any]]]:
    """Every (path, reference) that attaches a policy: targetRef, targetRefs[i], parentRefs[i]."""
    spec = res.spec
    refs: list[tuple[str, Mapping[str, Any]]] = []
    if spec.get("targetRef"):
        refs.append(("spec.targetRef", spec["targetRef"]))
    refs += [(f"spec.targetRefs[{i}]", r) for i, r in enumerate(spec.get("targetRefs") or [])]
    refs += [(f"spec.parentRefs[{i}]", r) for i, r in enumerate(spec.get("parentRefs") or [])]
    return refs


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


# ---------------------------------------------------------------------------------------------------------------
# Route tables


def _host_keys(hostnames: Sequence[str]) -> list[tuple[str, str | None]]:
    if not hostnames:
        return [("any", None)]
    return [("wildcard", h[2:]) if h.startswith("*.") else ("exact", h) for h in hostnames]


class _TableBuilder:
    """Collects (hostname key, entry) pairs in priority order, then freezes them into a RouteTable."""

    def __init__(self) -> None:
        self.buckets: dict[tuple[str, str | None], list[RuleEntry]] = {}

    def add(self, keys: Iterable[tuple[str, str | None]], entry: RuleEntry) -> None:
        for key in keys:
            self.buckets.setdefault(key, []).append(entry)

    def build(self, sort_key: Any = None) -> RouteTable:
        exact: dict[str, RouteBucket] = {}
        wildcard: dict[str, RouteBucket] = {}
        anyb = RouteBucket((), ())
        for (kind, host), entries in self.buckets.items():
            routes = tuple({id(e.route): e.route for e in entries}.values())
            ordered = tuple(sorted(entries, key=sort_key) if sort_key else entries)
            bucket = RouteBucket(routes, ordered)
            if kind == "exact":
                exact[host or ""] = bucket
            elif kind == "wildcard":
                wildcard[host or ""] = bucket
            else:
                anyb = bucket
        return RouteTable(MappingProxyType(exact), MappingProxyType(wildcard), anyb)


def _route_order(routes: Iterable[Route]) -> list[Route]:
    """Gateway API tie-break across routes: by `namespace/name` (we have no creation timestamps)."""
    return sorted(routes, key=lambda r: (r.ref.namespace, r.ref.name, r.kind))


def build_http_table(routes: Iterable[Route]) -> RouteTable:
    """HTTPRoute/GRPCRoute table; each bucket's entries sorted by Gateway API rule precedence.

    The sort is stable over (route order, rule order, match order), so ties keep the first route and rule.
    """
    builder = _TableBuilder()
    for route in _route_order(routes):
        keys = _host_keys(route.hostnames)
        for rule in route.rules:
            for match in rule.matches:
                builder.add(keys, RuleEntry(route, rule, match))
    return builder.build(sort_key=lambda e: tuple(-x for x in e.match.precedence()))


def build_host_table(routes: Iterable[Route]) -> RouteTable:
    """TLSRoute table: one entry per rule, keyed by the route's hostnames."""
    builder = _TableBuilder()
    for route in _route_order(routes):
        for rule in route.rules:
            builder.add(_host_keys(route.hostnames), RuleEntry(route, rule, None))
    return builder.build()


def build_l4_table(routes: Iterable[Route]) -> RouteTable:
    """TCPRoute/UDPRoute/EgressL4Route table, keyed by each match's destinationHostnames."""
    builder = _TableBuilder()
    for route in _route_order(routes):
        for rule in route.rules:
            if not rule.l4_matches:
                builder.add(_host_keys(route.hostnames), RuleEntry(route, rule, None))
            for match in rule.l4_matches:
                builder.add(_host_keys(match.hostnames), RuleEntry(route, rule, match))
    return builder.build()
