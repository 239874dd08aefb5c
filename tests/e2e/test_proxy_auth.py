"""HTTPListenerPolicy.basicAuth: proxy credentials verified against an htpasswd Secret (DESIGN.md 4.1, 5)."""

from __future__ import annotations

import subprocess
import textwrap

import httpx
import pytest
from passlib.hash import apr_md5_crypt, bcrypt, ldap_sha1

pytestmark = pytest.mark.e2e


def _config() -> list[str]:
    htpasswd = "\n".join(
        [
            "team-a/billing:" + bcrypt.using(rounds=4).hash("bcrypt-pass"),
            "team-b/search:" + apr_md5_crypt.hash("apr1-pass"),
            "team-c/etl:" + ldap_sha1.hash("sha-pass"),
        ]
    )
    return [
        """
        apiVersion: clrk.apoxy.dev/v1alpha1
        kind: EgressGateway
        metadata: {name: eg}
        spec:
          defaultPolicy: allow-all
          ssrfGuard: {allowCIDRs: [127.0.0.1/32]}
          listeners:
          - {name: http, protocol: HTTP}
          - {name: tcp, protocol: TCP}
        ---
        apiVersion: gateway.kgateway.dev/v1alpha1
        kind: HTTPListenerPolicy
        metadata: {name: proxy-auth}
        spec:
          targetRefs: [{group: clrk.apoxy.dev, kind: EgressGateway, name: eg}]
          basicAuth: {credentialsSecretRef: {name: proxy-users}}
        """,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: proxy-users}\nstringData:\n  .htpasswd: |\n"
        + textwrap.indent(htpasswd, "    ")
        + "\n",
    ]


@pytest.fixture
def env(gateway, plain_origin):
    return gateway(*_config()), plain_origin()


@pytest.mark.parametrize(
    "user,password,namespace",
    [("team-a/billing", "bcrypt-pass", "team-a"), ("team-b/search", "apr1-pass", "team-b"), ("team-c/etl", "sha-pass", "team-c")],
    ids=["bcrypt", "apr1", "sha"],
)
def test_valid_credentials_pass_and_name_the_workload(env, user, password, namespace):
    gw, origin = env
    proxy = httpx.Proxy(gw.proxy_url, auth=(user, password))
    r = httpx.get(f"http://127.0.0.1:{origin.port}/ok", proxy=proxy, timeout=10)
    assert r.status_code == 200
    assert "proxy-authorization" not in r.json()["headers"]
    assert f'namespace="{namespace}"' in gw.metrics()


@pytest.mark.parametrize("auth", [None, ("team-a/billing", "wrong"), ("nobody/x", "bcrypt-pass")], ids=["missing", "wrong", "unknown-user"])
def test_missing_or_wrong_credentials_get_407_with_proxy_authenticate(env, auth):
    gw, origin = env
    proxy = httpx.Proxy(gw.proxy_url, auth=auth) if auth else gw.proxy_url
    r = httpx.get(f"http://127.0.0.1:{origin.port}/nope", proxy=proxy, timeout=10)
    assert r.status_code == 407
    assert r.headers["proxy-authenticate"] == 'Basic realm="egressproxy"'
    assert r.headers["x-egress-denied"] == "proxy-auth-required"
    body = r.json()
    assert (body["reason"], body["policy"]) == ("proxy-auth-required", "HTTPListenerPolicy/default/proxy-auth")
    assert origin.requests == []


def test_connect_is_authenticated_before_the_tunnel_opens(env):
    gw, origin = env
    bare = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "10", "--proxy", gw.proxy_url, "https://127.0.0.1:9/"],
        capture_output=True, text=True, timeout=20,
    )
    assert "HTTP/1.1 407" in bare.stdout and "Proxy-Authenticate: Basic" in bare.stdout.replace("proxy-authenticate", "Proxy-Authenticate")
    good = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--proxy", gw.proxy_url, "--proxy-user", "team-c/etl:sha-pass",
         "-p", f"http://127.0.0.1:{origin.port}/through-tunnel"],
        capture_output=True, text=True, timeout=20,
    )
    assert good.returncode == 0, good.stderr
    assert '"path": "/through-tunnel"' in good.stdout
