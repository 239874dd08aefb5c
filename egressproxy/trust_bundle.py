"""The bundle a workload trusts behind the gateway: the system CAs plus the gateway's interception CA.

Trusting only the gateway CA breaks every passthrough host (their certificates are the origins' own), and
several clients replace rather than extend their roots when given a file (Python requests, curl, pip, npm's
`cafile`); so the bundle always holds both. `client_env` names the variable each client family reads.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from egressproxy.system_trust import SystemStore, find_system_store

__all__ = ["system_bundle", "build_bundle", "write_bundle", "client_env", "BundleError"]

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.S)


class BundleError(Exception):
    pass


def system_bundle(store: SystemStore | None = None) -> tuple[bytes, str]:
    """Every system CA once, as PEM, and where they came from (the bundle file, else the directory)."""
    store = store or find_system_store()
    return b"\n".join(dict.fromkeys(_PEM.findall(store.pem()))) + b"\n", store.describe()


def build_bundle(system_pem: bytes, gateway_ca_pem: bytes | None, ca_label: str) -> bytes:
    if gateway_ca_pem is None:
        return system_pem
    certs = _PEM.findall(gateway_ca_pem)
    if not certs:
        raise BundleError(f"{ca_label} holds no PEM certificate")
    return system_pem + f"# egressproxy gateway CA ({ca_label})\n".encode() + b"\n".join(certs) + b"\n"


def write_bundle(path: Path, data: bytes) -> None:
    """Whole or not at all, mode 0644: the workload reads it as another uid, and it holds only public certs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# (variable, clients) in print order; every one of them is given the same bundle file.
CLIENT_VARIABLES = (
    ("SSL_CERT_FILE", "OpenSSL, Go, Python ssl/httpx/OpenAI and Anthropic SDKs, Ruby"),
    ("REQUESTS_CA_BUNDLE", "Python requests (ignores SSL_CERT_FILE)"),
    ("CURL_CA_BUNDLE", "curl"),
    ("NODE_EXTRA_CA_CERTS", "Node.js (added to its built-in roots)"),
    ("NPM_CONFIG_CAFILE", "npm (replaces npm's roots: the bundle holds the system CAs too)"),
    ("PIP_CERT", "pip"),
)


def client_env(bundle: Path, proxy: str | None = None) -> list[str]:
    """`export` lines for a POSIX shell: `eval "$(egressproxy trust ...)"` applies them."""
    path = shlex.quote(str(bundle))
    lines = [f"export {var}={path}  # {who}" for var, who in CLIENT_VARIABLES]
    if proxy:
        url = shlex.quote(proxy)
        lines += [
            f"export HTTPS_PROXY={url} HTTP_PROXY={url} https_proxy={url} http_proxy={url}",
            "export NODE_USE_ENV_PROXY=1  # Node >= 24: fetch and https honour HTTPS_PROXY (older: undici's "
            "EnvHttpProxyAgent)",
        ]
    return lines
