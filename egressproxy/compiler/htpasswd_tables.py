"""`HTTPListenerPolicy.basicAuth` htpasswd Secrets, parsed into `BasicAuth` tables at compile time.

Each line is `user:hash`; blank lines and `#` comments are skipped. A hash of a scheme the gateway does not
verify (see `compiled_policies.HTPASSWD_SCHEMES`) is a problem naming the Secret and the line, never silently
a clear-text password (passlib's own htpasswd reader would take it as one); so is a malformed hash of a known
scheme, which would otherwise fail every login with an error instead of a 407. Problems never show a hash.
"""

from __future__ import annotations

from types import MappingProxyType

from egressproxy.compiled_policies import HTPASSWD_CONTEXT, BasicAuth
from egressproxy.compiler.compilation import Compilation
from egressproxy.config.problems import ObjectRef
from egressproxy.config.resource import Resource
from egressproxy.snapshot import MOUNTED_NAMESPACE

__all__ = ["HTPASSWD_KEY", "compile_basic_auth", "parse_htpasswd"]

HTPASSWD_KEY = ".htpasswd"
SCHEMES_TEXT = "bcrypt, {SHA}, $apr1$, $5$ or $6$"
_SCHEME_NAMES = {
    "bcrypt": "bcrypt",
    "ldap_sha1": "{SHA}",
    "apr_md5_crypt": "$apr1$",
    "sha256_crypt": "$5$",
    "sha512_crypt": "$6$",
}


def compile_basic_auth(comp: Compilation) -> dict[ObjectRef, BasicAuth]:
    """Every HTTPListenerPolicy with a basicAuth whose Secret is there, parsed."""
    out: dict[ObjectRef, BasicAuth] = {}
    for res in comp.of_kind("HTTPListenerPolicy"):
        auth = _compile(comp, res)
        if auth is not None:
            out[res.ref] = auth
    return out


def parse_htpasswd(text: str) -> tuple[dict[str, str], list[str]]:
    """(user -> hash, problems): each problem names a 1-based line, and a user where there is one."""
    entries: dict[str, str] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, stored = line.partition(":")
        if not sep or not user or not stored:
            problems.append(f"line {number} is not user:hash")
            continue
        scheme = HTPASSWD_CONTEXT.identify(stored, required=False)
        if scheme is None:
            problems.append(f'line {number}: the hash of user "{user}" is of an unknown scheme (use {SCHEMES_TEXT})')
            continue
        try:
            HTPASSWD_CONTEXT.handler(scheme).from_string(stored)
        except ValueError:
            problems.append(f'line {number}: the hash of user "{user}" is no valid {_SCHEME_NAMES[scheme]} hash')
            continue
        entries.setdefault(user, stored)  # Apache uses the first line of a user
    return entries, problems


def _compile(comp: Compilation, res: Resource) -> BasicAuth | None:
    ref = (res.spec.get("basicAuth") or {}).get("credentialsSecretRef")
    if not ref or "name" not in ref or (ref.get("kind") or "Secret") != "Secret":
        return None
    ns = ref.get("namespace") or res.namespace
    secret = comp.secrets.get(ObjectRef("Secret", MOUNTED_NAMESPACE, ref["name"]))
    if secret is None:
        secret = comp.secrets.get(ObjectRef("Secret", ns, ref["name"]))
    if secret is None or HTPASSWD_KEY not in secret:
        return None  # reported by the reference pass
    entries, problems = parse_htpasswd(secret[HTPASSWD_KEY].decode("utf-8", "replace"))
    path = "spec.basicAuth.credentialsSecretRef.name"
    for problem in problems:
        message = f'Secret "{ns}/{ref["name"]}" key {HTPASSWD_KEY!r} {problem}'
        comp.problem(res, path, message)
        comp.status.set(res.ref, "ResolvedRefs", False, "InvalidSecret", f"{path}: {message}")
    return BasicAuth(f"HTTPListenerPolicy/{res.namespace}/{res.name}", MappingProxyType(entries))
