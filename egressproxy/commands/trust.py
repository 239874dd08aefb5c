"""`egressproxy trust`: write the CA bundle workloads trust (system CAs + the gateway CA), print the variables.

The gateway CA is `--ca FILE` (a caCertRef Secret's `tls.crt`), else the CA minted under `--data-dir`
(`--gateway NAME` when several gateways minted one). `--mint` mints it there first when it does not exist yet:
the sidecar's init container does that before the gateway starts, and the gateway then reuses it. Without
either, the bundle is the system CAs only (a gateway that intercepts nothing).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from egressproxy.ca import GatewayCAError, load_or_mint_gateway_ca, minted_gateway_cas
from egressproxy.trust_bundle import BundleError, build_bundle, client_env, system_bundle, write_bundle

__all__ = ["trust"]


class TrustError(Exception):
    pass


def trust(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        ca_pem, ca_label = _gateway_ca(args)
        system_pem, system_label = system_bundle()
        bundle = build_bundle(system_pem, ca_pem, ca_label)
        target = Path(args.out).absolute()
        write_bundle(target, bundle)
    except (TrustError, BundleError, GatewayCAError) as e:
        err.write(f"error: {e}\n")
        return 1
    except OSError as e:
        err.write(f"error: {e.filename or args.out}: {e.strerror or e}\n")
        return 1
    err.write(f"wrote {target}: {system_label}" + (f" + the gateway CA {ca_label}" if ca_pem else "") + "\n")
    out.write("".join(f"{line}\n" for line in client_env(target, args.proxy)))
    return 0


def _gateway_ca(args: argparse.Namespace) -> tuple[bytes | None, str]:
    if args.ca:
        try:
            return Path(args.ca).read_bytes(), args.ca
        except OSError as e:
            raise TrustError(f"{args.ca}: {e.strerror or e}") from None
    if args.data_dir is None:
        return None, ""
    if args.mint:
        return _minted(args.data_dir, args.gateway)
    found = minted_gateway_cas(args.data_dir)
    if args.gateway:
        namespace, _, name = args.gateway.rpartition("/")
        found = {k: v for k, v in found.items() if k[1] == name and (not namespace or k[0] == namespace)}
    if len(found) != 1:
        names = ", ".join(f"{ns}/{n}" for ns, n in sorted(found)) or "none"
        raise TrustError(
            f"expected one CA minted under {args.data_dir}/ca, found {names}: "
            + ("choose one with --gateway NAMESPACE/NAME" if found else "start the gateway first, or use --mint")
        )
    (cert,) = found.values()
    return cert.read_bytes(), str(cert)


def _minted(data_dir: str, gateway: str | None) -> tuple[bytes, str]:
    namespace, _, name = (gateway or "").rpartition("/")
    if not namespace or not name:
        raise TrustError("--mint needs --gateway NAMESPACE/NAME (the CA is minted for exactly that gateway)")
    ca = load_or_mint_gateway_ca(data_dir, namespace, name)
    return ca.cert_pem, str(ca.cert_path)
