"""The command line: validate's output on good and broken configs, explain's dry run, ca init's files."""

from __future__ import annotations

import json
import io
import os
import stat
import textwrap
from pathlib import Path

import pytest

from egressproxy.cli import main

GOOD = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: deny-all
  listeners:
  - {name: https, protocol: HTTPS, tls: {mode: Terminate, caCertRef: {name: ca}}}
  - {name: pass, protocol: TLS, tls: {mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: ["*.example.com"]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: pinned}
spec:
  parentRefs: [{name: eg, sectionName: pass}]
  hostnames: [pinned.example.org]
  rules: [{}]
"""

BROKEN = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: allow-some
  listeners:
  - {name: a, protocol: TCP, tls: {mode: Passthrough}}
  - {name: a, protocol: HTTPS, tls: {mode: Passthrough}}
  requestTimeout: 5 minutes
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: eg, sectionName: a}]
  hostname: [api.example.com]
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
"""


def run(*argv: str) -> tuple[int, str]:
    import contextlib

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(list(argv))
    return code, buf.getvalue()


@pytest.fixture
def good(tmp_path: Path) -> Path:
    from egressproxy.ca import create_ca, secret_manifest

    p = tmp_path / "good.yaml"
    p.write_text(textwrap.dedent(GOOD))
    (tmp_path / "ca.yaml").write_text(secret_manifest("ca", *create_ca("ca")))
    return tmp_path


def test_validate_valid_config_prints_status_conditions(good: Path) -> None:
    code, out = run("validate", "-c", str(good))
    assert code == 0
    assert "4 object(s) in 2 file(s): valid" in out
    assert "EgressGateway/default/eg  Accepted=True  ResolvedRefs=True  Programmed=True" in out
    assert "HTTPRoute/default/api" in out and "TLSRoute/default/pinned" in out


def test_validate_names_the_fields_this_build_does_not_enforce(good: Path) -> None:
    """A TrafficPolicy CSRF check is valid, but not in force: exit 0, and the status line says which fields."""
    (good / "limit.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: gateway.kgateway.dev/v1alpha1
            kind: TrafficPolicy
            metadata: {name: slow}
            spec:
              targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}]
              timeouts: {request: 5s}
              csrf: {percentageEnabled: 100}
            """
        )
    )
    code, out = run("validate", "-c", str(good))
    assert code == 0, out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert lines["TrafficPolicy/default/slow"].split(None, 1)[1] == (
        "Accepted=True  ResolvedRefs=True  Programmed=False "
        "(Unsupported: spec.csrf is validated but not enforced by this build)"
    )
    assert lines["EgressGateway/default/eg"].endswith("Programmed=True")


def test_validate_broken_config_lists_every_problem_with_file_line_and_path(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text(BROKEN)
    code, out = run("validate", "-c", str(p))
    assert code == 1
    lines = out.splitlines()
    f = str(p)
    expected = [
        f"{f}:5: EgressGateway/default/eg: spec.defaultPolicy: unsupported value 'allow-some': must be one of allow-all, deny-all",
        f"{f}:7: EgressGateway/default/eg: spec.listeners[0].tls: tls is invalid for a TCP listener",
        f"{f}:8: EgressGateway/default/eg: spec.listeners[1].tls.mode: an HTTPS listener intercepts: it needs tls.mode Terminate",
        f"{f}:9: EgressGateway/default/eg: spec.requestTimeout: unknown unit ' minutes' in duration '5 minutes' (use ns, us, ms, s, m or h)",
        f"{f}:16: HTTPRoute/default/api: spec.hostname: unknown field (did you mean 'hostnames'?)",
        f"{f}:19: Widget/default/w: kind: unknown kind 'Widget'",
    ]
    for line in expected:
        assert line in lines, f"missing: {line}\n--- got:\n{out}"
    assert len(lines) == len(expected)


def test_validate_invalid_yaml_gives_line_and_column_not_a_traceback(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("kind: EgressGateway\nmetadata: {name: eg\nspec: {}\n")
    code, out = run("validate", "-c", str(p))
    assert code == 1
    assert out.startswith(f"{p}:3: -: -: invalid YAML at column")
    assert "Traceback" not in out


@pytest.mark.parametrize(
    "target,allowed,expect",
    [
        ("https://api.example.com/v1/chat", True, "route default/api rule 0"),
        ("https://api.example.com/v2", False, "DENY 403: no-route by EgressGateway/default/eg"),
        ("https://example.com/v1", False, "CONNECT   denied"),
        ("pinned.example.org:443", True, "action passthrough"),
    ],
)
def test_explain_reports_listener_route_and_verdict(good: Path, target: str, allowed: bool, expect: str) -> None:
    code, out = run("explain", "-c", str(good), "--no-resolve", target)
    assert code == (0 if allowed else 3)
    assert expect in out


OPEN = """
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  defaultPolicy: allow-all
  listeners:
  - {name: https, protocol: HTTPS, tls: {mode: Terminate, caCertRef: {name: ca}}}
  - {name: http, protocol: HTTP}
  upstreamTLS:
    hostAliases:
    - {ip: 127.0.0.1, hostnames: [stub.example.com]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: llm}
