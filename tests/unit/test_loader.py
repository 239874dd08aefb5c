"""The loader: every problem class is one exact `file:line: Kind/namespace/name: field.path: message` line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from egressproxy.config.loader import config_files, load_paths, load_text


def problems_of(text: str) -> list[str]:
    return [str(p) for p in load_text(textwrap.dedent(text), "gw.yaml").problems]


GATEWAY = """\
apiVersion: clrk.apoxy.dev/v1alpha1
kind: EgressGateway
metadata:
  name: egress
  namespace: platform
spec:
  defaultPolicy: deny-all
  listeners:
  - name: https
    protocol: HTTPS
    port: 443
    tls:
      mode: Terminate
      caCertRef: {name: egress-ca}
  - name: http
    protocol: HTTP
    port: 80
"""


def replaced(old: str, new: str) -> str:
    assert old in GATEWAY
    return GATEWAY.replace(old, new)


def test_the_valid_gateway_loads() -> None:
    result = load_text(GATEWAY, "gw.yaml")
    assert result.ok
    (gateway,) = result.resources
    assert (gateway.kind, gateway.namespace, gateway.name, gateway.line) == ("EgressGateway", "platform", "egress", 1)
    assert str(gateway.ref) == "EgressGateway/platform/egress"


def test_unknown_kind() -> None:
    assert problems_of(replaced("kind: EgressGateway", "kind: EgressProxy")) == [
        "gw.yaml:2: EgressProxy/platform/egress: kind: unknown kind 'EgressProxy'"
    ]


def test_unknown_kind_suggests_the_known_one() -> None:
    text = "apiVersion: gateway.networking.k8s.io/v1\nkind: HttpRoute\nmetadata: {name: r}\nspec: {}\n"
    assert problems_of(text) == ["gw.yaml:2: HttpRoute/default/r: kind: unknown kind 'HttpRoute' (did you mean 'HTTPRoute'?)"]


def test_wrong_api_version() -> None:
    assert problems_of(replaced("clrk.apoxy.dev/v1alpha1", "clrk.apoxy.dev/v1")) == [
        "gw.yaml:1: EgressGateway/platform/egress: apiVersion: EgressGateway is served as clrk.apoxy.dev/v1alpha1, not 'clrk.apoxy.dev/v1'"
    ]


def test_misspelled_field_names_the_closest_one() -> None:
    assert problems_of(replaced("  defaultPolicy: deny-all", "  defaultPolcy: deny-all")) == [
        "gw.yaml:7: EgressGateway/platform/egress: spec.defaultPolcy: unknown field (did you mean 'defaultPolicy'?)"
    ]


def test_unknown_field_without_a_close_match() -> None:
    assert problems_of(replaced("    port: 80\n", "    port: 80\n    colour: blue\n")) == [
        "gw.yaml:18: EgressGateway/platform/egress: spec.listeners[1].colour: unknown field"
    ]


def test_unknown_top_level_field() -> None:
    assert problems_of(GATEWAY + "specs: {}\n") == ["gw.yaml:18: EgressGateway/platform/egress: specs: unknown field"]


def test_wrong_type() -> None:
    assert problems_of(replaced("    port: 443", "    port: https")) == [
        "gw.yaml:11: EgressGateway/platform/egress: spec.listeners[0].port: expected an integer, got string"
    ]


def test_wrong_type_for_a_list() -> None:
    assert problems_of(
        "apiVersion: clrk.apoxy.dev/v1alpha1\nkind: EgressGateway\nmetadata: {name: g}\nspec:\n  listeners: https\n"
    ) == ["gw.yaml:5: EgressGateway/default/g: spec.listeners: expected a list, got string"]


def test_missing_required_field() -> None:
    assert problems_of(replaced("  - name: http\n    protocol: HTTP\n", "  - name: http\n")) == [
        "gw.yaml:15: EgressGateway/platform/egress: spec.listeners[1].protocol: required field is missing"
    ]


def test_missing_metadata_name() -> None:
    assert problems_of(replaced("  name: egress\n", "")) == [
        "gw.yaml:3: EgressGateway/platform/?: metadata.name: required field is missing"
    ]


def test_missing_spec() -> None:
    text = "apiVersion: clrk.apoxy.dev/v1alpha1\nkind: EgressGateway\nmetadata: {name: g}\n"
    assert problems_of(text) == ["gw.yaml:1: EgressGateway/default/g: spec: required field is missing"]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    protocol: HTTPS",
            "    protocol: QUIC",
            "gw.yaml:10: EgressGateway/platform/egress: spec.listeners[0].protocol: "
            "unsupported value 'QUIC': must be one of TCP, TLS, HTTP, HTTPS, UDP",
        ),
        (
            "      mode: Terminate",
            "      mode: Intercept",
            "gw.yaml:13: EgressGateway/platform/egress: spec.listeners[0].tls.mode: "
            "unsupported value 'Intercept': must be one of Passthrough, Terminate",
        ),
        (
            "  defaultPolicy: deny-all",
            "  defaultPolicy: DenyAll",
            "gw.yaml:7: EgressGateway/platform/egress: spec.defaultPolicy: "
            "unsupported value 'DenyAll': must be one of allow-all, deny-all",
        ),
    ],
)
def test_invalid_enum(old: str, new: str, expected: str) -> None:
    assert problems_of(replaced(old, new)) == [expected]


@pytest.mark.parametrize("protocol", ["TCP", "UDP"])
def test_tls_on_a_tcp_or_udp_listener(protocol: str) -> None:
    text = replaced("    protocol: HTTP\n    port: 80\n", f"    protocol: {protocol}\n    tls: {{mode: Passthrough}}\n")
    assert problems_of(text) == [f"gw.yaml:17: EgressGateway/platform/egress: spec.listeners[1].tls: tls is invalid for a {protocol} listener"]


def test_terminate_without_ca_cert_ref_is_valid() -> None:
    """Apoxy's examples omit caCertRef: the gateway's CA is minted under --data-dir at run (DESIGN.md 4.2)."""
    assert problems_of(replaced("      caCertRef: {name: egress-ca}\n", "")) == []


def test_duplicate_listener_names() -> None:
    assert problems_of(replaced("  - name: http\n", "  - name: https\n")) == [
        "gw.yaml:15: EgressGateway/platform/egress: spec.listeners[1].name: duplicate listener name 'https' (also listeners[0])"
    ]


def test_a_cross_field_rule_waits_for_its_fields_to_be_valid() -> None:
    """An invalid tls.mode is reported once, not also as a missing Terminate for the HTTPS listener."""
    assert problems_of(replaced("      mode: Terminate", "      mode: terminate")) == [
        "gw.yaml:13: EgressGateway/platform/egress: spec.listeners[0].tls.mode: "
        "unsupported value 'terminate': must be one of Passthrough, Terminate"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s\n",
            "gw.yaml:4: -: -: invalid YAML at column 1: while parsing a flow mapping expected ',' or '}', but got '<stream end>'",
        ),
        (
            "a: 1\nb:\n\t- x\n",
            "gw.yaml:3: -: -: invalid YAML at column 1: while scanning for the next token found character '\\t' that cannot start any token",
        ),
        (
            "kind: Secret\nkind: Secret\n",
            'gw.yaml:2: -: -: invalid YAML at column 1: while constructing a mapping found duplicate key "kind" with value "Secret" (original value: "Secret")',
        ),
        (
            "spec:\n  a: 'unterminated\n",
            "gw.yaml:3: -: -: invalid YAML at column 1: while scanning a quoted scalar found unexpected end of stream",
        ),
        (
            "spec:\n  a: b: c\n",
            "gw.yaml:2: -: -: invalid YAML at column 7: mapping values are not allowed here",
        ),
    ],
)
def test_invalid_yaml_names_line_and_column_without_a_traceback(text: str, expected: str) -> None:
    assert problems_of(text) == [expected]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30s", 30.0), ("1m30s", 90.0), ("1.5h", 5400.0), ("300ms", 0.3), ("0", 0.0), ("0s", 0.0), ("2h45m", 9900.0)],
)
def test_go_durations(value: str, seconds: float) -> None:
    result = load_text(GATEWAY + f"  requestTimeout: {value!r}\n", "gw.yaml")
    assert result.ok
    assert result.resources[0].spec["requestTimeout"] == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("30", "missing unit in duration '30' (use ns, us, ms, s, m or h)"),
        ("5 minutes", "unknown unit ' minutes' in duration '5 minutes' (use ns, us, ms, s, m or h)"),
        ("1d", "unknown unit 'd' in duration '1d' (use ns, us, ms, s, m or h)"),
        ("m", "invalid duration 'm'"),
        ("", "invalid duration ''"),
        ("-5s", "duration must not be negative, got '-5s'"),
    ],
)
def test_bad_go_durations(value: str, message: str) -> None:
    assert problems_of(GATEWAY + f"  requestTimeout: {value!r}\n") == [
        f"gw.yaml:18: EgressGateway/platform/egress: spec.requestTimeout: {message}"
    ]


def test_a_number_is_not_a_duration() -> None:
    assert problems_of(GATEWAY + "  requestTimeout: 30\n") == [
        "gw.yaml:18: EgressGateway/platform/egress: spec.requestTimeout: "
        "expected a duration string such as '30s' or '1m30s', got integer"
    ]


def test_every_problem_of_every_document_is_reported_at_once() -> None:
    text = (
        replaced("  defaultPolicy: deny-all", "  defaultPolicy: open")
        + "---\n"
        + "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  hostnames: [Bad_Host]\n"
        + "---\n"
        + "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: '!!!'}\n"
    )
    assert problems_of(text) == [
        "gw.yaml:7: EgressGateway/platform/egress: spec.defaultPolicy: unsupported value 'open': must be one of allow-all, deny-all",
        "gw.yaml:23: HTTPRoute/default/r: spec.hostnames[0]: invalid hostname 'Bad_Host': must be lower case ('bad_host')",
        "gw.yaml:28: Secret/default/s: data.k: invalid base64 data",
    ]


def test_kubectl_exports_keep_timestamps_as_strings() -> None:
    text = replaced("  namespace: platform\n", "  namespace: platform\n  creationTimestamp: 2024-05-01T10:00:00Z\n  uid: abc\n")
    assert load_text(text, "gw.yaml").ok


def test_a_document_must_be_a_mapping() -> None:
    assert problems_of("- a\n- b\n") == ["gw.yaml:1: -: -: a document must be a Kubernetes object (a mapping)"]


def test_empty_documents_are_skipped() -> None:
    result = load_text("---\n---\n" + GATEWAY + "---\n", "gw.yaml")
    assert result.ok and len(result.resources) == 1


def test_secret_with_data_and_string_data() -> None:
    result = load_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: Opaque\ndata: {a: aGVsbG8=}\nstringData: {b: world, a: wins}\n",
        "s.yaml",
    )
    assert result.ok
    assert result.resources[0].spec == {"data": {"a": b"wins", "b": b"world"}, "type": "Opaque"}


def test_folders_are_read_recursively_and_duplicates_reported(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.yaml").write_text(GATEWAY)
    (tmp_path / "sub" / "b.yml").write_text(GATEWAY)
    (tmp_path / "notes.txt").write_text("not config")
    files, problems = config_files([tmp_path])
    assert [Path(f).relative_to(tmp_path).as_posix() for f in files] == ["a.yaml", "sub/b.yml"]
    assert problems == []
    result = load_paths([tmp_path])
    assert len(result.resources) == 1
    assert [str(p) for p in result.problems] == [
        f"{tmp_path}/sub/b.yml:1: EgressGateway/platform/egress: metadata.name: duplicate object, first defined at {tmp_path}/a.yaml:1"
    ]


def test_missing_paths_and_empty_folders(tmp_path: Path) -> None:
    result = load_paths([tmp_path / "nope.yaml", tmp_path])
    assert [str(p) for p in result.problems] == [
        f"{tmp_path}/nope.yaml:0: -: -: no such file or folder",
        f"{tmp_path}:0: -: -: folder holds no *.yaml or *.yml file",
    ]


CONFIG = Path(__file__).resolve().parents[2] / "config"
EXAMPLES = sorted(p.name for p in CONFIG.iterdir() if p.is_dir()) if CONFIG.is_dir() else []


@pytest.mark.parametrize("folder", EXAMPLES)
def test_example_configurations_load_without_problems(folder: str) -> None:
    result = load_paths([CONFIG / folder])
    assert [str(p) for p in result.problems] == []
    assert any(r.kind == "EgressGateway" for r in result.resources)
    assert (CONFIG / folder / "README.md").is_file()


def test_there_is_an_example_per_user_story() -> None:
    assert len([name for name in EXAMPLES if name[:2].isdigit()]) == 13
    assert "quickstart" in EXAMPLES
