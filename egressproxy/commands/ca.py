"""`egressproxy ca init` and `egressproxy ca show`."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from egressproxy.ca import minted_gateway_cas, write_ca

__all__ = ["ca_init", "ca_show"]


def ca_init(out_dir: str, name: str, *, force: bool, out: TextIO, namespace: str = "default") -> int:
    existing = [p for p in (Path(out_dir) / "ca.crt", Path(out_dir) / "ca.key") if p.exists()]
    if existing and not force:
        out.write(f"error: {existing[0]} exists; a CA is not replaced silently (use --force)\n")
        return 1
    files = write_ca(out_dir, name, namespace)
    out.write(f"wrote {files.cert}\nwrote {files.key} (mode 0600)\nwrote {files.secret} (mode 0600, Secret {namespace}/{name})\n")
    return 0


def ca_show(data_dir: str, gateway: str | None, *, out: TextIO, err: TextIO) -> int:
    """Print the PEM certificate of the CA minted for a gateway (a Terminate listener without caCertRef).

    `gateway` is `NAME` or `NAMESPACE/NAME`; it may be left out when exactly one gateway has a minted CA.
    """
    found = minted_gateway_cas(data_dir)
    root = Path(data_dir) / "ca"
    if gateway is not None:
        namespace, _, name = gateway.rpartition("/")
        found = {k: v for k, v in found.items() if k[1] == name and (not namespace or k[0] == namespace)}
        looked = root / (namespace or "*") / name / "ca.crt"
    else:
        looked = root / "*" / "*" / "ca.crt"
    if not found:
        err.write(
            f"error: no CA minted yet: {looked} does not exist (`egressproxy run --data-dir {data_dir}` mints one "
            "for a gateway with a Terminate listener without caCertRef)\n"
        )
        return 1
    if len(found) > 1:
        names = ", ".join(f"{ns}/{n}" for ns, n in sorted(found))
        err.write(f"error: CAs of several gateways under {root}: {names}; choose one with --gateway NAME\n")
        return 1
    (cert,) = found.values()
    out.write(cert.read_text("ascii"))
    return 0
