"""egressproxy/request_policies.py and cel_programs.py: CEL rbac and celValidation semantics, fail closed,
Report mode, the size limit, and programs compiled once with their field path."""

from __future__ import annotations

import pytest

from egressproxy.cel_programs import ALL_VARIABLES, CelError, RequestVariables, compile_program, json_body, mentions_body
from egressproxy.config.problems import ObjectRef
from egressproxy.request_policies import (
    BodyLimit,
    CelRule,
    CelValidation,
    RbacPolicy,
    RequestPolicies,
    evaluate,
    size_verdict,
)

TP = ObjectRef("TrafficPolicy", "default", "tp")
LP = ObjectRef("HTTPListenerPolicy", "default", "lp")


def variables(**overrides: object) -> RequestVariables:
    base: dict[str, object] = {
        "headers": {"x-team": "payments"},
        "path": "/v1/chat",
        "method": "POST",
        "host": "api.example.test",
        "source_address": "10.0.0.7",
        "namespace": "prod",
        "service_account": "agent",
        "body": {"model": "gpt-4o-mini"},
    }
    base.update(overrides)
    return RequestVariables(**base)  # type: ignore[arg-type]


def rbac(*sources: str, deny: bool = False, report: bool = False) -> RequestPolicies:
    programs = tuple(compile_program(s, f"spec.rbac.policy.matchExpressions[{i}]") for i, s in enumerate(sources))
    return RequestPolicies(rbac=RbacPolicy(TP, programs, deny, report))


def validation(*rules: tuple[str, bool], report: bool = False) -> RequestPolicies:
    compiled = tuple(
        CelRule(compile_program(s, f"spec.celValidation.rules[{i}].expression"), allow) for i, (s, allow) in enumerate(rules)
    )
    return RequestPolicies(validation=CelValidation(LP, compiled, report))


@pytest.mark.parametrize(
    ("expression", "allowed"),
    [
        ('request.headers["x-team"] == "payments"', True),
        ('request.path.startsWith("/v1/") && request.method == "POST"', True),
        ('request.host == "api.example.test"', True),
        ('source.address == "10.0.0.7"', True),
        ('source.identity.namespace == "prod" && source.identity.serviceAccount == "agent"', True),
        ('request.body.model == "gpt-4o-mini"', True),
        ('request.body.model == "gpt-4o"', False),
        ('source.identity.namespace == "dev"', False),
    ],
)
def test_rbac_allow_passes_when_an_expression_is_true(expression: str, allowed: bool) -> None:
    outcome = evaluate(rbac(expression), variables())
    assert (outcome.denial is None) is allowed
    if not allowed:
        assert outcome.denial is not None
        assert (outcome.denial.reason, outcome.denial.policy, outcome.denial.status_code) == ("rbac-denied", str(TP), 403)


def test_rbac_deny_denies_when_an_expression_is_true_and_names_it() -> None:
    outcome = evaluate(rbac('request.method == "GET"', 'request.method == "POST"', deny=True), variables())
    assert outcome.denial is not None
    assert outcome.denial.message == 'spec.rbac.policy.matchExpressions[1] (Deny) is true: request.method == "POST"'
    assert evaluate(rbac('request.method == "GET"', deny=True), variables()).denial is None


def test_a_runtime_error_denies_whatever_the_action_and_never_shows_a_value() -> None:
    for deny in (False, True):
        outcome = evaluate(rbac('request.headers["authorization"] == "x"', deny=deny), variables(headers={"x": "sk-SECRET"}))
        assert outcome.denial is not None
        assert outcome.denial.message.startswith("spec.rbac.policy.matchExpressions[0] could not be evaluated (")
        assert "SECRET" not in outcome.denial.message
    not_bool = evaluate(rbac("request.path"), variables())
    assert not_bool.denial is not None and "evaluated to a str, not a bool" in not_bool.denial.message
    no_body = evaluate(rbac('request.body.model == "x"'), variables(body=None))
    assert no_body.denial is not None  # no JSON body: fail closed


