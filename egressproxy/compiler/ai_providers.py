"""AI providers of a Backend's `ai` block (or an AIBackend's spec): one provider, or priority groups of them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.hostname_forms import canonical_or_raw
from egressproxy.compiler.secret_refs import require_keys, resolve_secret
from egressproxy.config.problems import ObjectRef
from egressproxy.config.resource import Resource
from egressproxy.snapshot import AIProvider, freeze

PROVIDER_KINDS = (
    "openai",
    "anthropic",
    "gemini",
    "bedrock",
    "azureOpenai",
    "vertexAi",
    "azureopenai",
    "vertexai",
    "azure",
    "mistral",
)
# kgateway's lower-case spellings and the OpenAPI's `azure` compile to the seeds' kinds.
_PROVIDER_KIND_ALIASES = {"azure": "azureOpenai", "azureopenai": "azureOpenai", "vertexai": "vertexAi"}
AUTH_TOKEN_KEY = "Authorization"  # DESIGN.md 4.1; a Secret with exactly one key is read whatever its name


def compile_ai(comp: Compilation, res: Resource, ai: Mapping[str, Any], path: str) -> tuple[tuple[AIProvider, ...], ...]:
    """The provider groups in priority order, whichever spelling the block uses: `llm` (seeds, kgateway v2.0 and
    v2.1), `provider` (kgateway OpenAPI), `priorityGroups` (seeds, v2.1) or `multipool.priorities` (v2.0)."""
    if "llm" in ai:
        return ((_compile_provider(comp, res, ai["llm"], f"{path}.llm", None),),)
    if "provider" in ai:
        return ((_compile_provider(comp, res, ai["provider"], f"{path}.provider", None),),)
    groups = []
    if "multipool" in ai:
        for i, priority in enumerate(ai["multipool"].get("priorities", [])):
            where = f"{path}.multipool.priorities[{i}].pool"
            groups.append(
                tuple(_compile_provider(comp, res, e, f"{where}[{j}]", None) for j, e in enumerate(priority.get("pool", [])))
            )
        return tuple(groups)
    for i, group in enumerate(ai.get("priorityGroups", [])):
        providers = []
        for j, entry in enumerate(group.get("providers", [])):
            providers.append(_compile_provider(comp, res, entry, f"{path}.priorityGroups[{i}].providers[{j}]", entry.get("name")))
        groups.append(tuple(providers))
    return tuple(groups)


def _compile_provider(comp: Compilation, res: Resource, block: Mapping[str, Any], path: str, name: str | None) -> AIProvider:
    # kgateway v2.0 nests the provider block under `provider`; where it is sits beside (`hostOverride`, ...).
    holder: Mapping[str, Any] = block["provider"] if isinstance(block.get("provider"), Mapping) else block
    if holder is not block:
        path = f"{path}.provider"
    kind = next((k for k in PROVIDER_KINDS if k in holder), block.get("type") or "unknown")
    cfg: Mapping[str, Any] = holder.get(kind, {}) if isinstance(holder.get(kind), Mapping) else {}
    cpath = f"{path}.{kind}"
    host, port, scheme = _provider_location(block, cfg)
    auth_kind, auth_ref, inline = _compile_provider_auth(comp, res, cfg, cpath)
    full_path = block.get("path", {}).get("full") or (block.get("pathOverride") or cfg.get("pathOverride") or {}).get("fullPath")
    return AIProvider(
        name=name or _PROVIDER_KIND_ALIASES.get(kind, kind),
        kind=_PROVIDER_KIND_ALIASES.get(kind, kind),
        model=cfg.get("model") or cfg.get("deploymentName"),
        host=canonical_or_raw(host) if host is not None else None,
        port=port,
        scheme=scheme,
        path=full_path,
        auth_kind=auth_kind,
        auth_secret=auth_ref,
        auth_inline=inline,
        api_version=cfg.get("apiVersion"),
        region=cfg.get("region") or cfg.get("location"),
        config=freeze(cfg),
    )


def _provider_location(block: Mapping[str, Any], cfg: Mapping[str, Any]) -> tuple[str | None, int | None, str | None]:
    """(host, port, scheme) the provider is dialled at, or Nones for its well-known endpoint: kgateway v2.1's
    llm-level `host`/`port`, v2.0's llm-level `hostOverride`, or the seeds' `hostOverride` in the provider block
    (the schema lets only one of them be set)."""
    if "host" in block or "port" in block:
        return block.get("host"), block.get("port"), None
    override = block.get("hostOverride") or cfg.get("hostOverride") or {}
    if not override:
        return None, None, None
    return override.get("host"), override.get("port"), override.get("scheme")


def _compile_provider_auth(
    comp: Compilation, res: Resource, cfg: Mapping[str, Any], path: str
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
        comp.secret_values.add(inline)
    ref = token.get("secretRef")
    if ref is None:
        return kind, None, inline
    secret = resolve_secret(comp, res, f"{path}.secretRef", ref)
    if secret is not None and kind == "SecretRef" and AUTH_TOKEN_KEY not in secret and len(secret) != 1:
        require_keys(comp, res, f"{path}.secretRef", ref, secret, (AUTH_TOKEN_KEY,))
    return kind, ObjectRef("Secret", ref.get("namespace") or res.namespace, ref["name"]), inline
