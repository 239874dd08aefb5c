"""The `egressproxy` command line (DESIGN.md section 3 is the contract)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from egressproxy import __version__
from egressproxy.admin_access import parse_cidr

__all__ = ["main", "build_parser"]


def parse_addr(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `:PORT` (loopback) into (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="egressproxy", description="Egress gateway data plane on mitmproxy.")
    p.add_argument("--version", action="version", version=f"egressproxy {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="serve the gateway")
    _config_arg(run)
    run.add_argument(
        "--mode",
        action="append",
        default=None,
        metavar="MODE",
        help="regular@[HOST:]PORT (explicit proxy), transparent@[HOST:]PORT (iptables REDIRECT target) or "
        "dns@[HOST:]PORT; repeatable (default: regular@127.0.0.1:8080)",
    )
    run.add_argument(
        "--admin-addr", type=parse_addr, default=("127.0.0.1", 19000), metavar="HOST:PORT",
        help="admin: GET /config_dump, GET /stats, POST /reload (default: 127.0.0.1:19000)",
    )
    run.add_argument(
        "--admin-allow-cidr", type=parse_cidr, action="append", default=[], metavar="CIDR",
        help="let admin clients from CIDR in besides loopback (127.0.0.0/8, ::1), which alone may use the admin "
        "port otherwise, whatever --admin-addr binds; repeatable (default: loopback only)",
    )
    run.add_argument(
        "--ready-addr", type=parse_addr, default=("127.0.0.1", 8082), metavar="HOST:PORT",
        help="readiness: GET /ready is 200 once every listener is bound (default: 127.0.0.1:8082)",
    )
    run.add_argument(
        "--metrics-addr", type=parse_addr, default=("127.0.0.1", 9091), metavar="HOST:PORT",
        help="Prometheus: GET /metrics (default: 127.0.0.1:9091)",
    )
    run.add_argument(
        "--data-dir", default=".egressproxy", metavar="DIR",
        help="capture store, minted CAs and certificate cache (default: .egressproxy)",
    )
    run.add_argument(
        "--secrets-dir", default=None, metavar="DIR",
        help="mounted Kubernetes Secret volumes, DIR/<name>/<key>, watched for rotation (default: none)",
    )
    run.add_argument(
        "--gateway", default=None, metavar="NAME",
        help="the EgressGateway to serve, NAME or NAMESPACE/NAME; needed when the config holds several "
        "(default: the only one)",
    )
    run.add_argument(
        "--workers", type=int, default=1, metavar="N", help="processes sharing the listening ports, SO_REUSEPORT (default: 1)"
    )
    run.add_argument(
        "--no-captures", dest="captures", action="store_false",
        help="record no captures: no store under --data-dir, no OTLP export (default: captures on)",
    )
    run.add_argument(
        "--captures-max-age", type=_duration, default=7 * 24 * 3600.0, metavar="DURATION",
        help="delete capture records older than this (default: 7d)",
    )
    run.add_argument(
        "--captures-max-size", type=_size, default=512 * 1024 * 1024, metavar="BYTES",
        help="keep the capture store under this size, oldest records deleted first (default: 512Mi; K, M, G, Ki, Mi, Gi)",
    )
    run.add_argument(
        "--event-loop", choices=("asyncio", "uvloop"), default="asyncio",
        help="the event loop: asyncio's own, or uvloop (answers a burst of new connections one after another, "
        "which makes pooling clients such as Go's lose keep-alive under load; docs/performance.md) (default: asyncio)",
    )
    run.add_argument(
        "--drain-seconds", type=_duration, default=5.0, metavar="DURATION",
        help="on SIGTERM/SIGINT, stop accepting and let in-flight requests finish for up to this long; a second "
        "signal exits at once (default: 5s)",
    )
    run.add_argument(
        "--cert-cache-size", type=_positive_int, default=4096, metavar="N",
        help="minted interception certificates kept in memory per CA, least recently used dropped first; a "
        "dropped one is minted again (about 1 ms) when its host comes back (default: 4096)",
    )
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"), help="(default: info)")
    run.add_argument("--dry-run", action="store_true", help="load, compile and print what would be served, then exit (default: off)")
    run.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)  # set by worker 0 for the others

    validate = sub.add_parser("validate", help="check configuration files and print status conditions")
    _config_arg(validate)
    validate.add_argument("--secrets-dir", default=None, metavar="DIR")
    validate.add_argument("--gateway", default=None, metavar="NAME")

    explain = sub.add_parser("explain", help="dry run: which listener, route, backend and policies apply")
    _config_arg(explain)
    explain.add_argument("target", metavar="URL|HOST:PORT")
    explain.add_argument("--method", default="GET")
    explain.add_argument("--header", action="append", default=[], metavar="K:V")
    explain.add_argument("--identity", default=None, metavar="NS/SA")
    explain.add_argument(
        "--body", default=None, metavar="FILE|-",
        help="the request body (a path, or - for stdin): what CEL sees as request.body and the AI guardrails judge",
    )
    explain.add_argument("--secrets-dir", default=None, metavar="DIR")
    explain.add_argument("--gateway", default=None, metavar="NAME")
    explain.add_argument("--json", action="store_true", help="print the decision as JSON")
    explain.add_argument("--no-resolve", action="store_true", help="skip DNS in the destination check (and say so)")

    ca = sub.add_parser("ca", help="certificate authority for interception")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True, metavar="COMMAND")
    ca_init = ca_sub.add_parser("init", help="write ca.crt, ca.key and ca-secret.yaml")
    ca_init.add_argument("--out", required=True, metavar="DIR")
    ca_init.add_argument("--name", default="egress-ca", metavar="N")
    ca_init.add_argument("--namespace", default="default", metavar="NS", help="namespace of the Secret manifest")
    ca_init.add_argument("--force", action="store_true", help="overwrite an existing CA")
    ca_show = ca_sub.add_parser("show", help="print the CA minted for a Terminate listener without caCertRef")
    ca_show.add_argument("--data-dir", default=".egressproxy", metavar="DIR")
    ca_show.add_argument("--gateway", default=None, metavar="NAME", help="NAME or NAMESPACE/NAME")

    captures = sub.add_parser("captures", help="read the capture store")
    captures.add_argument("--data-dir", default=".egressproxy", metavar="DIR")
    captures.add_argument("--json", action="store_true")
    captures.add_argument("--limit", type=int, default=50, metavar="N")
    captures.add_argument("--host", default=None, metavar="H")
    captures.add_argument("--since", default=None, metavar="T", help="a duration back from now (15m, 2h, 7d) or RFC3339")
    captures.add_argument("--identity", default=None, metavar="NS/SA")
    captures.add_argument("--route", default=None, metavar="NS/NAME")
    captures.add_argument("--status", default=None, metavar="CODE", help="a status (404) or a class (5xx)")
    captures.add_argument("--follow", "-f", action="store_true", help="keep printing new records as they arrive")

    ipt = sub.add_parser("iptables", help="transparent-sidecar NAT rules")
    ipt.add_argument("--proxy-uid", type=int, required=True, metavar="UID")
    ipt.add_argument("--port", type=int, default=15001)
    ipt.add_argument("--dns-port", type=int, default=None, help="also redirect UDP/53 to this port")
    ipt.add_argument("--exclude-cidr", action="append", default=[], metavar="C")
    group = ipt.add_mutually_exclusive_group()
    group.add_argument("--apply", action="store_true")
    group.add_argument("--print", dest="print_rules", action="store_true")
    group.add_argument("--clean", action="store_true")

    k8s = sub.add_parser("render-k8s", help="Kubernetes manifests for the gateway on stdout (docs/deployment.md)")
    _config_arg(k8s)
    k8s.add_argument("--gateway", default=None, metavar="NAME", help="NAME or NAMESPACE/NAME, when several")
    k8s.add_argument(
        "--image", default=None, metavar="IMAGE",
        help="the egressproxy image (default: GatewayParameters kube.envoyContainer.image, else the release image)",
    )
    k8s.add_argument(
        "--sidecar", action="store_true",
        help="a workload pod with the gateway as its transparent sidecar, instead of a Deployment and Service",
    )
    k8s.add_argument(
        "--app-image", default="your-app:latest", metavar="IMAGE", help="--sidecar: the workload container's image"
    )
    k8s.add_argument(
        "--secrets-dir", default=None, metavar="DIR",
        help="Secrets to validate with and mount (by folder name); their values are never printed",
    )

    tr = sub.add_parser(
        "trust", help="write a CA bundle (system CAs + the gateway CA) and print each client's variables"
    )
    tr.add_argument("--out", required=True, metavar="FILE", help="the bundle to write (mode 0644)")
    tr.add_argument("--data-dir", default=None, metavar="DIR", help="where the gateway minted its CA")
    tr.add_argument("--gateway", default=None, metavar="NAME", help="NAME or NAMESPACE/NAME, when several")
    tr.add_argument("--ca", default=None, metavar="FILE", help="the gateway CA certificate (a caCertRef's tls.crt)")
    tr.add_argument(
        "--mint", action="store_true",
        help="mint the CA under --data-dir for --gateway NAMESPACE/NAME if it does not exist yet",
    )
    tr.add_argument("--proxy", default=None, metavar="URL", help="also print HTTPS_PROXY/HTTP_PROXY lines")
    return p


def _duration(text: str) -> float:
    """A Go duration (90s, 36h) or a number of days (7d), in seconds."""
    from egressproxy.durations import DurationError, parse_duration

    try:
        seconds = float(text[:-1]) * 86400 if text.endswith("d") else parse_duration(text)
    except (ValueError, DurationError):
        raise argparse.ArgumentTypeError(f"expected a duration such as 30m, 36h or 7d, got {text!r}") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration, got {text!r}")
    return seconds


_SIZE_UNITS = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def _size(text: str) -> int:
    """A byte count with an optional unit: 500M, 2Gi, 1048576."""
    number = text.rstrip("KMGi")
    unit = text[len(number):]
    if unit not in _SIZE_UNITS or not number.isdigit() or int(number) <= 0:
        raise argparse.ArgumentTypeError(f"expected a size such as 512Mi or 2G, got {text!r}")
    return int(number) * _SIZE_UNITS[unit]


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c", "--config", action="append", required=True, metavar="PATH", help="file or folder of YAML; repeatable"
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _dispatch(build_parser().parse_args(argv))
    except BrokenPipeError:  # `egressproxy validate ... | head`: the reader left; that is not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "validate":
        from egressproxy.commands.validate import validate

        return validate(args.config, secrets_dir=args.secrets_dir, gateway=args.gateway, out=sys.stdout)
    if args.command == "run":
        if args.workers > 1 and args.worker_index == 0 and not args.dry_run:
            from egressproxy.runtime.workers import prepare_metrics_dir

            prepare_metrics_dir(args.data_dir)  # before prometheus_client is imported, in every worker
        from egressproxy.commands.run import run

        return run(args)
    if args.command == "explain":
        from egressproxy.commands.explain import explain

        return explain(args, out=sys.stdout)
    if args.command == "ca":
        from egressproxy.commands.ca import ca_init, ca_show

        if args.ca_command == "show":
            return ca_show(args.data_dir, args.gateway, out=sys.stdout, err=sys.stderr)
        return ca_init(args.out, args.name, force=args.force, out=sys.stdout, namespace=args.namespace)
    if args.command == "captures":
        from egressproxy.commands.captures import captures

        return captures(args, out=sys.stdout)
    if args.command == "iptables":
        from egressproxy.commands.iptables import iptables

        return iptables(args, out=sys.stdout)
    if args.command == "render-k8s":
        from egressproxy.commands.render_k8s import render_k8s

        return render_k8s(args, out=sys.stdout, err=sys.stderr)
    if args.command == "trust":
        from egressproxy.commands.trust import trust

        return trust(args, out=sys.stdout, err=sys.stderr)
    raise AssertionError(args.command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
