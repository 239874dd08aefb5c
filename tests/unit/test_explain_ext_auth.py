"""`egressproxy explain` on config/ext-auth: it names the ext_authz call the data plane would make (it cannot
make it, and says so), leaves it out where a more specific policy disables it, and says Report mode."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from egressproxy.cli import main

CONFIG = str(Path(__file__).resolve().parents[2] / "config" / "ext-auth")


def explain(url: str, *extra: str) -> tuple[int, list[str]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["explain", "-c", CONFIG, "--no-resolve", url, *extra])
    return status, out.getvalue().splitlines()


def test_the_call_is_named_and_not_made() -> None:
    status, lines = explain("https://api.github.com/repos/acme/app", "--identity", "prod/agent")
    assert status == 0
    assert [line for line in lines if line.startswith("check ")] == [
        "check     ext-auth TrafficPolicy/ext-auth/github-authz: call (GatewayExtension/ext-auth/opa at "
        "opa.ext-auth.svc.cluster.local:9191 would be called (timeout 0.5s, fail closed with 403); explain cannot "
        "call it: the service decides)"
    ]


def test_a_rule_that_disables_ext_auth_has_no_call() -> None:
    status, lines = explain("https://api.github.com/meta")
    assert status == 0
    assert not any(line.startswith("check ") for line in lines)


def test_report_mode_is_said_in_the_json_trace() -> None:
    status, lines = explain("https://pypi.org/simple/httpx/", "--json")
    document = json.loads("\n".join(lines))
    assert status == 0
    [entry] = [e for e in document["policyTrace"] if e["check"] == "ext-auth"]
    assert entry["policy"] == "TrafficPolicy/ext-auth/pypi-authz-report" and entry["verdict"] == "call"
    assert "enforcementMode Report" in entry["detail"]