spec:
  parentRefs: [{name: eg, sectionName: https}]
  hostnames: [llm.example.com]
  rules:
  - backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: ai}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {name: ai}
spec:
  type: AI
  ai:
    priorityGroups:
    - providers:
      - name: local
        openai: {model: m, hostOverride: {host: 127.0.0.1, port: 9000, scheme: http}}
    - providers:
      - name: claude
        anthropic: {model: claude}
"""


@pytest.fixture
def open_config(tmp_path: Path) -> Path:
    from egressproxy.ca import create_ca, secret_manifest

    (tmp_path / "open.yaml").write_text(textwrap.dedent(OPEN))
    (tmp_path / "ca.yaml").write_text(secret_manifest("ca", *create_ca("ca")))
    return tmp_path


@pytest.mark.parametrize(
    "target",
    ["http://169.254.169.254/latest/meta-data", "https://127.0.0.1/", "http://[::1]:8080/", "169.254.169.254:443"],
)
@pytest.mark.parametrize("resolve", [True, False])
def test_explain_applies_the_ssrf_guard_like_the_gateway(open_config: Path, target: str, resolve: bool) -> None:
    """allow-all lets the request through its routes, but the dial guard refuses the address: so does explain,
    with or without DNS (an IP literal needs none)."""
    code, out = run("explain", "-c", str(open_config), target, *(() if resolve else ("--no-resolve",)))
    assert code == 3
    assert "DENY 403: destination-address-denied by EgressGateway/default/eg" in out


def test_explain_no_resolve_says_the_name_was_not_checked(open_config: Path) -> None:
    code, out = run("explain", "-c", str(open_config), "--no-resolve", "https://anything.example.net/x")
    assert code == 0
    assert "--no-resolve: DNS was not consulted" in out and "verdict   ALLOW" in out


def test_explain_json_is_one_document_with_candidates_in_try_order(open_config: Path) -> None:
    import json

    code, out = run("explain", "-c", str(open_config), "--json", "https://llm.example.com/v1/chat/completions")
    assert code == 0
    doc = json.loads(out)
    assert doc["verdict"] == {"allowed": True, "reason": "route", "policy": "HTTPRoute/default/llm"}
    assert doc["connect"]["verdict"]["allowed"] and doc["connection"]["action"] == "intercept"
    assert doc["request"]["route"] == "default/llm" and doc["request"]["backend"] == "default/ai"
    assert doc["request"]["upstreams"] == [
        {"backend": "default/ai", "host": "127.0.0.1", "port": 9000, "scheme": "http", "group": 0, "provider": "local"},
        {"backend": "default/ai", "host": "api.anthropic.com", "port": 443, "scheme": "https", "group": 1, "provider": "claude"},
    ]
    # The hostOverride is dialled first: a configured address, trusted past the SSRF guard like a Static Backend.
    assert doc["destination"] == {"host": "127.0.0.1", "port": 9000, "resolved": True, "address": "127.0.0.1"}
    assert isinstance(doc["policies"], list)


def test_explain_host_aliases_are_trusted_as_configured(open_config: Path) -> None:
    import json

    code, out = run("explain", "-c", str(open_config), "--json", "https://stub.example.com/")
    assert code == 0, out
    assert json.loads(out)["destination"]["address"] == "127.0.0.1"


def test_explain_host_header_must_agree_with_the_connection(open_config: Path) -> None:
    code, out = run("explain", "-c", str(open_config), "--no-resolve", "--header", "Host: other.example.com", "https://stub.example.com/")
    assert code == 3 and "DENY 421: host-mismatch" in out


def test_explain_invalid_config_exits_1(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text(BROKEN)
    code, out = run("explain", "-c", str(p), "https://api.example.com/")
    assert code == 1 and "spec.defaultPolicy" in out


def test_explain_shows_a_policy_with_unsupported_fields_as_not_enforced(good: Path) -> None:
    """Honest status: a consulted policy whose fields this build does not enforce is never shown as applied."""
    import dataclasses
    import types

    from egressproxy.commands.explain import explain_target
    from egressproxy.compiler import compile_config
    from egressproxy.config.loader import load_paths
    from egressproxy.config.problems import ObjectRef

    (good / "policy.yaml").write_text(
        "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: tp}\n"
        "spec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}]\n"
        "  timeout: {idle: 30s}\n"
    )
    loaded = load_paths([str(good)])
    assert loaded.ok, loaded.problems
    snapshot = compile_config(loaded.resources).snapshot
    assert snapshot is not None
    ref = ObjectRef("TrafficPolicy", "default", "tp")
    target = "https://api.example.com/v1/x"
    # The compiler itself marks the TrafficPolicy's idle timeout as not enforced; explain never calls it applied.
    assert snapshot.unsupported[ref] == ("spec.timeout.idle",)
    (shown,) = explain_target(snapshot, target, resolve=False)["policies"][:1]
    assert shown == {"policy": str(ref), "scope": "route", "verdict": "not-enforced", "unsupportedFields": ["spec.timeout.idle"]}
    enforced_only = dataclasses.replace(snapshot, unsupported=types.MappingProxyType({}))
    (applied,) = explain_target(enforced_only, target, resolve=False)["policies"][:1]
    assert applied == {"policy": str(ref), "scope": "route", "verdict": "applied"}


def test_ca_init_writes_private_files_0600_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out_dir = tmp_path / "ca"
    code, _ = run("ca", "init", "--out", str(out_dir))
    assert code == 0
    for name in ("ca.key", "ca-secret.yaml"):
        assert stat.S_IMODE(os.stat(out_dir / name).st_mode) == 0o600
    assert (out_dir / "ca.crt").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    secret = (out_dir / "ca-secret.yaml").read_text()
    assert "kind: Secret" in secret and "name: egress-ca" in secret and "tls.key: |" in secret
    code, out = run("ca", "init", "--out", str(out_dir))
    assert code == 1 and "exists" in out


MINTING = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata: {name: eg}
spec:
  listeners:
  - {name: https, protocol: HTTPS, tls: {mode: Terminate}}
"""


