"""gateway.kgateway.dev/v1alpha1: Backend, AIBackend, TrafficPolicy, HTTPListenerPolicy, DirectResponse,
GatewayExtension and GatewayParameters.

Two seeds describe this group: the kgateway OpenAPI (`kgateway-openapi.txt`) and the agentgateway API reference
(`agentgateway-api-reference.md`). Where they differ both spellings are accepted (DirectResponse `status` and
`statusCode`; an AI Backend's `llm`, `priorityGroups` or OpenAPI `provider`). egressproxy extensions, marked
below, follow DESIGN.md 4.1: `Backend.spec.parent` (parent mode), and `hostOverride` / `pathOverride` /
`authHeaderOverride` inside each LLM provider block.
"""

from __future__ import annotations

from typing import Any

from egressproxy.config.kinds import KindSchema, register
from egressproxy.config.kinds.common import HEADER_MODIFIER, NAME, POLICY_TARGET_REFS, SECRET_REF
from egressproxy.config.kinds.gatewayapi import regex_error
from egressproxy.config.schema import F, Bool, Derive, Duration, Free, Int, List, Map, Num, Obj, OneOf, Str, Type
from egressproxy.hostnames import InvalidHostname, canonical_host

KGATEWAY = ("gateway.kgateway.dev/v1alpha1",)

Problems = list[tuple[str, str]]

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


def _provider(fields: dict[str, F | Type]) -> Obj:
    return Obj({**fields, **PROVIDER_OVERRIDES})


OPENAI = _provider({"authToken": AUTH_TOKEN, "model": Str(min_length=1)})
ANTHROPIC = _provider({"authToken": AUTH_TOKEN, "model": Str(min_length=1), "apiVersion": Str(min_length=1)})
GEMINI = _provider({"authToken": AUTH_TOKEN, "model": Str(min_length=1), "apiVersion": Str(min_length=1)})
BEDROCK = _provider(
    {
        "model": F(Str(min_length=1), required=True),
        "region": F(Str(min_length=1, pattern=r"[a-z]{2}(-gov)?-[a-z]+-\d+"), required=True),
        # Omitted: the ambient AWS credentials (IRSA).
        "auth": Obj(
            {"type": F(Str(enum=("Secret",)), default="Secret"), "secretRef": F(NAMESPACED_REF, required=True)}
        ),
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
        "project": F(Str(min_length=1), required=True),
        "location": F(Str(min_length=1), required=True),
        "model": Str(min_length=1),
        "publisher": Str(min_length=1),
        "apiVersion": Str(min_length=1),
    }
)

PROVIDER_BLOCKS: dict[str, F | Type] = {
    "openai": OPENAI,
    "anthropic": ANTHROPIC,
    "gemini": GEMINI,
    "bedrock": BEDROCK,
    "azureOpenai": AZURE_OPENAI,
    "vertexAi": VERTEX_AI,
}
PROVIDER_NAMES = tuple(PROVIDER_BLOCKS)

LLM = Obj(PROVIDER_BLOCKS, rules=(_exactly_one(PROVIDER_NAMES),))
NAMED_PROVIDER = Obj({"name": F(NAME, required=True), **PROVIDER_BLOCKS}, rules=(_exactly_one(PROVIDER_NAMES),))


def _unique_provider_names(groups: list[dict[str, Any]]) -> Problems:
    seen: set[str] = set()
    problems = []
    for i, group in enumerate(groups):
        for j, provider in enumerate(group.get("providers", [])):
            name = provider.get("name")
            if name in seen:
                problems.append((f"[{i}].providers[{j}].name", f"duplicate provider name {name!r}"))
            elif name is not None:
                seen.add(name)
    return problems


PRIORITY_GROUPS = List(Obj({"providers": F(List(NAMED_PROVIDER, min_items=1), required=True)}), min_items=1)

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
    problems = _exactly_one(("llm", "priorityGroups", "provider"))(ai)
    if isinstance(ai.get("priorityGroups"), list):
        problems += [(f"priorityGroups{rel}", msg) for rel, msg in _unique_provider_names(ai["priorityGroups"])]
    return problems


AI_BACKEND_BLOCK = Obj(
    {"llm": LLM, "priorityGroups": PRIORITY_GROUPS, "provider": OPENAPI_PROVIDER},
    rules=(_ai_rules,),
)

# --- Backend --------------------------------------------------------------------------------------------------

STATIC_HOST = Obj(
    {
        "host": F(HOST, required=True),
        "port": F(PORT, required=True),
        "tls": Obj({"sni": Str(min_length=1)}),
    }
)


def _mcp_target_rule(target: dict[str, Any]) -> Problems:
    return _exactly_one(("service", "static"))(target)


