"""RateLimitPolicy compiled once per snapshot: limits, window, scope, modes, and the Redis store with its password
read from the Secret `store.redis.passwordSecretRef` names (key `password`, and `username` when present, for a
Redis ACL user). A missing Secret or key is a validation problem naming the field."""

from __future__ import annotations

from egressproxy.compiler.compilation import Compilation
from egressproxy.compiler.secret_refs import require_keys, resolve_secret
from egressproxy.config.problems import ObjectRef
from egressproxy.config.resource import Resource
from egressproxy.rate_limits import RateLimitFields, RedisStoreConfig

__all__ = ["compile_rate_limits", "PASSWORD_KEY", "USERNAME_KEY"]

PASSWORD_KEY = "password"
USERNAME_KEY = "username"


def compile_rate_limits(comp: Compilation) -> dict[ObjectRef, RateLimitFields]:
    """Each policy as written; the merge into a request's budget is egressproxy/rate_limit_precedence.py's."""
    out: dict[ObjectRef, RateLimitFields] = {}
    for res in comp.of_kind("RateLimitPolicy"):
        if "window" not in res.spec:
            continue  # a schema problem already
        out[res.ref] = RateLimitFields.from_spec(res.ref, res.spec, _redis(comp, res))
    return out


def _redis(comp: Compilation, res: Resource) -> RedisStoreConfig | None:
    store = res.spec.get("store") or {}
    if store.get("type") != "Redis" or "redis" not in store:
        return None
    redis = store["redis"]
    host, _, port = redis["address"].rpartition(":")
    ref = redis.get("passwordSecretRef")
    if not ref:
        return RedisStoreConfig(host.strip("[]"), int(port))
    path = "spec.store.redis.passwordSecretRef"
    secret = resolve_secret(comp, res, path, ref)
    if secret is None or not require_keys(comp, res, path, ref, secret, (PASSWORD_KEY,)):
        return RedisStoreConfig(host.strip("[]"), int(port))
    secret_ref = ObjectRef("Secret", ref.get("namespace") or res.namespace, ref["name"])
    return RedisStoreConfig(
        host.strip("[]"), int(port), secret_ref, secret.text(PASSWORD_KEY), secret.text(USERNAME_KEY)
    )
