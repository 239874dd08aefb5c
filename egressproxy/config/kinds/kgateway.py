"""gateway.kgateway.dev/v1alpha1: Backend, AIBackend, TrafficPolicy, HTTPListenerPolicy, DirectResponse,
GatewayExtension and GatewayParameters.

Two seeds describe this group: the kgateway OpenAPI (`kgateway-openapi.txt`) and the agentgateway API reference
(`agentgateway-api-reference.md`). Where they differ both spellings are accepted (DirectResponse `status` and
`statusCode`; an AI Backend's `llm`, `priorityGroups` or OpenAPI `provider`). egressproxy extensions, marked
below, follow DESIGN.md 4.1: `Backend.spec.parent` (parent mode), and `hostOverride` / `pathOverride` /
`authHeaderOverride` inside each LLM provider block.

TrafficPolicy, HTTPListenerPolicy, GatewayExtension and GatewayParameters follow kgateway's published API
(DESIGN.md 4.2, "Configs people already have"), read from the kgateway.dev API reference in
github:kgateway-dev/kgateway.dev at 85cd0fc8 (`content/docs/envoy/2.1.x/reference/api.md`, the v2.1 shape;
`content/docs/latest/reference/api.md` at 7732dd7f for v2.0, and 2.2.x for TrafficPolicy `basicAuth`). The
kgateway repository snapshot available (06ff8b9d, Feb 2025) predates these kinds' CRDs, so the schemas below are
written from that reference, not from the CRD YAML. The seeds' spellings (`timeout`, `retries`,
`requestHeaderModifier`, `fieldDefaults`, `accessLog[].otel`, `tracing.provider.otel`, ...) stay accepted beside
upstream's. Most of these fields are accepted and reported Unsupported (egressproxy/compiler/enforcement.py).

Backend and AIBackend follow the same two reference pages (types BackendSpec, AIBackend, LLMProvider,
NamedLLMProvider, PriorityGroup, MultiPoolConfig, AwsBackend, AwsLambda, McpTargetSelector, ...): v2.1's `ai.llm`
holds the provider block (`azureopenai`, `vertexai` in lower case) with `host`/`port`/`path.full`/`authHeader`
beside it; v2.0's nests it under `ai.llm.provider` with `hostOverride`/`pathOverride`/`authHeaderOverride` beside
it and spells priority groups `ai.multipool.priorities[].pool[]`. The seeds' forms (overrides inside the provider
block, camel-case block names, `vertexAi.project`, `aws.lambdaFunctionName`, MCP `service`) stay accepted. An
AIBackend takes the Backend's `ai` block shapes as its spec, beside the OpenAPI's `provider`/`groups`.
"""

from __future__ import annotations

from typing import Any

from egressproxy.config.kinds import KindSchema, register
from egressproxy.config.kinds.common import HEADER_MODIFIER, NAME, POLICY_TARGET_REF, SECRET_REF
from egressproxy.config.kinds.gatewayapi import regex_error
from egressproxy.config.schema import F, Bool, Derive, Duration, Free, Int, List, Map, Num, Obj, OneOf, Str, Type
from egressproxy.hostnames import InvalidHostname, canonical_host

KGATEWAY = ("gateway.kgateway.dev/v1alpha1",)

Problems = list[tuple[str, str]]

# kgateway's policies (TrafficPolicy, HTTPListenerPolicy) take 1 to 16 targetRefs.
KGATEWAY_TARGET_REFS = List(POLICY_TARGET_REF, min_items=1, max_items=16)

PORT = Int(minimum=1, maximum=65535)
REGEX = Str(min_length=1, check_fn=regex_error)
NAMESPACED_REF = Obj({"name": F(NAME, required=True), "namespace": Str()})


def host_error(value: str) -> str | None:
    """Why `value` is not a host name or IP literal we could dial, or None."""
    try:
        canonical_host(value)
    except InvalidHostname as e:
        return str(e)
    return None


HOST = Str(min_length=1, check_fn=host_error)


def _exactly_one(members: tuple[str, ...], where: str = "") -> Any:
    """A rule: exactly one of `members` is set."""

    def rule(value: dict[str, Any]) -> Problems:
        present = [m for m in members if m in value]
        if len(present) == 1:
            return []
        if not present:
            return [(where, f"set one of {', '.join(members)}")]
        return [(present[1], f"set only one of {', '.join(members)} (found {' and '.join(present)})")]

    return rule


def _at_most_one(members: tuple[str, ...]) -> Any:
    """A rule: at most one of `members` is set (kgateway's "at most one of the fields in [...]")."""

    def rule(value: dict[str, Any]) -> Problems:
        present = [m for m in members if m in value]
        if len(present) <= 1:
            return []
        return [(present[1], f"set at most one of {', '.join(members)} (found {' and '.join(present)})")]

    return rule


def _block_for_type(member_for_type: dict[str, str], optional: tuple[str, ...] = ()) -> Any:
    """A rule: the block named by `type` is set (unless optional), and no block of another type is."""

    def rule(value: dict[str, Any]) -> Problems:
        chosen = value.get("type")
        if chosen is None:
            return []
        wanted = member_for_type.get(chosen)
        problems = []
        if wanted is not None and wanted not in value and chosen not in optional:
            problems.append((wanted, f"{wanted} is required when type is {chosen}"))
        for other, member in member_for_type.items():
            if member in value and member != wanted:
                problems.append((member, f"{member} is only valid when type is {other}"))
        return problems

    return rule


# --- LLM providers (agentgateway reference, DESIGN.md 4.1) ---------------------------------------------------

AUTH_TOKEN_KINDS = ("Inline", "SecretRef", "Passthrough")


def _auth_token_rule(token: dict[str, Any]) -> Problems:
    kind = token.get("kind")
    if kind is None:
        return [("kind", "required field is missing (Inline, SecretRef or Passthrough)")]
    problems = []
    if kind == "Inline" and "inline" not in token:
        problems.append(("inline", "inline is required when kind is Inline"))
    if kind == "SecretRef" and "secretRef" not in token:
        problems.append(("secretRef", "secretRef is required when kind is SecretRef"))
    for member, owner in (("inline", "Inline"), ("secretRef", "SecretRef")):
        if member in token and kind != owner:
            problems.append((member, f"{member} is only valid when kind is {owner}"))
    return problems