MCP_TARGET = Obj(
    {
        "name": F(NAME, required=True),
        "service": Obj({"name": F(NAME, required=True), "namespace": Str(), "port": F(PORT, required=True)}),
        "static": Obj({"host": F(HOST, required=True), "port": F(PORT, required=True), "path": Str(pattern=r"/.*")}),
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


BACKEND = Obj(
    {
        "type": F(Str(enum=tuple(BACKEND_TYPE_MEMBERS)), required=True),
        "static": Obj({"hosts": F(List(STATIC_HOST, min_items=1), required=True)}),
        "ai": AI_BACKEND_BLOCK,
        "aws": Obj(
            {
                "region": F(Str(min_length=1), required=True),
                "lambdaFunctionName": Str(min_length=1),
                "accountId": Str(pattern=r"\d{12}"),
                "roleArn": Str(pattern=r"arn:aws[a-z-]*:iam::\d{12}:role/.+"),
            }
        ),
        "mcp": Obj({"targets": F(List(MCP_TARGET, min_items=1), required=True)}),
        "dynamicForwardProxy": Obj({"enableTls": Bool()}),
        # Extension (DESIGN.md 4.1): this Backend is an upstream proxy; optional Basic credentials in a Secret
        # with keys `username` and `password`.
        "parent": Obj({"authSecretRef": SECRET_REF}),
    },
    rules=(_block_for_type(BACKEND_TYPE_MEMBERS, optional=("DynamicForwardProxy",)), _parent_rule),
)

# --- AIBackend (kgateway OpenAPI) -----------------------------------------------------------------------------

AI_BACKEND = Obj(
    {
        "provider": OPENAPI_PROVIDER,
        "groups": List(
            Obj(
                {
                    "priority": Int(minimum=0),
                    "backends": F(
                        List(
                            Obj({"backendRef": F(NAMESPACED_REF, required=True), "weight": Int(minimum=0)}),
                            min_items=1,
                        ),
                        required=True,
                    ),
                }
            )
        ),
    },
    rules=(_exactly_one(("provider", "groups")),),
)

# --- TrafficPolicy --------------------------------------------------------------------------------------------

EXTENSION_TOGGLE = Obj({"extensionRef": NAMESPACED_REF, "disable": Bool()})

def _origin_regex_rule(origin: dict[str, Any]) -> Problems:
    if origin.get("type") == "Regex" and isinstance(origin.get("value"), str):
        message = regex_error(origin["value"])
        return [("value", message)] if message else []
    return []


CORS_ORIGIN = Obj(
    {
        "type": F(Str(enum=("Exact", "Prefix", "Regex")), default="Exact"),
        "value": F(Str(min_length=1), required=True),
    },
    rules=(_origin_regex_rule,),
)

CORS_POLICY = Obj(
    {
        "allowOrigins": List(CORS_ORIGIN),
        "allowMethods": List(Str(min_length=1)),
        "allowHeaders": List(Str(min_length=1)),
        "exposeHeaders": List(Str(min_length=1)),
        "maxAge": Duration(),
        "allowCredentials": Bool(),
    }
)

RETRIES = Obj(
    {
        "attempts": Int(minimum=0),
        "perTryTimeout": Duration(),
        "backOff": Obj({"baseInterval": Duration(), "maxInterval": Duration()}),
        "retryOn": Str(min_length=1),
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

PROMPT_GUARD = Obj(
    {
        "request": Obj(
            {
                "customResponse": Obj({"message": Str(), "statusCode": Int(minimum=200, maximum=599)}),
                "regex": GUARD_REGEX,
            }
        ),
        "response": Obj({"regex": GUARD_REGEX}),
    }
)

MESSAGE = Obj(
    {"role": F(Str(enum=("system", "user", "assistant")), required=True), "content": F(Str(), required=True)}
)

FIELD_DEFAULT = Obj(
    {
        "path": F(Str(min_length=1), required=True),
        "value": F(OneOf((Str(), Int(), Num(), Bool())), required=True),
        "override": F(Bool(), default=False),
    }
)

RBAC_POLICY = Obj({"matchExpressions": F(List(Str(min_length=1), min_items=1), required=True)})

TRAFFIC_POLICY = Obj(
    {
        "targetRefs": F(POLICY_TARGET_REFS, required=True),
        "cors": CORS_POLICY,
        "extAuth": EXTENSION_TOGGLE,
        "extProc": EXTENSION_TOGGLE,
        # `rateLimits` is the agentgateway reference's descriptor list, kept as written.
        "rateLimit": Obj({"extensionRef": NAMESPACED_REF, "disable": Bool(), "rateLimits": List(Free())}),
        "timeout": Obj({"request": Duration(), "idle": Duration()}),
        "retries": RETRIES,
        "requestHeaderModifier": HEADER_MODIFIER,
        "responseHeaderModifier": HEADER_MODIFIER,
        # CEL expressions; a request passes when one of them is true.
        "rbac": Obj({"policy": F(RBAC_POLICY, required=True)}),
        "ai": Obj(
            {
                "promptGuard": PROMPT_GUARD,
                "promptEnrichment": Obj({"prepend": List(MESSAGE), "append": List(MESSAGE)}),
                "fieldDefaults": List(FIELD_DEFAULT),
            }
        ),
    }
)

# --- HTTPListenerPolicy ---------------------------------------------------------------------------------------

OTEL_PROTOCOLS = ("grpc", "http/protobuf", "http/json")

ACCESS_LOG = Obj(
    {
        "fileSink": Obj({"path": F(Str(min_length=1), required=True), "jsonFormat": Free()}),
        "grpcService": Obj({"logName": F(Str(min_length=1), required=True), "staticClusterName": Str(min_length=1)}),
        "otel": Obj(
            {"endpoint": F(Str(min_length=1), required=True), "protocol": F(Str(enum=OTEL_PROTOCOLS), default="grpc")}
        ),
    },
    rules=(_exactly_one(("fileSink", "grpcService", "otel")),),
)

CUSTOM_TAG = Obj(
    {"literal": Str(), "environment": Str(min_length=1), "requestHeader": Str(min_length=1)},
    rules=(_exactly_one(("literal", "environment", "requestHeader")),),
)

TRACING = Obj(
    {
        "provider": F(
            Obj(
                {
                    "otel": F(
                        Obj(
                            {
                                "grpcAddress": Str(min_length=1),
                                "httpAddress": Str(min_length=1),
                                "protocol": Str(enum=OTEL_PROTOCOLS),
                            },
                            rules=(_exactly_one(("grpcAddress", "httpAddress")),),
                        ),
                        required=True,
                    )
                }
            ),
            required=True,
        ),
        "samplingRate": Num(minimum=0, maximum=100),
        "propagators": List(Str(enum=("W3C_TRACE_CONTEXT", "W3C_BAGGAGE", "B3", "B3_SINGLE_HEADER"))),
        "customTags": Map(CUSTOM_TAG),
    }
)

HTTP_LISTENER_POLICY = Obj(
    {
        "targetRefs": F(POLICY_TARGET_REFS, required=True),
        "accessLogging": Free(),  # the OpenAPI leaves it open
        "accessLog": List(ACCESS_LOG),
        "tracing": TRACING,
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

SERVICE_REF = Obj({"name": F(NAME, required=True), "namespace": Str(), "port": PORT})
GRPC_SERVICE = Obj({"grpcService": F(Obj({"backendRef": F(SERVICE_REF, required=True)}), required=True)})

GATEWAY_EXTENSION_MEMBERS = {"ExtAuth": "extAuth", "ExtProc": "extProc", "RateLimit": "rateLimit"}

GATEWAY_EXTENSION = Obj(
    {
        "type": F(Str(enum=tuple(GATEWAY_EXTENSION_MEMBERS)), required=True),
        "extAuth": GRPC_SERVICE,
        "extProc": GRPC_SERVICE,
        "rateLimit": GRPC_SERVICE,
    },
    rules=(_block_for_type(GATEWAY_EXTENSION_MEMBERS),),
)

# --- GatewayParameters (OpenAPI `kube` plus the agentgateway reference's additions) --------------------------

QUANTITY = OneOf((Str(min_length=1), Int(), Num()))
RESOURCES = Obj(
    {
        "requests": Obj({"cpu": QUANTITY, "memory": QUANTITY}),
        "limits": Obj({"cpu": QUANTITY, "memory": QUANTITY}),
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

GATEWAY_PARAMETERS = Obj(
    {
        "kube": Obj(
            {
                "agentgateway": Obj({"customConfigMapName": Str(min_length=1)}),
                "deployment": Obj(
                    {
                        "replicas": Int(minimum=0),
                        "container": Obj(
                            {
                                "resources": RESOURCES,
                                "securityContext": Obj({"runAsNonRoot": Bool(), "runAsUser": Int(minimum=0)}),
                            }
                        ),
                    }
                ),
                "podTemplate": Obj(
                    {
                        "extraLabels": Map(Str()),
                        "extraAnnotations": Map(Str()),
                        "nodeSelector": Map(Str()),
                        "tolerations": List(TOLERATION),
                        "spec": Obj({"affinity": Free(), "nodeSelector": Map(Str()), "tolerations": Free()}),
                    }
                ),
                "envoyContainer": Obj(
                    {
                        "resources": RESOURCES,
                        "image": Obj({"registry": Str(), "repository": Str(), "tag": Str()}),
                    }
                ),
                "service": Obj(
                    {"type": Str(enum=("ClusterIP", "NodePort", "LoadBalancer")), "extraAnnotations": Map(Str())}
                ),
            }
        )
    }
)

register(KindSchema("Backend", KGATEWAY, BACKEND))
register(KindSchema("AIBackend", KGATEWAY, AI_BACKEND))
register(KindSchema("TrafficPolicy", KGATEWAY, TRAFFIC_POLICY))
register(KindSchema("HTTPListenerPolicy", KGATEWAY, HTTP_LISTENER_POLICY))
register(KindSchema("DirectResponse", KGATEWAY, DIRECT_RESPONSE))
register(KindSchema("GatewayExtension", KGATEWAY, GATEWAY_EXTENSION))
register(KindSchema("GatewayParameters", KGATEWAY, GATEWAY_PARAMETERS))
