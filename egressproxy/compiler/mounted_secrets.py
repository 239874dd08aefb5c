"""A mounted secrets folder, `DIR/<name>/<key>` (one file per key), read into Secrets by name.

Reading it blocks, so the runtime calls `read_secrets_dir` off the event loop and passes the result to
`compile_config(mounted=...)`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from egressproxy.config.problems import Problem
from egressproxy.snapshot import MOUNTED_NAMESPACE, SecretData


@dataclass(frozen=True)
class MountedSecrets:
    """The Secrets of a mounted secrets folder, by name (namespace-agnostic)."""

    secrets: Mapping[str, SecretData] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()


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
