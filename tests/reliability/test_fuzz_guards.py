"""Fuzzing the expression compilers (issue 14, item 8): any CEL source (egressproxy/cel_programs.py) and any
prompt-guard regex (egressproxy/pii_detectors.py, compiled by egressproxy/compiler/ai_policy_forms.py) becomes a
compiled program or a clean problem, never another exception; a compiled CEL program's evaluation is a bool or
`CelError`; a compiled regex guard masks and judges any text within its match timeout."""

from __future__ import annotations

import regex
from hypothesis import example, given, settings
from hypothesis import strategies as st

from egressproxy.config.kinds.gatewayapi import regex_error
from egressproxy.cel_programs import CelError, RequestVariables, compile_program
from egressproxy.pii_detectors import custom
from egressproxy.prompt_guard import RegexGuard

FUZZ = settings(max_examples=400, deadline=None)

_CEL_TOKENS = st.sampled_from([
    "request", ".", "headers", "path", "method", "host", "body", "source", "address", "identity", "[", "]", "(",
    ")", "{", "}", "'x-a'", '"GET"', "==", "!=", "&&", "||", "!", "?", ":", "in", "has", "size", "startsWith",
    "matches", "'^/v1'", "1", "0", "-1", "1.5", "true", "false", "null", "+", "*", "/", "%", ",", " ", "b'\\xff'",
    "'''", "\\", "\u00e9", "18446744073709551616", "1u", "int", "string", "dyn", "timestamp", "duration('1s')",
    "[1,2][5]", "{'a':1}['b']", "1/0", "'\\u", "\"",
])
CEL_SOURCES = st.one_of(st.lists(_CEL_TOKENS, max_size=14).map("".join), st.text(max_size=40))
VARIABLES = RequestVariables(
    headers={"x-a": "1", "authorization": "Bearer t"}, path="/v1/x?y=1", method="GET", host="api.example.test",
    source_address="10.0.0.1", namespace="ns", service_account="sa",
    body={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
)


@FUZZ
@given(CEL_SOURCES)
def test_any_cel_source_compiles_or_is_a_clean_problem_and_evaluates_to_a_bool_or_a_cel_error(source: str) -> None:
    try:
        program = compile_program(source, "spec.expr")
    except CelError as e:
        assert str(e).startswith("CEL expression does not compile")
        return
    try:
        result = program.evaluate(VARIABLES.to_cel())
    except CelError as e:
        assert "spec.expr" in str(e)
        return
    assert isinstance(result, bool)


_REGEX_TOKENS = st.sampled_from([
    "a", "\\d", "\\w", "\\s", ".", "*", "+", "?", "{2}", "{1,3}", "{,", "(", ")", "(?:", "(?=", "(?<=", "(?<!", "(?P<n>",
    "(?P=n)", "\\1", "[", "]", "[^", "-", "|", "^", "$", "\\b", "\\p{L}", "\\N{DIGIT ONE}", "(?i)", "(?x)", "(?V1)",
    "\\", "\u00e9", "[[:alpha:]]", "(?|a|b)", "(?>", "(?(1)a|b)", "\\X", "{", "}", "**", "(?#c)", "\\g<n>", "(?R)",
])
PATTERNS = st.one_of(st.lists(_REGEX_TOKENS, max_size=10).map("".join), st.text(max_size=24))
TEXTS = st.text(alphabet=st.sampled_from("ab1 4-@é\n"), max_size=60)


@FUZZ
@given(PATTERNS, st.one_of(st.none(), st.text(max_size=12)), TEXTS)
@example("(" * 3000 + "a" + ")" * 3000, None, "a")  # found while fuzzing: RecursionError, not regex.error
@example("(?:" * 3000 + "a" + ")" * 3000, "deep", "a")
# Found while fuzzing custom() alone: `regex` compiles a recursive pattern that then raises MemoryError on any
# text. The configuration cannot carry one: the schema checks every pattern with `re`, which has no recursion.
@example("(?R)", None, "")
@example("a(?0)?b", None, "aab")
def test_any_guard_pattern_compiles_or_is_a_problem_and_then_judges_any_text(
    pattern: str, name: str | None, text: str
) -> None:
    """The compiler's path: the schema's check (`re`, egressproxy/config/kinds/kgateway.py REGEX), then
    `custom()` (`regex`, whose refusal the compiler reports, egressproxy/compiler/ai_policy_forms.py)."""
    if regex_error(pattern) is not None:
        return  # a validation problem naming the field
    try:
        detector = custom(pattern, name)
    except regex.error:
        return  # a validation problem naming the field
    for action in ("MASK", "REJECT"):
        guard = RegexGuard(action, (detector,), "TrafficPolicy/ns/p")
        masked = guard.mask(text)
        assert isinstance(masked, str)
        assert guard.rejects(text) in (None, detector.name)
        assert 0 <= guard.open_from(text) <= len(text)
    assert detector.mask.startswith("<") and detector.mask.endswith(">") and len(detector.mask) > 2