def test_cel_validation_first_true_rule_decides_then_allow_rules_are_an_allow_list() -> None:
    deny_delete = validation(('request.method == "DELETE"', False))
    assert evaluate(deny_delete, variables()).denial is None
    denied = evaluate(deny_delete, variables(method="DELETE")).denial
    assert denied is not None and denied.policy == str(LP)
    allow_list = validation(('request.path.startsWith("/v1/")', True))
    assert evaluate(allow_list, variables()).denial is None
    outside = evaluate(allow_list, variables(path="/admin")).denial
    assert outside is not None and outside.message == "no Allow rule of celValidation is true"
    ordered = validation(('request.method == "POST"', True), ('request.path.startsWith("/v1/")', False))
    assert evaluate(ordered, variables()).denial is None  # the first true rule (Allow) decides


def test_report_mode_passes_and_reports_what_it_would_have_denied() -> None:
    outcome = evaluate(rbac('request.method == "GET"', report=True), variables())
    assert outcome.denial is None
    assert [(r.reason, r.policy) for r in outcome.reports] == [("rbac-denied", str(TP))]
    assert [s.verdict for s in outcome.steps] == ["report"]


def test_validation_then_rbac_each_step_traced() -> None:
    both = RequestPolicies(validation=validation(('request.method == "DELETE"', False)).validation, rbac=rbac("true").rbac)
    outcome = evaluate(both, variables())
    assert [(s.policy, s.verdict) for s in outcome.steps] == [(str(LP), "allow"), (str(TP), "allow")]


def test_the_size_limit() -> None:
    limit = BodyLimit(LP, 10)
    assert size_verdict(limit, 10) is None and size_verdict(limit, None) is None and size_verdict(None, 10**9) is None
    too_large = size_verdict(limit, 11)
    assert too_large is not None and (too_large.reason, too_large.status_code) == ("body-too-large", 413)


def test_programs_compile_once_and_say_where_they_were_written() -> None:
    program = compile_program('request.body.model == "x"', "spec.rbac.policy.matchExpressions[3]")
    assert program.needs_body and program.path == "spec.rbac.policy.matchExpressions[3]"
    assert not compile_program('request.method == "GET"', "p").needs_body
    with pytest.raises(CelError, match="^CEL expression does not compile: Failed to parse expression 'request.path =='"):
        compile_program("request.path ==", "p")
    assert mentions_body("has(request.body)") and not mentions_body('request.headers["nobody"] == "x"')


def test_the_json_body() -> None:
    assert json_body(b'{"model": "m"}') == {"model": "m"}
    assert json_body(b"") is None and json_body(b"not json") is None and json_body(b"\xff\xfe") is None
    assert json_body(b"[" * 100_000 + b"]" * 100_000) is None  # too deep for the parser: no body, never a crash


@pytest.mark.parametrize(
    ("source", "reads"),
    [
        ('request.method == "DELETE"', {"request.method"}),
        ('request.headers["x-team"] == "a" && source.identity.namespace == "prod"', {"request.headers", "source.identity"}),
        ("request . path.startsWith('/v1') || request.host == 'h'", {"request.path", "request.host"}),
        ("true", set()),
        # anything else that names a root gets every variable: a macro over the map, an index, a word in a string
        ("request.exists(k, k == 'method')", ALL_VARIABLES),
        ("request['method'] == 'GET'", ALL_VARIABLES),
        ('request.headers["x-request-id"] == "1"', ALL_VARIABLES),
        ("source == {}", ALL_VARIABLES),
        ("request.nothing == 1", ALL_VARIABLES),
    ],
)
def test_a_program_reads_only_the_variables_it_names(source: str, reads: set[str]) -> None:
    assert compile_program(source, "p").reads == frozenset(reads)


def test_the_activation_holds_only_what_the_expressions_read_and_decides_the_same() -> None:
    policies = RequestPolicies(
        validation=validation(('request.method == "DELETE"', False)).validation,
        rbac=rbac('source.identity.namespace == "prod"').rbac,
    )
    assert policies.reads == {"request.method", "source.identity"}
    v = variables(method="DELETE")
    identity = {"namespace": "prod", "serviceAccount": "agent"}
    assert v.to_cel(policies.reads) == {"request": {"method": "DELETE"}, "source": {"identity": identity}}
    assert v.to_cel() == v.to_cel(ALL_VARIABLES) and set(v.to_cel()["request"]) == {"headers", "path", "method", "host", "body"}
    for source in ('request.method == "DELETE"', 'request.headers["x-team"] == "payments"', "source.address == '10.0.0.7'"):
        program = compile_program(source, "p")
        assert program.evaluate(v.to_cel(program.reads)) is program.evaluate(v.to_cel()) is True
    assert evaluate(policies, v).denial is not None