def run_err(*argv: str) -> tuple[int, str, str]:
    import contextlib

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_validate_a_terminate_listener_without_ca_cert_ref_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Valid: the CA is minted at run; validate says so and writes no file (not even a data dir)."""
    p = tmp_path / "gw.yaml"
    p.write_text(MINTING)
    monkeypatch.chdir(tmp_path)
    code, out = run("validate", "-c", str(p))
    assert code == 0, out
    assert out.splitlines()[-1] == (
        "EgressGateway/default/eg listener https: no caCertRef: the gateway's CA is minted under --data-dir at run "
        "(egressproxy ca show prints it)"
    )
    assert sorted(x.name for x in tmp_path.iterdir()) == ["gw.yaml"]


def test_ca_show_prints_the_minted_certificate(tmp_path: Path) -> None:
    from egressproxy.ca import load_or_mint_gateway_ca

    ca = load_or_mint_gateway_ca(tmp_path, "default", "eg")
    assert run_err("ca", "show", "--data-dir", str(tmp_path)) == (0, ca.cert_pem.decode(), "")
    assert run_err("ca", "show", "--data-dir", str(tmp_path), "--gateway", "eg")[1] == ca.cert_pem.decode()
    assert run_err("ca", "show", "--data-dir", str(tmp_path), "--gateway", "default/eg")[1] == ca.cert_pem.decode()


def test_ca_show_before_any_ca_was_minted_names_the_path_it_looked_at(tmp_path: Path) -> None:
    assert run_err("ca", "show", "--data-dir", str(tmp_path)) == (
        1,
        "",
        f"error: no CA minted yet: {tmp_path}/ca/*/*/ca.crt does not exist (`egressproxy run --data-dir {tmp_path}` "
        "mints one for a gateway with a Terminate listener without caCertRef)\n",
    )
    code, out, err = run_err("ca", "show", "--data-dir", str(tmp_path), "--gateway", "team/eg")
    assert (code, out) == (1, "")
    assert err.startswith(f"error: no CA minted yet: {tmp_path}/ca/team/eg/ca.crt does not exist")


def test_ca_show_with_several_gateways_needs_gateway(tmp_path: Path) -> None:
    from egressproxy.ca import load_or_mint_gateway_ca

    load_or_mint_gateway_ca(tmp_path, "default", "a")
    b = load_or_mint_gateway_ca(tmp_path, "team", "b")
    assert run_err("ca", "show", "--data-dir", str(tmp_path)) == (
        1,
        "",
        f"error: CAs of several gateways under {tmp_path}/ca: default/a, team/b; choose one with --gateway NAME\n",
    )
    assert run_err("ca", "show", "--data-dir", str(tmp_path), "--gateway", "b") == (0, b.cert_pem.decode(), "")


def test_run_dry_run_does_not_mint_the_gateway_ca(tmp_path: Path) -> None:
    p = tmp_path / "gw.yaml"
    p.write_text(MINTING)
    data = tmp_path / "data"
    code, out = run("run", "-c", str(p), "--data-dir", str(data), "--dry-run")
    assert code == 0
    assert "listener https: HTTPS port any" in out
    assert not (data / "ca").exists()


def test_explain_shows_the_one_rate_limit_budget_and_what_each_policy_gives_it(good: Path) -> None:
    """explain names the budget the gateway would count the request against (its RateLimitPolicies merged field
    by field, the most specific winning) and, per policy, the fields it supplies and those overridden."""
    (good / "limit.yaml").write_text(
        "apiVersion: clrk.apoxy.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: budget}\n"
        "spec:\n  targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}]\n"
        "  requests: 10\n  tokens: 5000\n  window: 1m\n"
        "---\napiVersion: clrk.apoxy.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: api-more}\n"
        "spec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}]\n"
        "  requests: 100\n  window: 1m\n"
    )
    code, out = run("explain", "-c", str(good), "https://api.example.com/v1/x", "--no-resolve")
    assert code == 0, out
    assert "budget    RateLimitPolicy/default/api-more: 100 requests and 5000 tokens per 60s PerAgent, Local store\n" in out
    assert "policy    RateLimitPolicy/default/api-more (route): applied (budget fields: requests, window)\n" in out
    assert "policy    RateLimitPolicy/default/budget (gateway): applied (budget fields: tokens; overridden: requests, window)\n" in out
    code, out = run("explain", "-c", str(good), "https://api.example.com/v1/x", "--no-resolve", "--json")
    document = json.loads(out)
    budget = document["request"]["rateLimit"]
    assert (budget["policy"], budget["policies"]) == (
        "RateLimitPolicy/default/api-more", ["RateLimitPolicy/default/api-more", "RateLimitPolicy/default/budget"]
    )
    assert (budget["requests"], budget["tokens"], budget["from"]["tokens"]) == (100, 5000, "RateLimitPolicy/default/budget")
    (entry,) = [p for p in document["policies"] if p["policy"] == "RateLimitPolicy/default/budget"]
    assert entry["verdict"] == "applied" and entry["rateLimit"] == {"requests": 10, "tokens": 5000, "window": 60.0}
    assert (entry["budgetFields"], entry["overriddenFields"]) == (["tokens"], ["requests", "window"])


def test_explain_names_the_credential_injected_but_never_its_value(good: Path) -> None:
    import json

    (good / "credential.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: tok}\nstringData: {token: tok-SECRET-value}\n---\n"
        "apiVersion: clrk.apoxy.dev/v1alpha1\nkind: CredentialInjectionPolicy\nmetadata: {name: key}\n"
        "spec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}]\n"
        "  secretRef: {name: tok}\n  target: Header\n  headerName: x-api-key\n"
    )
    code, out = run("explain", "-c", str(good), "--json", "--no-resolve", "https://api.example.com/v1/x")
    assert code == 0, out
    assert json.loads(out)["request"]["credential"] == {
        "source": "CredentialInjectionPolicy/default/key",
        "passthrough": False,
        "headers": ["x-api-key"],
        "query": [],
        "gcpServiceAccount": None,
        "awsSigV4": None,
        "azureDeployment": None,
    }
    code, text = run("explain", "-c", str(good), "--no-resolve", "https://api.example.com/v1/x")
    assert "credential CredentialInjectionPolicy/default/key: x-api-key" in text
    assert "SECRET" not in out + text


def test_every_run_flag_has_help_with_its_default() -> None:
    """`egressproxy run --help` documents every option and the value it takes when not given."""
    import argparse

    from egressproxy.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run = sub.choices["run"]
    for action in run._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction) or action.required:
            continue
        assert action.help, f"{action.option_strings} has no help text"
        assert "(default: " in action.help, f"{action.option_strings} does not say its default"


def test_render_k8s_and_trust_are_commands() -> None:
    from egressproxy.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["render-k8s", "-c", "x", "--sidecar"]).sidecar is True
    assert parser.parse_args(["trust", "--out", "b", "--mint"]).mint is True


def test_run_cert_cache_size_defaults_to_4096_and_must_be_positive(capsys) -> None:
    from egressproxy.cli import build_parser

    assert build_parser().parse_args(["run", "-c", "x"]).cert_cache_size == 4096
    assert build_parser().parse_args(["run", "-c", "x", "--cert-cache-size", "2"]).cert_cache_size == 2
    for bad in ("0", "-3", "many"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["run", "-c", "x", "--cert-cache-size", bad])
        assert "--cert-cache-size: expected a whole number of at least 1" in capsys.readouterr().err
