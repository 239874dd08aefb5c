"""`egressproxy ca init`."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from egressproxy.ca import write_ca


def ca_init(out_dir: str, name: str, *, force: bool, out: TextIO, namespace: str = "default") -> int:
    existing = [p for p in (Path(out_dir) / "ca.crt", Path(out_dir) / "ca.key") if p.exists()]
    if existing and not force:
        out.write(f"error: {existing[0]} exists; a CA is not replaced silently (use --force)\n")
        return 1
    files = write_ca(out_dir, name, namespace)
    out.write(f"wrote {files.cert}\nwrote {files.key} (mode 0600)\nwrote {files.secret} (mode 0600, Secret {namespace}/{name})\n")
    return 0