def _infer_auth_token_kind(token: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI form has no `kind`: a `secretRef` means SecretRef, an `inline` value means Inline."""
    if "kind" not in token:
        if "secretRef" in token and "inline" not in token:
            token["kind"] = "SecretRef"
        elif "inline" in token and "secretRef" not in token:
            token["kind"] = "Inline"
    return token


AUTH_TOKEN = Derive(
    Obj(
        {
            "kind": Str(enum=AUTH_TOKEN_KINDS),
            "inline": Str(min_length=1),
            "secretRef": NAMESPACED_REF,
        },
        rules=(lambda token: _auth_token_rule(_infer_auth_token_kind(dict(token))),),
    ),
    _infer_auth_token_kind,
)

# Extensions beside `model` and `authToken` (DESIGN.md 4.1): where the provider really is.
PROVIDER_OVERRIDES: dict[str, F | Type] = {
    "hostOverride": Obj(
        {
            "host": F(HOST, required=True),
            "port": PORT,
            "scheme": F(Str(enum=("https", "http")), default="https"),
        }
    ),
    "pathOverride": Obj({"fullPath": F(Str(min_length=1, pattern=r"/.*"), required=True)}),
    "authHeaderOverride": Obj({"prefix": Str(), "headerName": Str(min_length=1)}),
}


def _provider(fields: dict[str, F | Type], rules: tuple[Any, ...] = ()) -> Obj:
    return Obj({**fields, **PROVIDER_OVERRIDES}, rules=rules)


OPENAI = _provider({"authToken": AUTH_TOKEN, "model": Str(min_length=1)})
ANTHROPIC = _provider({"authToken": AUTH_TOKEN, "model": Str(min_length=1), "apiVersion": Str(min_length=1)})
GEMINI = _provider({"authToken": AUTH_TOKEN, "model": Str(min_length=1), "apiVersion": Str(min_length=1)})
# kgateway `AwsAuth`; omitted: the ambient AWS credentials (IRSA).
AWS_AUTH = Obj({"type": F(Str(enum=("Secret",)), default="Secret"), "secretRef": F(NAMESPACED_REF, required=True)})
BEDROCK = _provider(
    {
        "model": Str(min_length=1),
        # kgateway (v2.0 and v2.1): optional, default us-east-1, `^[a-z0-9-]+$`; the seed required it.
        "region": F(Str(min_length=1, pattern=r"[a-z0-9-]+"), default="us-east-1"),
        "auth": AWS_AUTH,
        "guardrail": Obj({"identifier": Str(min_length=1), "version": Str(min_length=1)}),
    }
)
AZURE_OPENAI = _provider(
    {
        "authToken": AUTH_TOKEN,
        "endpoint": F(Str(min_length=1), required=True),  # a host or a URL (DESIGN.md 4.1)
        "deploymentName": F(Str(min_length=1), required=True),
        "apiVersion": Str(min_length=1),
    }
)
VERTEX_AI = _provider(
    {
        "authToken": AUTH_TOKEN,
        "project": Str(min_length=1),  # the seed's spelling of kgateway's `projectId`
        "projectId": Str(min_length=1),
        "location": F(Str(min_length=1), required=True),
        "model": Str(min_length=1),
        "modelPath": Str(min_length=1),
        "publisher": Str(min_length=1),  # kgateway: enum GOOGLE; the seed took any publisher
        "apiVersion": Str(min_length=1),
    },
    rules=(_exactly_one(("project", "projectId")),),
)

# kgateway spells two provider blocks in lower case (`azureopenai`, `vertexai`); the seeds' camel case stays.
PROVIDER_BLOCKS: dict[str, F | Type] = {
    "openai": OPENAI,
    "anthropic": ANTHROPIC,
    "gemini": GEMINI,
    "bedrock": BEDROCK,
    "azureOpenai": AZURE_OPENAI,
    "azureopenai": AZURE_OPENAI,
    "vertexAi": VERTEX_AI,
    "vertexai": VERTEX_AI,
}
PROVIDER_NAMES = tuple(PROVIDER_BLOCKS)

# kgateway v2.1 (`LLMProvider`, content/docs/envoy/2.1.x/reference/api.md): the provider block beside where it
# is, at the llm level: `host`, `port`, `path: {full}`, `authHeader`.
V21_PROVIDER_LOCATION: dict[str, F | Type] = {
    "host": HOST,
    "port": PORT,
    "path": Obj({"full": F(Str(min_length=1, pattern=r"/.*"), required=True)}),
    "authHeader": Obj({"prefix": Str(min_length=1), "headerName": Str(min_length=1)}),
}
# kgateway v2.0 (`LLMProvider`, content/docs/latest/reference/api.md at 7732dd7f): the provider block nested
# under `provider` (`SupportedLLMProvider`), with `hostOverride`, `pathOverride`, `authHeaderOverride` beside it.
V20_PROVIDER_LOCATION: dict[str, F | Type] = {
    "provider": Obj(PROVIDER_BLOCKS, rules=(_exactly_one(PROVIDER_NAMES),)),
    **PROVIDER_OVERRIDES,
}
# Where the provider is may be said once: at the llm level (v2.1 or v2.0 spelling) or inside the provider block
# (the seeds' form); and v2.1's llm-level spellings do not sit beside v2.0's `provider` (no version has both).
_LOCATION_SPELLINGS = (
    ("host", "hostOverride"),
    ("port", "hostOverride"),
    ("path", "pathOverride"),
    ("authHeader", "authHeaderOverride"),
)


def _llm_rule(llm: dict[str, Any]) -> Problems:
    """One provider (a block, or v2.0's `provider`), and each override said in one place only."""
    problems = _exactly_one((*PROVIDER_NAMES, "provider"))(llm)
    if "provider" in llm:
        problems += [
            (v21, f"{v21} is kgateway v2.1's spelling; beside provider (v2.0) use {v20}")
            for v21, v20 in _LOCATION_SPELLINGS
            if v21 in llm
        ]
    holder = llm["provider"] if isinstance(llm.get("provider"), dict) else llm
    inner = [holder[m] for m in PROVIDER_NAMES if isinstance(holder.get(m), dict)]
    for v21, v20 in _LOCATION_SPELLINGS:
        said = [m for m in (v21, v20) if m in llm] + [f"a provider's {v20}" for b in inner if v20 in b]
        if len(said) > 1:
            problems.append((v21 if v21 in llm else v20, f"set only one of {' and '.join(said)}"))
    return problems


LLM_FIELDS: dict[str, F | Type] = {**PROVIDER_BLOCKS, **V21_PROVIDER_LOCATION, **V20_PROVIDER_LOCATION}
LLM = Obj(LLM_FIELDS, rules=(_llm_rule,))
NAMED_PROVIDER = Obj({"name": F(NAME, required=True), **PROVIDER_BLOCKS, **V21_PROVIDER_LOCATION}, rules=(_llm_rule,))
# kgateway v2.0 `multipool` (MultiPoolConfig): `priorities[].pool[]`, each an unnamed LLMProvider.
MULTIPOOL = Obj(
    {
        "priorities": F(
            List(Obj({"pool": List(LLM, min_items=1, max_items=20)}), min_items=1, max_items=20),
            required=True,
        )
    }
)


def _unique_provider_names(groups: list[dict[str, Any]]) -> Problems:
    seen: set[str] = set()
    problems = []
    for i, group in enumerate(groups if isinstance(groups, list) else []):
        providers = group.get("providers") if isinstance(group, dict) else None
        for j, provider in enumerate(providers if isinstance(providers, list) else []):
            name = provider.get("name") if isinstance(provider, dict) else None
            if name in seen:
                problems.append((f"[{i}].providers[{j}].name", f"duplicate provider name {name!r}"))
            elif name is not None:
                seen.add(name)
    return problems


PRIORITY_GROUPS = List(
    Obj({"providers": F(List(NAMED_PROVIDER, min_items=1, max_items=32), required=True)}), min_items=1, max_items=32
)

# --- the kgateway OpenAPI's provider form (`ai.provider` on Backend, `provider` on AIBackend) -----------------

OPENAPI_PROVIDER_MEMBERS = {"openai": "openai", "azure": "azure", "gemini": "gemini", "mistral": "mistral"}
_OPENAPI_MODEL_PROVIDER = Obj({"model": Str(min_length=1), "authToken": AUTH_TOKEN})

def _openapi_provider_rule(provider: dict[str, Any]) -> Problems:
    """With `type`, its block (mistral's may be omitted) and no other; without, exactly one block."""
    if "type" in provider:
        return _block_for_type(OPENAPI_PROVIDER_MEMBERS, optional=("mistral",))(provider)
    return _exactly_one(tuple(OPENAPI_PROVIDER_MEMBERS))(provider)


OPENAPI_PROVIDER = Obj(
    {
        "type": Str(enum=tuple(OPENAPI_PROVIDER_MEMBERS)),
        "openai": _OPENAPI_MODEL_PROVIDER,
        "azure": Obj(
            {
                "endpoint": F(Str(min_length=1), required=True),
                "deploymentName": F(Str(min_length=1), required=True),
                "apiVersion": Str(min_length=1),
                "authToken": AUTH_TOKEN,
            }
        ),
        "gemini": _OPENAPI_MODEL_PROVIDER,
        "mistral": _OPENAPI_MODEL_PROVIDER,
    },
    rules=(_openapi_provider_rule,),
)


def _ai_rules(ai: dict[str, Any]) -> Problems:
    problems = _exactly_one(AI_BACKEND_MEMBERS)(ai)
    if isinstance(ai.get("priorityGroups"), list):
        problems += [(f"priorityGroups{rel}", msg) for rel, msg in _unique_provider_names(ai["priorityGroups"])]
    return problems


# `llm` and `priorityGroups` (seeds, kgateway v2.1), `multipool` (kgateway v2.0), `provider` (kgateway OpenAPI).
AI_BACKEND_FIELDS: dict[str, F | Type] = {
    "llm": LLM,
    "priorityGroups": PRIORITY_GROUPS,
    "multipool": MULTIPOOL,
    "provider": OPENAPI_PROVIDER,
}
AI_BACKEND_MEMBERS = tuple(AI_BACKEND_FIELDS)
AI_BACKEND_BLOCK = Obj(AI_BACKEND_FIELDS, rules=(_ai_rules,))

# --- Backend --------------------------------------------------------------------------------------------------

STATIC_HOST = Obj(
    {
        "host": F(HOST, required=True),
        "port": F(PORT, required=True),
        "tls": Obj({"sni": Str(min_length=1)}),
    }
)


def _mcp_target_rule(target: dict[str, Any]) -> Problems:
    problems = _exactly_one(("service", "static", "selector", "selectors"))(target)
    static = target.get("static")
    if isinstance(static, dict) and not target.get("name") and not static.get("name"):
        problems.append(("static.name", "a static MCP target needs a name (kgateway 2.1 `static.name`, or `name`)"))
    return problems


LABEL_SELECTOR = Obj(
    {
        "matchLabels": Map(Str()),
        "matchExpressions": List(
            Obj(
                {
                    "key": F(Str(min_length=1), required=True),
                    "operator": F(Str(enum=("In", "NotIn", "Exists", "DoesNotExist")), required=True),
                    "values": List(Str()),
                }
            )
        ),
    }
)

# kgateway v2.0/v2.1 `McpTargetSelector` (install/helm/kgateway-crds, 2025-08): `static` (McpTarget, with its
# `name`) or `selectors` {namespaceSelector, serviceSelector}; the docs' `selector` {namespace, service} and the
# seed's target-level `name` and `service` stay accepted.
MCP_TARGET = Obj(
    {
        "name": NAME,
        "service": Obj({"name": F(NAME, required=True), "namespace": Str(), "port": F(PORT, required=True)}),
        "static": Obj(
            {
                "name": NAME,
                "host": F(HOST, required=True),
                "port": F(PORT, required=True),
                "path": Str(pattern=r"/.*"),
                "protocol": Str(enum=("Undefined", "StreamableHTTP", "SSE")),
            }
        ),
        "selector": Obj({"namespace": LABEL_SELECTOR, "service": LABEL_SELECTOR}),
        "selectors": Obj({"namespaceSelector": LABEL_SELECTOR, "serviceSelector": LABEL_SELECTOR}),
    },
    rules=(_mcp_target_rule,),
)

BACKEND_TYPE_MEMBERS = {
    "Static": "static",
    "AI": "ai",
    "AWS": "aws",
    "MCP": "mcp",
    "DynamicForwardProxy": "dynamicForwardProxy",
}


def _parent_rule(spec: dict[str, Any]) -> Problems:
    """Parent mode (DESIGN.md 4.1) dials the upstream proxy at static.hosts[0]."""
    if "parent" not in spec or spec.get("type") is None:
        return []
    if spec["type"] != "Static":
        return [("parent", "parent mode needs type Static, with the parent proxy at static.hosts[0]")]
    if not spec.get("static", {}).get("hosts"):
        return [("static.hosts", "parent mode needs the parent proxy at static.hosts[0]")]
    return []


OUTLIER_DETECTION = Obj(
    {
        "consecutive5xx": Int(minimum=1),
        "interval": Duration(),
        "baseEjectionTime": Duration(),
        "maxEjectionPercent": Int(minimum=0, maximum=100),
        "enforcingConsecutive5xx": Int(minimum=0, maximum=100),
        "enforcingSuccessRate": Int(minimum=0, maximum=100),
        "successRateMinimumHosts": Int(minimum=0),
        "successRateRequestVolume": Int(minimum=0),
        "successRateStdevFactor": Int(minimum=0),
    }
)

BACKEND = Obj(
    {
        "type": F(Str(enum=tuple(BACKEND_TYPE_MEMBERS)), required=True),
        "static": Obj(
            {
                "hosts": F(List(STATIC_HOST, min_items=1), required=True),
                "appProtocol": Str(enum=("http2", "grpc", "grpc-web", "kubernetes.io/h2c", "kubernetes.io/ws")),
            }
        ),
        "ai": AI_BACKEND_BLOCK,
        # kgateway v2.0/v2.1 `AwsBackend`: `lambda`, `accountId`, `auth`, `region` (default us-east-1); the seed's
        # `lambdaFunctionName` and `roleArn` stay.
        "aws": Obj(
            {
                "region": F(Str(min_length=1, pattern=r"[a-z0-9-]+"), default="us-east-1"),
                "lambda": Obj(
                    {
                        "endpointURL": Str(pattern=r"https?://[-a-zA-Z0-9@:%.+~#?&/=]+"),
                        "functionName": Str(pattern=r"[A-Za-z0-9-_]{1,140}"),
                        "invocationMode": F(Str(enum=("Sync", "Async")), default="Sync"),
                        "qualifier": F(Str(pattern=r"\$LATEST|[0-9]+|[A-Za-z0-9-_]{1,128}"), default="$LATEST"),
                        "payloadTransformMode": F(Str(enum=("None", "Envoy")), default="Envoy"),
                    }
                ),
                "auth": AWS_AUTH,
                "lambdaFunctionName": Str(min_length=1),
                "accountId": Str(pattern=r"\d{12}"),
                "roleArn": Str(pattern=r"arn:aws[a-z-]*:iam::\d{12}:role/.+"),
            }
        ),
        "mcp": Obj({"name": NAME, "targets": F(List(MCP_TARGET, min_items=1), required=True)}),
        "dynamicForwardProxy": Obj({"enableTls": Bool()}),
        # Extension (DESIGN.md 4.1): this Backend is an upstream proxy; optional Basic credentials in a Secret
        # with keys `username` and `password`.
        "parent": Obj({"authSecretRef": SECRET_REF}),
        # Extension: agentgateway's `outlierDetection` (its API reference, "Health Checking"), on the Backend whose
        # candidates it ejects (egressproxy/outlier_detection.py).
        "outlierDetection": OUTLIER_DETECTION,
    },
    rules=(_block_for_type(BACKEND_TYPE_MEMBERS, optional=("DynamicForwardProxy",)), _parent_rule),
)

# --- AIBackend (kgateway OpenAPI) -----------------------------------------------------------------------------

# The OpenAPI's `provider` / `groups`; and, since kgateway's `AIBackend` type is the Backend's `ai` block, that
# block's `llm`, `priorityGroups` (v2.1) and `multipool` (v2.0) too.
AI_BACKEND_GROUPS = List(
    Obj(
        {
            "priority": Int(minimum=0),
            "backends": F(
                List(Obj({"backendRef": F(NAMESPACED_REF, required=True), "weight": Int(minimum=0)}), min_items=1),
                required=True,
            ),
        }
    )
)
AI_BACKEND = Obj(
    {**AI_BACKEND_FIELDS, "groups": AI_BACKEND_GROUPS},
    rules=(
        lambda spec: _exactly_one((*AI_BACKEND_MEMBERS, "groups"))(spec)
        + [(f"priorityGroups{rel}", msg) for rel, msg in _unique_provider_names(spec.get("priorityGroups") or [])],
    ),
)

# --- TrafficPolicy --------------------------------------------------------------------------------------------

QUANTITY = OneOf((Str(min_length=1), Int(), Num()))

# Upstream's PolicyDisable is an empty object (`disable: {}`); the seeds wrote a boolean.
DISABLE = OneOf((Bool(), Obj({})))

PROCESSING_MODE = Obj(
    {
        **{f: Str(enum=("DEFAULT", "SEND", "SKIP")) for f in ("requestHeaderMode", "responseHeaderMode",
                                                               "requestTrailerMode", "responseTrailerMode")},
        **{
            f: Str(enum=("NONE", "STREAMED", "BUFFERED", "BUFFERED_PARTIAL", "FULL_DUPLEX_STREAMED"))
            for f in ("requestBodyMode", "responseBodyMode")
        },
    }
)

EXT_AUTH_BUFFER = Obj({"maxRequestBytes": Int(minimum=1), "allowPartialMessage": Bool(), "packAsBytes": Bool()})

EXT_AUTH_POLICY = Obj(
    {
        "extensionRef": NAMESPACED_REF,
        "disable": DISABLE,
        "enablement": Str(enum=("DisableAll",)),  # v2.0's spelling of `disable`
        "withRequestBody": EXT_AUTH_BUFFER,
        "contextExtensions": Map(Str()),
    }
)
EXT_PROC_POLICY = Obj({"extensionRef": NAMESPACED_REF, "disable": DISABLE, "processingMode": PROCESSING_MODE})

RATE_LIMIT_ENTRY = Obj(
    {
        "type": F(Str(enum=("Generic", "Header", "RemoteAddress", "Path")), required=True),
        "generic": Obj({"key": F(Str(min_length=1), required=True), "value": F(Str(min_length=1), required=True)}),
        "header": Str(min_length=1),
    }
)

RATE_LIMIT_POLICY = Obj(
    {
        # The seeds' form: a GatewayExtension reference and the agentgateway reference's descriptor list.
        "extensionRef": NAMESPACED_REF,
        "disable": DISABLE,
        "rateLimits": List(Free()),
        # kgateway's form: a local token bucket, or descriptors sent to a RateLimit GatewayExtension.
        "local": Obj(
            {
                "tokenBucket": F(
                    Obj(
                        {
                            "maxTokens": F(Int(minimum=1), required=True),
                            "tokensPerFill": Int(minimum=1),
                            "fillInterval": F(Duration(), required=True),
                        }
                    ),
                    required=False,  # upstream: optional (an empty `local` turns inherited local limits off)
                )
            }
        ),
        "global": Obj(
            {
                "descriptors": F(
                    List(Obj({"entries": F(List(RATE_LIMIT_ENTRY, min_items=1), required=True)}), min_items=1),
                    required=True,
                ),
                "extensionRef": F(NAMESPACED_REF, required=True),
            }
        ),
    }
)


def _origin_regex_rule(origin: dict[str, Any]) -> Problems:
    if origin.get("type") == "Regex" and isinstance(origin.get("value"), str):
        message = regex_error(origin["value"])
        return [("value", message)] if message else []
    return []


# The seeds' origin object; kgateway (Gateway API's HTTPCORSFilter) writes plain origin strings.
CORS_ORIGIN = Obj(
    {
        "type": F(Str(enum=("Exact", "Prefix", "Regex")), default="Exact"),
        "value": F(Str(min_length=1), required=True),
    },
    rules=(_origin_regex_rule,),
)

CORS_POLICY = Obj(
    {
        # Gateway API's HTTPCORSFilter limits, which kgateway's CorsPolicy embeds
        "allowOrigins": List(OneOf((Str(min_length=1), CORS_ORIGIN)), max_items=64),
        "allowMethods": List(Str(min_length=1), max_items=9),
        "allowHeaders": List(Str(min_length=1), max_items=64),
        "exposeHeaders": List(Str(min_length=1), max_items=64),
        "maxAge": OneOf((Int(minimum=0), Duration())),  # seconds (upstream) or a duration (the seeds)
        "allowCredentials": Bool(),
        "disable": DISABLE,
    }
)

STRING_MATCHER = Obj(
    {
        "exact": Str(),
        "prefix": Str(),
        "suffix": Str(),
        "contains": Str(),
        "safeRegex": REGEX,
        "ignoreCase": Bool(),
    },
    rules=(_exactly_one(("exact", "prefix", "suffix", "contains", "safeRegex")),),
)

CSRF_POLICY = Obj(
    {
        "percentageEnabled": Int(minimum=0, maximum=100),
        "percentageShadowed": Int(minimum=0, maximum=100),
        "additionalOrigins": List(STRING_MATCHER, max_items=16),
    }
)

HEADER_TRANSFORMATION = Obj({"name": F(Str(min_length=1), required=True), "value": Str()})
TRANSFORM = Obj(
    {
        "set": List(HEADER_TRANSFORMATION, max_items=16),
        "add": List(HEADER_TRANSFORMATION, max_items=16),
        "remove": List(Str(min_length=1), max_items=16),
        "body": Obj({"parseAs": Str(enum=("AsString", "AsJson")), "value": Str()}),
    }
)

RETRY_ON = (
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited",
    "retriable-4xx", "refused-stream", "retriable-status-codes", "http3-post-connect-failure", "cancelled",
    "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
)

# The seeds' `retries`; upstream's is `retry` (RETRY below).
RETRIES = Obj(
    {
        "attempts": Int(minimum=0),
        "perTryTimeout": Duration(),
        "backOff": Obj({"baseInterval": Duration(), "maxInterval": Duration()}),
        "retryOn": Str(min_length=1),
    }
)
RETRY = Obj(
    {
        "retryOn": List(Str(enum=RETRY_ON)),
        "attempts": Int(minimum=0),
        "perTryTimeout": Duration(),
        "statusCodes": List(Int(minimum=400, maximum=599), min_items=1),
        "backoffBaseInterval": Duration(),
    }
)

# Prompt guard builtins: the reference spells request and response lists differently; both are accepted.
PROMPT_GUARD_BUILTINS = (
    "CreditCard",
    "Email",
    "PhoneNumber",
    "Ssn",
    "CaSin",
    "CREDIT_CARD",
    "EMAIL",
    "PHONE_NUMBER",
    "SSN",
    "CA_SIN",
)

GUARD_REGEX = Obj(
    {
        "action": F(Str(enum=("REJECT", "MASK")), default="REJECT"),
        "matches": List(Obj({"pattern": F(REGEX, required=True), "name": Str(min_length=1)})),
        "builtins": List(Str(enum=PROMPT_GUARD_BUILTINS)),
    }
)

GUARD_WEBHOOK = Obj(
    {
        "host": F(
            Obj({"host": F(Str(min_length=1), required=True), "port": PORT, "insecureSkipVerify": Bool()}),  # v2.0
            required=True,
        ),
        "forwardHeaderMatches": List(Free()),  # Gateway API HTTPHeaderMatch (v2.1)
        "forwardHeaders": List(Free()),  # the same, v2.0's name
    }
)

PROMPT_GUARD = Obj(
    {
        "request": Obj(
            {
                "customResponse": Obj({"message": Str(), "statusCode": Int(minimum=200, maximum=599)}),
                "regex": GUARD_REGEX,
                "webhook": GUARD_WEBHOOK,
                "moderation": Obj({"openAIModeration": Obj({"authToken": AUTH_TOKEN, "model": Str(min_length=1)})}),
            }
        ),
        "response": Obj({"regex": GUARD_REGEX, "webhook": GUARD_WEBHOOK}),
    }
)

# Upstream's role is a free string (its examples write SYSTEM and USER; the seeds wrote lower case).
MESSAGE = Obj({"role": F(Str(min_length=1), required=True), "content": F(Str(), required=True)})

# `ai.defaults` (upstream) names the JSON field `field`; the seeds' `ai.fieldDefaults` named it `path`.
FIELD_DEFAULT = Obj(
    {
        "field": Str(min_length=1),
        "path": Str(min_length=1),
        "value": F(OneOf((Str(), Int(), Num(), Bool())), required=True),
        "override": F(Bool(), default=False),
    },
    rules=(_exactly_one(("field", "path")),),
)

RBAC_POLICY = Obj({"matchExpressions": F(List(Str(min_length=1), min_items=1), required=True)})

# Gateway API LocalPolicyTargetSelector: attach to every object of a kind with these labels.
TARGET_SELECTORS = List(
    Obj(
        {
            "group": Str(),
            "kind": F(Str(min_length=1), required=True),
            "matchLabels": F(Map(Str()), required=True),
            "sectionName": Str(min_length=1),
        }
    )
)

# Fields kgateway added after v2.1 (its 2.2/2.3 docs, kgateway.dev at 85cd0fc8): accepted whole as written and
# reported Unsupported; their insides are not validated here (the field names are, with "did you mean").
LATER_TRAFFIC_POLICY_FIELDS = (
    "jwtAuth", "apiKeyAuth", "oauth2", "compression", "urlRewrite", "faultInjection", "acl", "tracing", "internalRedirect",
)
LATER_GATEWAY_PARAMETERS_FIELDS = (
    "deploymentOverlay", "serviceOverlay", "serviceAccountOverlay", "horizontalPodAutoscaler", "verticalPodAutoscaler",
    "podDisruptionBudget",
)

TRAFFIC_POLICY = Obj(
    {
        **{name: Free() for name in LATER_TRAFFIC_POLICY_FIELDS},
        # Optional: a TrafficPolicy named by a route filter ExtensionRef has no targetRefs.
        "targetRefs": KGATEWAY_TARGET_REFS,
        "targetSelectors": TARGET_SELECTORS,
        "cors": CORS_POLICY,
        "csrf": CSRF_POLICY,
        "extAuth": EXT_AUTH_POLICY,
        "extProc": EXT_PROC_POLICY,
        "rateLimit": RATE_LIMIT_POLICY,
        "transformation": Obj({"request": TRANSFORM, "response": TRANSFORM}),
        "timeouts": Obj({"request": Duration(), "streamIdle": Duration()}),
        "timeout": Obj({"request": Duration(), "idle": Duration()}),  # the seeds' spelling
        "retry": RETRY,
        "retries": RETRIES,  # the seeds' spelling
        "headerModifiers": Obj({"request": HEADER_MODIFIER, "response": HEADER_MODIFIER}),
        "requestHeaderModifier": HEADER_MODIFIER,  # the seeds' spelling
        "responseHeaderModifier": HEADER_MODIFIER,  # the seeds' spelling
        "autoHostRewrite": Bool(),
        "buffer": Obj({"maxRequestSize": QUANTITY, "disable": DISABLE}),
        # CEL expressions; with action Allow (upstream's default) a request passes when one of them is true.
        "rbac": Obj({"policy": F(RBAC_POLICY, required=True), "action": Str(enum=("Allow", "Deny"))}),
        # Extension (DESIGN.md 4.2 report mode) for the deny-type fields (`rbac`, `ai.promptGuard` REJECT, `ai.models`):
        # Report lets what this policy would deny pass, counted and logged (unset: Enforce).
        "enforcementMode": Str(enum=("Enforce", "Report")),
        # kgateway 2.2: Basic authentication of the request (users inline as htpasswd lines, or a Secret).
        "basicAuth": Obj(
            {
                "users": List(Str(min_length=1), min_items=1, max_items=256),
                "secretRef": Obj({"name": F(NAME, required=True), "namespace": Str(), "key": Str(min_length=1)}),
                "disable": DISABLE,
            }
        ),
        "ai": Obj(
            {
                "promptGuard": PROMPT_GUARD,
                "promptEnrichment": Obj({"prepend": List(MESSAGE), "append": List(MESSAGE)}),
                "defaults": List(FIELD_DEFAULT),
                "fieldDefaults": List(FIELD_DEFAULT),  # the seeds' spelling
                "routeType": Str(enum=("CHAT", "CHAT_STREAMING")),
                # Extension (the proposal's ModelDenyList, docs/guardrails.md): globs on the request's `model`.
                "models": Obj({"allowed": List(Str(min_length=1)), "denied": List(Str(min_length=1))}),
            }
        ),
    }
)

# --- HTTPListenerPolicy ---------------------------------------------------------------------------------------

OTEL_PROTOCOLS = ("grpc", "http/protobuf", "http/json")

# kgateway's CommonGrpcService: where a telemetry sink is, and how to call it.
# Gateway API's BackendRef as kgateway's gRPC services take it (`weight` included, though one service is named).
GRPC_BACKEND_REF = Obj(
    {"group": Str(), "kind": Str(), "name": F(NAME, required=True), "namespace": Str(), "port": PORT,
     "weight": Int(minimum=0, maximum=1000000)}
)
COMMON_GRPC_FIELDS: dict[str, F | Type] = {
    "backendRef": F(GRPC_BACKEND_REF, required=True),
    "authority": Str(),
    "maxReceiveMessageLength": Int(minimum=1),
    "skipEnvoyHeaders": Bool(),
    "timeout": Duration(),
    "initialMetadata": List(Obj({"key": F(Str(min_length=1), required=True), "value": Str()})),
    "retryPolicy": Obj(
        {
            "retryBackOff": Obj({"baseInterval": Duration(), "maxInterval": Duration()}),
            "numRetries": Int(minimum=1),
        }
    ),
}
COMMON_GRPC = Obj(COMMON_GRPC_FIELDS)

COMPARISON = Obj({"op": Str(enum=("EQ", "GE", "LE")), "value": Int(minimum=0)})
FILTER_TYPE_FIELDS: dict[str, F | Type] = {
    "statusCodeFilter": COMPARISON,
    "durationFilter": COMPARISON,
    "notHealthCheckFilter": Bool(),
    "traceableFilter": Bool(),
    "headerFilter": Obj({"header": F(Free(), required=True)}),  # Gateway API HTTPHeaderMatch
    "responseFlagFilter": Obj({"flags": F(List(Str(min_length=1), min_items=1), required=True)}),
    "grpcStatusFilter": Obj({"statuses": List(Str(min_length=1)), "exclude": Bool()}),
    "celFilter": Obj({"match": F(Str(min_length=1), required=True)}),
}
FILTER_TYPE = Obj(FILTER_TYPE_FIELDS)
ACCESS_LOG_FILTER = Obj(
    {**FILTER_TYPE_FIELDS, "andFilter": List(FILTER_TYPE, min_items=2), "orFilter": List(FILTER_TYPE, min_items=2)}
)

ACCESS_LOG_SINKS = ("fileSink", "grpcService", "openTelemetry", "otel")

ACCESS_LOG = Obj(
    {
        "fileSink": Obj(
            {"path": F(Str(min_length=1), required=True), "stringFormat": Str(), "jsonFormat": Free()},
        ),
        "grpcService": Obj(
            {
                **COMMON_GRPC_FIELDS,
                "backendRef": GRPC_BACKEND_REF,  # optional here: the seeds name a static cluster instead
                "logName": F(Str(min_length=1), required=True),
                "staticClusterName": Str(min_length=1),  # the seeds' form
                "additionalRequestHeadersToLog": List(Str(min_length=1)),
                "additionalResponseHeadersToLog": List(Str(min_length=1)),
                "additionalResponseTrailersToLog": List(Str(min_length=1)),
            }
        ),
        "openTelemetry": Obj(
            {
                "grpcService": F(Obj({**COMMON_GRPC_FIELDS, "logName": Str(min_length=1)}), required=True),
                "body": Str(),
                "disableBuiltinLabels": Bool(),
                "attributes": Free(),
                "resourceAttributes": Free(),  # OpenTelemetry KeyValueList, as `attributes`
            }
        ),
        # The seeds' form of an OpenTelemetry sink.
        "otel": Obj(
            {"endpoint": F(Str(min_length=1), required=True), "protocol": F(Str(enum=OTEL_PROTOCOLS), default="grpc")}
        ),
        "filter": ACCESS_LOG_FILTER,
    },
    rules=(_exactly_one(ACCESS_LOG_SINKS),),
)

CUSTOM_TAG = Obj(
    {"literal": Str(), "environment": Str(min_length=1), "requestHeader": Str(min_length=1)},
    rules=(_exactly_one(("literal", "environment", "requestHeader")),),
)

_NAME_DEFAULT = Obj({"name": F(Str(min_length=1), required=True), "defaultValue": Str()})
CUSTOM_ATTRIBUTE = Obj(
    {
        "name": F(Str(min_length=1), required=True),
        "literal": Obj({"value": F(Str(), required=True)}),
        "environment": _NAME_DEFAULT,
        "requestHeader": _NAME_DEFAULT,
        "metadata": Obj(
            {
                "kind": F(Str(enum=("Request", "Route", "Cluster", "Host")), required=True),
                "metadataKey": F(
                    Obj({"key": F(Str(min_length=1), required=True), "path": List(Free())}), required=True
                ),
                "defaultValue": Str(),
            }
        ),
    },
    rules=(_exactly_one(("literal", "environment", "requestHeader", "metadata")),),
)

SEED_OTEL_TRACING = Obj(
    {
        "grpcAddress": Str(min_length=1),
        "httpAddress": Str(min_length=1),
        "protocol": Str(enum=OTEL_PROTOCOLS),
    },
    rules=(_exactly_one(("grpcAddress", "httpAddress")),),
)

OPENTELEMETRY_TRACING = Obj(
    {
        "grpcService": F(COMMON_GRPC, required=True),
        "serviceName": Str(min_length=1),
        "resourceDetectors": List(Obj({"environmentResourceDetector": Obj({})})),
        "sampler": Obj({"alwaysOnConfig": Obj({})}),
    }
)

SAMPLING = Int(minimum=0, maximum=100)

TRACING = Obj(
    {
        "provider": F(
            Obj(
                {"openTelemetry": OPENTELEMETRY_TRACING, "otel": SEED_OTEL_TRACING},
                rules=(_exactly_one(("openTelemetry", "otel")),),
            ),
            required=True,
        ),
        "clientSampling": SAMPLING,
        "randomSampling": SAMPLING,
        "overallSampling": SAMPLING,
        "verbose": Bool(),
        "maxPathTagLength": Int(minimum=1),
        "attributes": List(CUSTOM_ATTRIBUTE),
        "spawnUpstreamSpan": Bool(),
        # The seeds' fields.
        "samplingRate": Num(minimum=0, maximum=100),
        "propagators": List(Str(enum=("W3C_TRACE_CONTEXT", "W3C_BAGGAGE", "B3", "B3_SINGLE_HEADER"))),
        "customTags": Map(CUSTOM_TAG),
    }
)

HTTP_LISTENER_POLICY = Obj(
    {
        "targetRefs": KGATEWAY_TARGET_REFS,
        "targetSelectors": TARGET_SELECTORS,
        "accessLogging": Free(),  # the OpenAPI leaves it open
        "accessLog": List(ACCESS_LOG, max_items=16),
        "tracing": TRACING,
        "upgradeConfig": Obj({"enabledUpgrades": List(Str(min_length=1), min_items=1)}),
        "useRemoteAddress": Bool(),
        "xffNumTrustedHops": Int(minimum=0),
        "serverHeaderTransformation": Str(enum=("Overwrite", "AppendIfAbsent", "PassThrough")),
        "streamIdleTimeout": Duration(),
        "idleTimeout": Duration(),
        "healthCheck": Obj({"path": F(Str(min_length=1, pattern=r"/[-a-zA-Z0-9@:%.+~#?&/=_]+"), required=True)}),
        "preserveHttp1HeaderCase": Bool(),
        "acceptHttp10": Bool(),
        "defaultHostForHttp10": Str(min_length=1),
        "preserveExternalRequestId": Bool(),
        "buffer": Obj({"maxRequestBytes": Int(minimum=0, maximum=2**31 - 1)}),
        "celValidation": Obj(
            {
                "rules": List(
                    Obj(
                        {
                            "expression": F(Str(min_length=1), required=True),
                            "action": F(Str(enum=("Deny", "Allow")), default="Deny"),
                        }
                    )
                )
            }
        ),
        # An htpasswd Secret (key `.htpasswd`, DESIGN.md 4.1).
        "basicAuth": Obj({"credentialsSecretRef": F(NAMESPACED_REF, required=True)}),
        # Extension (DESIGN.md 4.2 report mode) for `celValidation`: Report counts and logs, the request passes.
        "enforcementMode": Str(enum=("Enforce", "Report")),
    }
)

# --- DirectResponse -------------------------------------------------------------------------------------------


def _direct_response_status(spec: dict[str, Any]) -> Problems:
    if "status" in spec and "statusCode" in spec:
        return [("statusCode", "set only one of status and statusCode")]
    if "status" not in spec and "statusCode" not in spec:
        return [("status", "required field is missing (set status or statusCode)")]
    return []


STATUS = Int(minimum=200, maximum=599)

DIRECT_RESPONSE = Obj(
    {"status": STATUS, "statusCode": STATUS, "body": Str()},
    rules=(_direct_response_status,),
)

# --- GatewayExtension -----------------------------------------------------------------------------------------

SERVICE_REF = GRPC_BACKEND_REF
# kgateway's ExtGrpcService: the service, an optional :authority and (2.1) a per-call timeout.
EXT_GRPC_SERVICE = Obj({"backendRef": F(SERVICE_REF, required=True), "authority": Str(), "requestTimeout": Duration()})

GATEWAY_EXTENSION_MEMBERS = {"ExtAuth": "extAuth", "ExtProc": "extProc", "RateLimit": "rateLimit"}

def _ext_auth_service_rule(ext: dict[str, Any]) -> Problems:
    """`extAuth` calls exactly one service: `grpcService` (v2.0+) or `httpService` (2.2+)."""
    block = ext.get("extAuth")
    if not isinstance(block, dict):
        return []
    return [(f"extAuth.{p}" if p else "extAuth", m) for p, m in _exactly_one(("grpcService", "httpService"))(block)]


GATEWAY_EXTENSION = Obj(
    {
        # v2.0 also had `Extended` (no block of its own); 2.2+ infer the type from the block (`jwt`, `oauth2`).
        "type": Str(enum=(*GATEWAY_EXTENSION_MEMBERS, "Extended", "JWT", "OAuth2")),
        "jwt": Free(),  # 2.2+
        "oauth2": Free(),  # 2.2+
        "extAuth": Obj(
            {
                # v2.0/2.1 call the service over gRPC; 2.2+ may call an HTTP one (`httpService`).
                "grpcService": EXT_GRPC_SERVICE,
                "httpService": Free(),
                "headersToForward": List(Str(min_length=1)),
                "failOpen": Bool(),
                "clearRouteCache": Bool(),
                "withRequestBody": EXT_AUTH_BUFFER,
                "statusOnError": Int(minimum=100, maximum=511),
                "statPrefix": Str(min_length=1),
                "timeout": Duration(),  # extension (DESIGN.md 4.2), default 1s
            }
        ),
        "extProc": Obj(
            {
                "grpcService": F(EXT_GRPC_SERVICE, required=True),
                "failOpen": Bool(),
                "processingMode": PROCESSING_MODE,
                "messageTimeout": Duration(),
                "maxMessageTimeout": Duration(),
                "statPrefix": Str(min_length=1),
                "routeCacheAction": Str(enum=("FromResponse", "Clear", "Retain")),
                "requestAttributes": Free(),  # 2.2+
                "metadataOptions": Obj(
                    {
                        "forwarding": Obj(
                            {"typed": List(Str(min_length=1), min_items=1), "untyped": List(Str(min_length=1), min_items=1)}
                        )
                    }
                ),
            }
        ),
        "rateLimit": Obj(
            {
                "grpcService": F(EXT_GRPC_SERVICE, required=True),
                "domain": Str(min_length=1),
                "failOpen": Bool(),
                "timeout": Duration(),
                "xRateLimitHeaders": Str(enum=("Off", "DraftVersion03")),
            }
        ),
    },
    rules=(
        _block_for_type(GATEWAY_EXTENSION_MEMBERS),
        _exactly_one(("extAuth", "extProc", "rateLimit", "jwt", "oauth2")),
        _ext_auth_service_rule,
    ),
)

# --- GatewayParameters (kgateway's KubernetesProxyConfig plus the agentgateway reference's additions) ----------

RESOURCES = Obj(
    {
        "requests": Map(QUANTITY),
        "limits": Map(QUANTITY),
        "claims": List(Free()),
    }
)
TOLERATION = Obj(
    {
        "key": Str(),
        "operator": Str(enum=("Exists", "Equal")),
        "value": Str(),
        "effect": Str(enum=("NoSchedule", "PreferNoSchedule", "NoExecute")),
        "tolerationSeconds": Int(),
    }
)
IMAGE = Obj(
    {
        "registry": Str(),
        "repository": Str(),
        "tag": Str(),
        "digest": Str(),
        "pullPolicy": Str(enum=("Always", "IfNotPresent", "Never")),
    }
)
# Kubernetes core types (SecurityContext, EnvVar, VolumeMount, Probe, ...) are taken whole: the API server
# validates them, and nothing here reads inside them.
K8S = Free()
CONTAINER_FIELDS: dict[str, F | Type] = {
    "image": IMAGE,
    "securityContext": K8S,
    "resources": RESOURCES,
    "env": List(K8S),
    "extraVolumeMounts": List(K8S),
}

AGENTGATEWAY_CONTAINER = Obj(
    {**CONTAINER_FIELDS, "enabled": Bool(), "logLevel": Str(), "customConfigMapName": Str(min_length=1)}
)

GATEWAY_PARAMETERS = Obj(
    {
        "kube": Obj(
            {
                **{name: Free() for name in LATER_GATEWAY_PARAMETERS_FIELDS},
                # `agentGateway` in the kgateway-crds chart (2025-08), `agentgateway` in the docs of the time
                "agentgateway": AGENTGATEWAY_CONTAINER,
                "agentGateway": AGENTGATEWAY_CONTAINER,
                "aiExtension": Obj(
                    {
                        **CONTAINER_FIELDS,
                        "enabled": Bool(),
                        "ports": List(K8S),
                        "stats": Obj({"customLabels": List(K8S)}),
                        "tracing": K8S,
                    }
                ),
                "deployment": Obj(
                    {
                        "replicas": Int(minimum=0),
                        "omitReplicas": Bool(),  # leave replicas to an autoscaler
                        "strategy": K8S,
                        # the seeds' spelling of the proxy container's settings
                        "container": Obj(
                            {
                                "resources": RESOURCES,
                                "securityContext": Obj({"runAsNonRoot": Bool(), "runAsUser": Int(minimum=0)}),
                            }
                        ),
                    },
                    rules=(_at_most_one(("replicas", "omitReplicas")),),
                ),
                "podTemplate": Obj(
                    {
                        "extraLabels": Map(Str()),
                        "extraAnnotations": Map(Str()),
                        "securityContext": K8S,
                        "imagePullSecrets": List(Obj({"name": F(NAME, required=True)})),
                        "nodeSelector": Map(Str()),
                        "affinity": K8S,
                        "tolerations": List(TOLERATION),
                        "gracefulShutdown": Obj({"enabled": Bool(), "sleepTimeSeconds": Int(minimum=0)}),
                        "terminationGracePeriodSeconds": Int(minimum=0),
                        "startupProbe": K8S,
                        "readinessProbe": K8S,
                        "livenessProbe": K8S,
                        "topologySpreadConstraints": List(K8S),
                        "extraVolumes": List(K8S),
                        "spec": Obj({"affinity": Free(), "nodeSelector": Map(Str()), "tolerations": Free()}),
                    }
                ),
                "envoyContainer": Obj(
                    {
                        **CONTAINER_FIELDS,
                        "bootstrap": Obj(
                            {"logLevel": Str(min_length=1), "componentLogLevels": Map(Str()), "logFormat": Free()}
                        ),
                    }
                ),
                "sdsContainer": Obj(
                    {
                        "image": IMAGE,
                        "securityContext": K8S,
                        "resources": RESOURCES,
                        "bootstrap": Obj({"logLevel": Str(min_length=1)}),
                    }
                ),
                "service": Obj(
                    {
                        "type": Str(enum=("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")),
                        "clusterIP": Str(),
                        "extraLabels": Map(Str()),
                        "extraAnnotations": Map(Str()),
                        "ports": List(K8S),
                        "externalTrafficPolicy": Str(),
                        "loadBalancerSourceRanges": List(Str(min_length=1)),  # 2.2+
                    }
                ),
                "serviceAccount": Obj({"extraLabels": Map(Str()), "extraAnnotations": Map(Str())}),
                "istio": Obj({"istioProxyContainer": K8S, "customSidecars": List(K8S)}),
                "stats": Obj(
                    {
                        "enabled": Bool(),
                        "routePrefixRewrite": Str(),
                        "enableStatsRoute": Bool(),
                        "statsRoutePrefixRewrite": Str(),
                        "matcher": K8S,
                    }
                ),
                "floatingUserId": Bool(),
                "omitDefaultSecurityContext": Bool(),
            }
        ),
        "selfManaged": Obj({}),
    }
)

register(KindSchema("Backend", KGATEWAY, BACKEND))
register(KindSchema("AIBackend", KGATEWAY, AI_BACKEND))
register(KindSchema("TrafficPolicy", KGATEWAY, TRAFFIC_POLICY))
register(KindSchema("HTTPListenerPolicy", KGATEWAY, HTTP_LISTENER_POLICY))
register(KindSchema("DirectResponse", KGATEWAY, DIRECT_RESPONSE))
register(KindSchema("GatewayExtension", KGATEWAY, GATEWAY_EXTENSION))
register(KindSchema("GatewayParameters", KGATEWAY, GATEWAY_PARAMETERS))
